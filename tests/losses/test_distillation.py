"""Tests for lt_transfer/losses/distillation.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lt_transfer.losses import (
    DistillationLoss,
    HintLoss,
    KDLoss,
    distillation_loss,
    distillation_terms,
    hint_loss,
    kd_loss,
)


def _logits(n: int = 16, c: int = 10, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed)) * scale


def test_kl_of_identical_distributions_is_zero() -> None:
    logits = _logits()
    for temperature in (1.0, 4.0, 20.0):
        assert float(kd_loss(logits, logits, temperature)) == pytest.approx(0.0, abs=1e-6)
        assert float(kd_loss(logits, logits + 5.0, temperature)) == pytest.approx(0.0, abs=1e-4)  # shift


def test_kd_matches_batchmean_kl_times_t_squared() -> None:
    student, teacher, temperature = _logits(seed=1), _logits(seed=2), 3.0
    expected = (
        F.kl_div(
            F.log_softmax(student / temperature, -1),
            F.softmax(teacher / temperature, -1),
            reduction="batchmean",
        )
        * temperature**2
    )
    assert torch.allclose(kd_loss(student, teacher, temperature), expected, atol=1e-6)
    per_sample = kd_loss(student, teacher, temperature, reduction="none")
    assert per_sample.shape == (16,) and torch.all(per_sample >= 0)
    assert torch.allclose(per_sample.mean(), expected, atol=1e-6)
    assert torch.allclose(kd_loss(student, teacher, temperature, reduction="sum"), per_sample.sum())
    # 'mean' (which would also divide by the class count) is refused, not silently used
    with pytest.raises(ValueError, match="batchmean"):
        kd_loss(student, teacher, reduction="mean")  # type: ignore[arg-type]


def test_soft_gradient_does_not_shrink_with_temperature() -> None:
    """With the T^2 factor the gradient w.r.t. student logits is ~constant at high T."""
    teacher = _logits(seed=3)
    teacher = teacher - teacher.mean(-1, keepdim=True)
    base = _logits(seed=4)
    base = base - base.mean(-1, keepdim=True)
    norms = {}
    for temperature in (5.0, 10.0, 20.0, 40.0):
        student = base.clone().requires_grad_(True)
        kd_loss(student, teacher, temperature).backward()
        norms[temperature] = float(student.grad.norm())
    assert norms[40.0] / norms[5.0] == pytest.approx(1.0, rel=0.1)
    assert norms[20.0] / norms[10.0] == pytest.approx(1.0, rel=0.05)
    # without the T^2 factor the ratio would be (10/20)^2 = 0.25; make sure we are far from it
    assert norms[20.0] / norms[10.0] > 0.9


def test_teacher_receives_no_gradient() -> None:
    student = _logits(seed=5).requires_grad_(True)
    teacher = _logits(seed=6).requires_grad_(True)
    kd_loss(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None


def test_alpha_limits_are_hard_only_and_soft_only() -> None:
    student, teacher = _logits(seed=7), _logits(seed=8)
    target = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(0))
    hard = F.cross_entropy(student, target)
    soft = kd_loss(student, teacher, 4.0)
    assert torch.allclose(distillation_loss(student, teacher, target, alpha=1.0), hard)
    assert torch.allclose(distillation_loss(student, teacher, target, alpha=0.0), soft)
    mixed = distillation_loss(student, teacher, target, alpha=0.3, temperature=4.0)
    assert torch.allclose(mixed, 0.3 * hard + 0.7 * soft)
    assert torch.allclose(DistillationLoss(alpha=0.3)(student, teacher, target), mixed)


def test_unlabelled_samples_feed_only_the_soft_term() -> None:
    student, teacher = _logits(seed=9), _logits(seed=10)
    target = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(1))
    target[8:] = -1
    terms = distillation_terms(student, teacher, target, alpha=0.5)
    assert terms.num_labelled == 8
    assert torch.allclose(terms.hard, F.cross_entropy(student[:8], target[:8]))
    assert torch.allclose(terms.soft, kd_loss(student, teacher))  # over all 16 samples
    # label-free batch: soft term only, same weight (1 - alpha)
    for no_labels in (None, torch.full((16,), -1)):
        terms = distillation_terms(student, teacher, no_labels, alpha=0.25)
        assert terms.num_labelled == 0 and float(terms.hard) == 0.0
        assert torch.allclose(terms.total, 0.75 * kd_loss(student, teacher))
    with pytest.raises(ValueError, match="no labelled sample"):
        distillation_loss(student, teacher, None, alpha=1.0)


def test_argument_validation_names_the_argument() -> None:
    student, teacher = _logits(), _logits(c=5)
    with pytest.raises(ValueError, match="class_mapping"):
        kd_loss(student, teacher)
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        DistillationLoss(alpha=1.5)
    with pytest.raises(ValueError, match="reduction"):
        KDLoss(reduction="mean")  # type: ignore[arg-type]


def test_half_precision_inputs_are_computed_in_float32() -> None:
    student, teacher = _logits(seed=11), _logits(seed=12)
    reference = kd_loss(student, teacher, 2.0)
    value = kd_loss(student.bfloat16(), teacher.bfloat16(), 2.0)
    assert value.dtype == torch.float32
    assert float(value) == pytest.approx(float(reference), rel=0.05)


def test_hint_loss_projection_learns_to_match_teacher_features() -> None:
    torch.manual_seed(0)
    student_features = torch.randn(16, 3, 2, 2)
    # teacher features are a linear function of the student features: a perfect regressor exists
    mixing = torch.randn(3, 6)
    teacher_features = torch.einsum("nchw,cd->ndhw", student_features, mixing)
    loss = HintLoss(student_width=3, teacher_width=6)
    assert isinstance(loss.projection, torch.nn.Linear)
    optimizer = torch.optim.Adam(loss.parameters(), lr=0.1)
    first = float(loss(student_features, teacher_features).detach())
    for _ in range(80):
        optimizer.zero_grad()
        value = loss(student_features, teacher_features)
        value.backward()
        optimizer.step()
    assert float(value.detach()) < 0.01 * first
    # vectors work too; equal widths need no projection
    assert isinstance(HintLoss(5, 5).projection, torch.nn.Identity)
    assert float(hint_loss(torch.ones(2, 5), torch.ones(2, 5))) == 0.0
    with pytest.raises(ValueError, match="widths differ"):
        hint_loss(torch.ones(2, 5), torch.ones(2, 4))
    with pytest.raises(ValueError, match="spatial"):
        hint_loss(torch.ones(2, 4, 3, 3), torch.ones(2, 4, 2, 2))
    with pytest.raises(ValueError, match="student_width=3"):
        loss(torch.randn(2, 4, 4, 4), teacher_features[:2])
