"""MCC against a loop-by-loop computation of the paper's five steps."""

from __future__ import annotations

import math

import pytest
import torch

from lt_transfer.losses import MCCLoss, mcc_loss


def _mcc_by_hand(logits: list[list[float]], temperature: float) -> float:
    batch, classes = len(logits), len(logits[0])
    probs = []
    for row in logits:  # 1. temperature-rescaled softmax
        exps = [math.exp(z / temperature) for z in row]
        probs.append([e / sum(exps) for e in exps])
    certainty = [1 + math.exp(sum(p * math.log(p) for p in row)) for row in probs]  # 2. 1 + e^{-H}
    weights = [batch * c / sum(certainty) for c in certainty]
    confusion = [  # 3. Ŷᵀ W Ŷ
        [sum(probs[i][j] * weights[i] * probs[i][k] for i in range(batch)) for k in range(classes)]
        for j in range(classes)
    ]
    column_sums = [sum(confusion[j][k] for j in range(classes)) for k in range(classes)]
    normalized = [[confusion[j][k] / column_sums[k] for k in range(classes)] for j in range(classes)]  # 4.
    return sum(normalized[j][k] for j in range(classes) for k in range(classes) if j != k) / classes  # 5.


def test_mcc_matches_the_steps_computed_by_hand() -> None:
    logits = [[2.0, 0.5, -1.0], [0.0, 0.0, 3.0], [1.0, 1.2, 0.9], [-2.0, 4.0, 0.0]]
    for temperature in (1.0, 2.5):
        value = mcc_loss(torch.tensor(logits), temperature)
        assert value.item() == pytest.approx(_mcc_by_hand(logits, temperature), rel=1e-5)


def test_mcc_two_class_case_worked_out() -> None:
    # T = 1: p1 = (0.5, 0.5), p2 = (0.75, 0.25); w ∝ 1 + e^{-H}: 1.5 and 1 + e^{-H(0.75, 0.25)}
    h2 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    c1, c2 = 1.5, 1 + math.exp(-h2)
    w1, w2 = 2 * c1 / (c1 + c2), 2 * c2 / (c1 + c2)
    c00 = w1 * 0.25 + w2 * 0.5625
    c01 = w1 * 0.25 + w2 * 0.1875  # = c10
    c11 = w1 * 0.25 + w2 * 0.0625
    expected = (c01 / (c00 + c01) + c01 / (c01 + c11)) / 2
    value = MCCLoss(temperature=1.0)(torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]))
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_mcc_bounds_gradient_and_underflow() -> None:
    assert mcc_loss(torch.tensor([[60.0, 0.0], [0.0, 60.0]]), 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert mcc_loss(torch.zeros(5, 4), 1.0).item() == pytest.approx(3 / 4)  # (C - 1) / C when uniform
    extreme = mcc_loss(torch.tensor([[500.0, 0.0, 0.0], [0.0, 500.0, 0.0]]), 1.0)  # class 2 underflows
    assert torch.isfinite(extreme) and extreme.item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(6, 4, requires_grad=True)
    mcc_loss(logits).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_mcc_bad_inputs() -> None:
    with pytest.raises(ValueError, match="temperature=0"):
        mcc_loss(torch.zeros(2, 3), temperature=0)
    with pytest.raises(ValueError, match="C >= 2 classes"):
        mcc_loss(torch.zeros(4, 1))
    with pytest.raises(ValueError, match="temperature=-1"):
        MCCLoss(temperature=-1.0)


def test_mcc_is_float32_under_autocast() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = mcc_loss(logits.bfloat16(), 2.5)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(_mcc_by_hand(logits.bfloat16().float().tolist(), 2.5), rel=1e-5)
