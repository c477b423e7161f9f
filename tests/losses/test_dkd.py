"""DKD against a hand computation and the paper's identity KD = TCKD + (1 - p_t) NCKD."""

from __future__ import annotations

import math

import pytest
import torch

from lt_transfer.losses import DKDLoss, dkd_loss, dkd_terms, kd_loss


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_dkd_matches_hand_computation() -> None:
    temperature = 2.0
    student_p, teacher_p = [0.5, 0.3, 0.2], [0.7, 0.2, 0.1]
    # logits T·log p give softmax(z / T) = p exactly
    student = temperature * torch.tensor([student_p]).log()
    teacher = temperature * torch.tensor([teacher_p]).log()
    # target 0: b_T = (0.7, 0.3), b_S = (0.5, 0.5); non-target p̂_T = (2/3, 1/3), p̂_S = (0.6, 0.4)
    tckd = _kl([0.7, 0.3], [0.5, 0.5]) * temperature**2
    nckd = _kl([2 / 3, 1 / 3], [0.6, 0.4]) * temperature**2
    terms = dkd_terms(student, teacher, torch.tensor([0]), alpha=1.0, beta=8.0, temperature=temperature)
    assert terms.tckd.item() == pytest.approx(tckd, rel=1e-5)
    assert terms.nckd.item() == pytest.approx(nckd, rel=1e-5)
    assert terms.total.item() == pytest.approx(tckd + 8 * nckd, rel=1e-5)
    # target 2: b_T = (0.1, 0.9), b_S = (0.2, 0.8); p̂_T = (0.7, 0.2) / 0.9, p̂_S = (0.5, 0.3) / 0.8
    value = dkd_loss(student, teacher, torch.tensor([2]), alpha=0.5, beta=2.0, temperature=temperature)
    expected = 0.5 * _kl([0.1, 0.9], [0.2, 0.8]) + 2.0 * _kl([0.7 / 0.9, 0.2 / 0.9], [0.5 / 0.8, 0.3 / 0.8])
    assert value.item() == pytest.approx(expected * temperature**2, rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_decomposes_into_tckd_and_weighted_nckd(temperature: float) -> None:
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 5, generator=gen) * 3, torch.randn(6, 5, generator=gen) * 3
    target = torch.randint(0, 5, (6,), generator=gen)
    terms = dkd_terms(student, teacher, target, temperature=temperature, reduction="none")
    p_t = (teacher / temperature).softmax(1)[torch.arange(6), target]
    kd = kd_loss(student, teacher, temperature, reduction="none")
    torch.testing.assert_close(terms.tckd + (1 - p_t) * terms.nckd, kd, atol=1e-5, rtol=1e-5)
    total = dkd_loss(student, teacher, target, temperature=temperature, reduction="sum")
    torch.testing.assert_close(total, (terms.tckd + 8 * terms.nckd).sum())


def test_unlabelled_examples_use_the_teachers_class() -> None:
    gen = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    predicted = teacher.argmax(1)
    explicit = dkd_loss(student, teacher, predicted)
    torch.testing.assert_close(dkd_loss(student, teacher, None), explicit)
    torch.testing.assert_close(dkd_loss(student, teacher, torch.full((4,), -1)), explicit)
    mixed = torch.tensor([predicted[0].item(), -1, predicted[2].item(), -1])
    torch.testing.assert_close(DKDLoss()(student, teacher, mixed), explicit)


def test_dkd_gradient_and_two_classes() -> None:
    student = torch.randn(3, 2, requires_grad=True)
    teacher = torch.randn(3, 2, requires_grad=True)
    terms = dkd_terms(student, teacher, torch.tensor([0, 1, 0]))
    assert terms.nckd.item() == 0.0  # one non-target class: its distribution is always (1,)
    terms.total.backward()
    assert student.grad is not None and teacher.grad is None


def test_dkd_bad_inputs() -> None:
    with pytest.raises(ValueError, match="needs num_classes >= 2"):
        dkd_loss(torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="same C"):
        dkd_loss(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        dkd_loss(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="beta=-1"):
        DKDLoss(beta=-1.0)
    with pytest.raises(ValueError, match="temperature=0"):
        dkd_loss(torch.zeros(2, 4), torch.zeros(2, 4), temperature=0)


def test_dkd_is_float32_under_autocast() -> None:
    student, teacher = torch.randn(4, 6), torch.randn(4, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = dkd_loss(student.bfloat16(), teacher.bfloat16(), torch.tensor([0, 1, 2, 3]))
    assert value.dtype == torch.float32 and torch.isfinite(value)
