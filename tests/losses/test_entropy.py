"""Entropy minimisation (TENT) and information maximisation (SHOT) losses by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lt_transfer.losses import (
    EntropyLoss,
    InformationMaximizationLoss,
    entropy_loss,
    information_maximization_loss,
)
from lt_transfer.metrics import information_maximization, prediction_entropy

LOG3 = math.log(3.0)
H_QUARTER = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # entropy of (0.75, 0.25)


def test_entropy_matches_hand_computation() -> None:
    logits = torch.tensor([[0.0, 0.0], [LOG3, 0.0]])  # (0.5, 0.5) and (0.75, 0.25)
    assert entropy_loss(logits, "none").tolist() == pytest.approx([math.log(2.0), H_QUARTER], rel=1e-6)
    assert entropy_loss(logits).item() == pytest.approx((math.log(2.0) + H_QUARTER) / 2, rel=1e-6)
    assert EntropyLoss("sum")(logits).item() == pytest.approx(math.log(2.0) + H_QUARTER, rel=1e-6)
    torch.testing.assert_close(entropy_loss(logits), prediction_entropy(logits))  # the metric's value


def test_entropy_gradient_is_finite_for_confident_predictions() -> None:
    logits = torch.tensor([[200.0, -200.0], [0.0, 0.0]], requires_grad=True)
    entropy_loss(logits).backward()
    assert torch.isfinite(logits.grad).all()
    # dH/dz for the uniform row is 0 (a maximum); for the saturated row the gradient vanishes too
    torch.testing.assert_close(logits.grad, torch.zeros(2, 2))


def test_information_maximization_matches_hand_computation() -> None:
    logits = torch.tensor([[LOG3, 0.0], [0.0, LOG3]])  # (0.75, 0.25), (0.25, 0.75): marginal (0.5, 0.5)
    value = information_maximization_loss(logits, diversity_weight=0.5)
    assert value.item() == pytest.approx(H_QUARTER - 0.5 * math.log(2.0), rel=1e-6)
    # with SHOT's weight 1 it is the negative of the metric
    torch.testing.assert_close(InformationMaximizationLoss()(logits), -information_maximization(logits))
    logits.requires_grad_(True)
    information_maximization_loss(logits).backward()
    assert logits.grad.abs().sum() > 0  # unlike the metric, differentiable


def test_entropy_losses_bad_inputs_and_precision() -> None:
    with pytest.raises(ValueError, match="C >= 2 classes"):
        entropy_loss(torch.zeros(3))
    with pytest.raises(ValueError, match="reduction='batchmean'"):
        EntropyLoss("batchmean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="diversity_weight=-1"):
        InformationMaximizationLoss(diversity_weight=-1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = entropy_loss(torch.zeros(2, 4).bfloat16()), information_maximization_loss(torch.zeros(2, 4))
    assert all(v.dtype == torch.float32 for v in values)
    assert values[0].item() == pytest.approx(math.log(4.0))
