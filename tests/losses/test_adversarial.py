"""Gradient reversal, the domain loss and the progress-derived coefficient schedules."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lt_transfer.losses.adversarial import (
    CoefficientSchedule,
    DomainAdversarialLoss,
    GradientReversal,
    dann_lr_factor,
    domain_accuracy,
    domain_adversarial_loss,
    domain_discriminator,
    grad_reverse,
    schedule_value,
    training_progress,
)


def _grads(coeff: float | None, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    head = nn.Linear(4, 1)
    x = torch.randn(5, 4, requires_grad=True)
    (head(x).pow(2).sum()).backward()
    plain = x.grad.clone()
    x.grad = None
    head(grad_reverse(x, coeff)).pow(2).sum().backward()
    return plain, x.grad


@pytest.mark.parametrize("coeff", [0.3, 1.0, 2.5])
def test_reversal_gradient_is_minus_coeff_times_plain(coeff: float) -> None:
    plain, reversed_ = _grads(coeff)
    torch.testing.assert_close(reversed_, -coeff * plain)


def test_zero_coefficient_blocks_feature_gradient_but_not_discriminator() -> None:
    disc = nn.Linear(4, 1)
    x = torch.randn(6, 4, requires_grad=True)
    disc(grad_reverse(x, 0.0)).sum().backward()
    assert torch.count_nonzero(x.grad) == 0
    assert torch.count_nonzero(disc.weight.grad) > 0


def test_reversal_forward_is_identity_backward_is_minus_coeff() -> None:
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.equal(grad_reverse(x, 0.7), x)
    y = grad_reverse(x, 0.7)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, torch.full_like(x, -0.7))


def test_reversal_sign_kept_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    head = nn.Linear(4, 1)
    x = torch.randn(5, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_out = head(x).float().sum()
    (plain,) = torch.autograd.grad(plain_out, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rev_out = head(GradientReversal()(x, 2.0)).float().sum()
    (rev,) = torch.autograd.grad(rev_out, x)
    torch.testing.assert_close(rev, -2.0 * plain)


def test_bad_coefficient_is_rejected() -> None:
    with pytest.raises(ValueError, match="coeff=-1"):
        grad_reverse(torch.zeros(1), -1)
    with pytest.raises(ValueError, match="coeff=nan"):
        GradientReversal(float("nan"))


def test_schedule_values_match_the_formula() -> None:
    for p in (0.0, 0.5, 1.0):
        assert schedule_value(p, "dann") == pytest.approx(2 / (1 + math.exp(-10 * p)) - 1)
        assert schedule_value(p, "dann", gamma=5.0, max_value=0.5) == pytest.approx(
            0.5 * (2 / (1 + math.exp(-5 * p)) - 1)
        )
        assert schedule_value(p, "constant", max_value=0.3) == 0.3
    assert [schedule_value(p, "linear", warmup=0.5) for p in (0.0, 0.25, 0.5, 1.0)] == [0.0, 0.5, 1.0, 1.0]
    assert dann_lr_factor(0.5) == pytest.approx(1 / 6**0.75)
    with pytest.raises(ValueError, match="progress=1.5"):
        schedule_value(1.5)


def test_progress_from_trainer_state_and_unbounded_error() -> None:
    trainer = SimpleNamespace(global_step=30, estimated_stepping_batches=120, current_epoch=2, max_epochs=8)
    assert training_progress(trainer, "step") == 0.25
    assert training_progress(trainer, "epoch") == 0.25
    unbounded = SimpleNamespace(global_step=3, estimated_stepping_batches=float("inf"), max_epochs=-1)
    with pytest.raises(ValueError, match="bounded training length"):
        training_progress(unbounded, "step")
    with pytest.raises(ValueError, match="max_epochs=-1"):
        training_progress(unbounded, "epoch")
    assert CoefficientSchedule("constant", max_value=0.2)(unbounded) == 0.2
    with pytest.raises(ValueError, match="warmup=0"):
        CoefficientSchedule("linear", warmup=0)


def test_domain_loss_and_accuracy() -> None:
    s, t = torch.tensor([3.0, -1.0]), torch.tensor([-2.0])
    expected = 0.5 * (
        (math.log1p(math.exp(-3.0)) + math.log1p(math.exp(1.0))) / 2 + math.log1p(math.exp(-2.0))
    )
    assert domain_adversarial_loss(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert domain_accuracy(s, t).item() == pytest.approx(0.75)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_fn = DomainAdversarialLoss(domain_discriminator(4, hidden=8, depth=1))
        loss = loss_fn(torch.randn(6, 4), torch.randn(3, 4), coeff=1.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_domain_loss_rejects_different_widths() -> None:
    loss_fn = DomainAdversarialLoss(domain_discriminator(4, hidden=8, depth=1))
    with pytest.raises(ValueError, match="width 4 but target features have width 5"):
        loss_fn(torch.randn(3, 4), torch.randn(3, 5))
