"""CDAN(+E): the multilinear maps, the entropy weights and the conditional domain loss by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lt_transfer.losses import (
    CDANLoss,
    cdan_input_width,
    cdan_loss,
    cdan_randomized_dim,
    domain_adversarial_loss,
    domain_discriminator,
    entropy_weights,
    multilinear_map,
    randomized_multilinear_map,
)

LOG3 = math.log(3.0)


def _entropy(p: list[float]) -> float:
    return -sum(x * math.log(x) for x in p)


def _discriminator() -> nn.Linear:
    linear = nn.Linear(4, 1)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, -1.0, 0.5, 0.0]]))
        linear.bias.fill_(0.1)
    return linear


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    source_features = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    target_features = torch.tensor([[1.0, 1.0]])
    source_logits = torch.tensor([[0.0, 0.0], [LOG3, 0.0]])  # g = (0.5, 0.5), (0.75, 0.25)
    target_logits = torch.tensor([[0.0, LOG3]])  # g = (0.25, 0.75)
    return source_features, target_features, source_logits, target_logits


def test_multilinear_maps_match_hand_computation() -> None:
    f, g = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.2, 0.8]])
    torch.testing.assert_close(multilinear_map(f, g), torch.tensor([[0.2, 0.8, 0.4, 1.6, 0.6, 2.4]]))
    r_f = torch.tensor([[1.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # R_f f = (4, -2)
    r_g = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # R_g g = (1, 1.6)
    expected = torch.tensor([[4.0 * 1.0, -2.0 * 1.6]]) / math.sqrt(2)
    torch.testing.assert_close(randomized_multilinear_map(f, g, r_f, r_g), expected)


def test_randomized_map_preserves_inner_products_in_expectation() -> None:
    gen = torch.Generator().manual_seed(0)
    f, g = torch.randn(2, 5, generator=gen), torch.randn(2, 3, generator=gen).softmax(1)
    d = 200_000
    r_f, r_g = torch.randn(d, 5, generator=gen), torch.randn(d, 3, generator=gen)
    mapped = randomized_multilinear_map(f, g, r_f, r_g)
    exact = (f[0] @ f[1]) * (g[0] @ g[1])  # <f⊗g, f'⊗g'> = <f, f'> <g, g'>
    assert (mapped[0] @ mapped[1]).item() == pytest.approx(exact.item(), abs=0.05)
    torch.testing.assert_close(multilinear_map(f, g)[0] @ multilinear_map(f, g)[1], exact)


def test_entropy_weights_match_hand_computation() -> None:
    w1 = 1 + math.exp(-math.log(2))  # uniform prediction: 1.5
    w2 = 1 + math.exp(-_entropy([0.75, 0.25]))
    weights = entropy_weights(torch.tensor([[0.0, 0.0], [LOG3, 0.0]]))
    assert weights.tolist() == pytest.approx([w1 / (w1 + w2), w2 / (w1 + w2)], rel=1e-6)


@pytest.mark.parametrize("entropy_conditioning", [False, True])
def test_cdan_loss_matches_hand_computation(entropy_conditioning: bool) -> None:
    # conditional inputs f ⊗ g: (1,0)⊗(.5,.5) = (.5,.5,0,0); (0,2)⊗(.75,.25) = (0,0,1.5,.5);
    # (1,1)⊗(.25,.75) = (.25,.75,.25,.75). Discriminator w = (1,-1,.5,0), b = .1:
    d_source = [0.5 - 0.5 + 0.1, 0.75 + 0.1]
    d_target = 0.25 - 0.75 + 0.125 + 0.1

    def bce(x: float, label: int) -> float:
        return math.log1p(math.exp(-x)) if label == 1 else math.log1p(math.exp(x))

    if entropy_conditioning:
        w = [1 + math.exp(-math.log(2)), 1 + math.exp(-_entropy([0.75, 0.25]))]
        source = sum(wi * bce(x, 1) for wi, x in zip(w, d_source, strict=True)) / sum(w)
    else:
        source = sum(bce(x, 1) for x in d_source) / 2
    expected = 0.5 * (source + bce(d_target, 0))
    value = cdan_loss(_discriminator(), *_batch(), entropy_conditioning=entropy_conditioning)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_without_conditioning_weights_it_is_the_dann_loss_of_the_conditional_input() -> None:
    source_features, target_features, source_logits, target_logits = _batch()
    disc = _discriminator()
    d_s = disc(multilinear_map(source_features, source_logits.softmax(1))).squeeze(1)
    d_t = disc(multilinear_map(target_features, target_logits.softmax(1))).squeeze(1)
    value = cdan_loss(disc, *_batch(), entropy_conditioning=False)
    torch.testing.assert_close(value, domain_adversarial_loss(d_s, d_t))


def test_reversed_gradient_reaches_features_not_predictions() -> None:
    source_features, target_features, source_logits, target_logits = _batch()
    disc = _discriminator()
    plain_features = source_features.clone().requires_grad_(True)
    weights = entropy_weights(source_logits)
    d_s = disc(multilinear_map(plain_features, source_logits.softmax(1))).squeeze(1)
    d_t = disc(multilinear_map(target_features, target_logits.softmax(1))).squeeze(1)
    plain = 0.5 * (
        F.binary_cross_entropy_with_logits(d_s, torch.ones(2), weights, reduction="sum")
        + F.binary_cross_entropy_with_logits(d_t, torch.zeros(1))
    )
    plain.backward()
    features = source_features.clone().requires_grad_(True)
    logits = source_logits.clone().requires_grad_(True)
    cdan_loss(disc, features, target_features, logits, target_logits, coeff=0.3).backward()
    torch.testing.assert_close(features.grad, -0.3 * plain_features.grad)
    assert logits.grad is None  # the predictions only condition the discriminator


def test_discriminator_width_must_match_features_times_classes_or_randomized_dim() -> None:
    with pytest.raises(ValueError, match="takes 10 inputs, but the conditional input is features × classes"):
        CDANLoss(domain_discriminator(10), num_features=4, num_classes=3)
    with pytest.raises(ValueError, match="the randomised dimension = 16 wide"):
        CDANLoss(domain_discriminator(12), num_features=4, num_classes=3, randomized_dim=16)
    with pytest.raises(ValueError, match=r"domain_discriminator\(4\)"):
        cdan_loss(domain_discriminator(5), *_batch())
    with pytest.raises(ValueError, match="same class count"):
        features = torch.zeros(2, 2), torch.zeros(1, 2)
        cdan_loss(_discriminator(), *features, torch.zeros(2, 2), torch.zeros(1, 3))
    assert cdan_input_width(4, 3) == 12 and cdan_input_width(4, 3, 16) == 16
    assert cdan_randomized_dim(64, 64) is None and cdan_randomized_dim(65, 64) == 1024


def test_randomized_module_keeps_fixed_seeded_matrices_in_its_state() -> None:
    first = CDANLoss(domain_discriminator(32, hidden=8), 100, 10, randomized_dim=32, seed=3)
    second = CDANLoss(domain_discriminator(32, hidden=8), 100, 10, randomized_dim=32, seed=3)
    assert torch.equal(first.random_features, second.random_features)  # every DDP process draws the same
    assert first.random_features.shape == (32, 100) and first.random_predictions.shape == (32, 10)
    other = CDANLoss(domain_discriminator(32, hidden=8), 100, 10, randomized_dim=32, seed=4)
    other.load_state_dict(first.state_dict())
    assert torch.equal(other.random_predictions, first.random_predictions)
    full = CDANLoss(domain_discriminator(40, hidden=8), 4, 10)
    assert not any(key.startswith("random") for key in full.state_dict())
    fs = torch.randn(3, 100, requires_grad=True)
    first(fs, torch.randn(5, 100), torch.randn(3, 10), torch.randn(5, 10), coeff=1.0).backward()
    assert fs.grad is not None and torch.isfinite(fs.grad).all()


def test_cdan_is_float32_under_autocast() -> None:
    source_features, target_features, source_logits, target_logits = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = cdan_loss(
            _discriminator(),
            source_features.bfloat16(),
            target_features.bfloat16(),
            source_logits.bfloat16(),
            target_logits.bfloat16(),
        )
        mapped = randomized_multilinear_map(
            torch.ones(2, 3).bfloat16(), torch.ones(2, 2).bfloat16(), torch.ones(4, 3), torch.ones(4, 2)
        )
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert mapped.dtype == torch.float32
