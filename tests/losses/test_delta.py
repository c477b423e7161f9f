"""DELTA's feature-map distance and channel attention against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lt_transfer.losses import DELTALoss, delta_channel_attention, delta_loss


def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    current = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]]], [[[1.0, 0.0]], [[0.0, 0.0]]]])
    pretrained = torch.tensor([[[[1.0, 1.0]], [[2.0, 0.0]]], [[[0.0, 0.0]], [[0.0, 3.0]]]])
    return current, pretrained


def test_delta_matches_hand_computation() -> None:
    current, pretrained = _maps()
    # per-example squared distances summed over positions, channel by channel:
    #   example 1: channel 0 = 1 + 1 = 2, channel 1 = 4;  example 2: channel 0 = 1, channel 1 = 9
    # weights (0.75, 0.25): (0.75·2 + 0.25·4 + 0.75·1 + 0.25·9) / 2 = (2.5 + 3) / 2 = 2.75
    assert delta_loss(current, pretrained, torch.tensor([0.75, 0.25])).item() == pytest.approx(2.75)
    # uniform 1/2: (3 + 5) / 2 = 4
    assert delta_loss(current, pretrained).item() == pytest.approx(4.0)
    assert DELTALoss(num_channels=2)(current, pretrained).item() == pytest.approx(4.0)


def test_delta_gradient_reaches_only_the_trained_maps() -> None:
    current, pretrained = _maps()
    current.requires_grad_(True)
    pretrained.requires_grad_(True)
    weights = torch.tensor([0.75, 0.25])
    delta_loss(current, pretrained, weights).backward()
    expected = 2 * weights.view(1, 2, 1, 1) * (current.detach() - pretrained.detach()) / 2  # / N
    torch.testing.assert_close(current.grad, expected)
    assert pretrained.grad is None


def test_channel_attention_is_the_softmax_of_the_loss_increase() -> None:
    maps = torch.tensor([[[[2.0]], [[1.0]]]])  # one example, channels valued 2 and 1

    def head(x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))  # logits = channel values (identity linear head)

    weights = delta_channel_attention(maps, torch.tensor([0]), head)
    # hand: CE with logits (2, 1) and target 0 is log(1 + e^-1);
    #       zeroing channel 0 gives logits (0, 1): log(1 + e); zeroing channel 1: (2, 0): log(1 + e^-2)
    base = math.log1p(math.exp(-1))
    increases = [math.log1p(math.e) - base, math.log1p(math.exp(-2)) - base]
    expected = [math.exp(d) / sum(math.exp(x) for x in increases) for d in increases]
    assert weights.tolist() == pytest.approx(expected, rel=1e-5)
    assert increases[0] == pytest.approx(1.0)  # log(1 + e) - log(1 + e^-1) = 1
    loss_fn = DELTALoss(num_channels=2)
    loss_fn.set_channel_weights(weights)
    restored = DELTALoss(num_channels=2)
    restored.load_state_dict(loss_fn.state_dict())  # the attention is computed once and kept
    assert torch.equal(restored.channel_weights, weights)


def test_delta_needs_spatial_maps_and_matching_shapes() -> None:
    with pytest.raises(ValueError, match=r"no spatial map; DELTA needs the \(N, C, H, W\) feature maps"):
        delta_loss(torch.randn(4, 8), torch.randn(4, 8))
    with pytest.raises(ValueError, match="no spatial map"):
        delta_channel_attention(torch.randn(4, 8), torch.zeros(4, dtype=torch.long), nn.Identity())
    with pytest.raises(ValueError, match="same shape"):
        delta_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 2))
    with pytest.raises(ValueError, match=r"must be \(3,\)"):
        delta_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.ones(2))
    with pytest.raises(ValueError, match="non-negative"):
        DELTALoss(2).set_channel_weights(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="num_channels=0"):
        DELTALoss(0)


def test_delta_is_float32_under_autocast() -> None:
    current, pretrained = _maps()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = delta_loss(current.bfloat16(), pretrained.bfloat16())
    assert value.dtype == torch.float32 and value.item() == pytest.approx(4.0)
