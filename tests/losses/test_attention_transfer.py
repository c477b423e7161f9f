"""Attention transfer against a hand computation; spatial maps required, channels free."""

from __future__ import annotations

import math

import pytest
import torch

from lt_transfer.losses import AttentionTransferLoss, attention_map, attention_transfer_loss


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    # sums of squares over channels, 2 positions each:
    # example 1: student channels (1, 0), (0, 1) -> (1, 1); teacher, one channel (2, 0) -> (4, 0)
    # example 2: student channels (√3, 2), (0, 0) -> (3, 4); teacher (2, √3) -> (4, 3)
    root3 = math.sqrt(3.0)
    student = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]], [[[root3, 2.0]], [[0.0, 0.0]]]])  # (2, 2, 1, 2)
    teacher = torch.tensor([[[[2.0, 0.0]]], [[[2.0, root3]]]])  # (2, 1, 1, 2): fewer channels is fine
    return student, teacher


def test_attention_transfer_matches_hand_computation() -> None:
    student, teacher = _pair()
    # normalised maps: example 1 (1, 1)/√2 vs (1, 0): squared distance (1 - 1/√2)² + 1/2 = 2 - √2
    #                  example 2 (0.6, 0.8) vs (0.8, 0.6): 0.04 + 0.04 = 0.08
    # mean over N·H·W = 4 positions, times beta / 2
    expected = 1000 / 2 * (2 - math.sqrt(2) + 0.08) / 4
    assert attention_transfer_loss(student, teacher).item() == pytest.approx(expected, rel=1e-5)
    assert AttentionTransferLoss(beta=2.0)(student, teacher).item() == pytest.approx(expected / 500, rel=1e-5)
    torch.testing.assert_close(attention_map(student), torch.tensor([[2**-0.5, 2**-0.5], [0.6, 0.8]]))
    # p = 1: sums of |A| instead of squares
    p1 = attention_map(teacher, p=1.0)
    torch.testing.assert_close(p1[1], torch.tensor([2.0, math.sqrt(3.0)]) / math.sqrt(7.0))


def test_only_the_student_receives_gradient() -> None:
    student, teacher = _pair()
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    attention_transfer_loss(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None


def test_spatial_maps_required_and_sizes_must_match_unless_interpolated() -> None:
    with pytest.raises(ValueError, match=r"no spatial map; attention transfer needs \(N, C, H, W\)"):
        attention_transfer_loss(torch.randn(4, 8), torch.randn(4, 8, 2, 2))
    with pytest.raises(ValueError, match=r"spatial sizes differ, student \(4, 4\) vs teacher \(2, 2\)"):
        attention_transfer_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2))
    with pytest.raises(ValueError, match="same batch size"):
        attention_transfer_loss(torch.randn(2, 3, 4, 4), torch.randn(3, 3, 4, 4))
    with pytest.raises(ValueError, match="p=0"):
        AttentionTransferLoss(p=0)
    # interpolate: a constant student attention resized to the teacher's size stays constant
    value = attention_transfer_loss(torch.ones(2, 3, 2, 2), torch.ones(2, 7, 4, 4), interpolate=True)
    assert value.item() == pytest.approx(0.0, abs=1e-6)
    assert AttentionTransferLoss(interpolate=True)(torch.randn(2, 3, 5, 5), torch.randn(2, 4, 3, 3)).ndim == 0


def test_attention_transfer_is_float32_under_autocast() -> None:
    student, teacher = _pair()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = attention_transfer_loss(student.bfloat16(), teacher.bfloat16())
    assert value.dtype == torch.float32 and torch.isfinite(value)
