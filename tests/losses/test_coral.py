"""CORAL against a hand computation."""

from __future__ import annotations

import pytest
import torch

from lt_transfer.losses.coral import CORALLoss, coral_loss, covariance


def test_coral_matches_hand_computation() -> None:
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0], [2.0, 4.0]])
    y = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    # hand: x mean (2, 2); centred rows (-1,-2), (1,0), (0,2) -> C_s = [[2, 2], [2, 8]] / 2 = [[1, 1], [1, 4]]
    #       y mean (0, 0); C_t = [[0, 0], [0, 2]]
    # ||C_s - C_t||_F^2 = 1 + 1 + 1 + 4 = 7; / (4 * 2^2) = 7 / 16
    torch.testing.assert_close(covariance(x), torch.tensor([[1.0, 1.0], [1.0, 4.0]]))
    assert coral_loss(x, y).item() == pytest.approx(7 / 16)
    assert CORALLoss()(x, x).item() == pytest.approx(0.0)
    assert coral_loss(x, y).item() == pytest.approx(coral_loss(y, x).item())


def test_coral_bad_inputs() -> None:
    with pytest.raises(ValueError, match="width 2 but target features have width 3"):
        coral_loss(torch.randn(4, 2), torch.randn(4, 3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        coral_loss(torch.randn(1, 2), torch.randn(4, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = coral_loss(torch.randn(8, 3).bfloat16(), torch.randn(8, 3).bfloat16())
    assert value.dtype == torch.float32 and torch.isfinite(value)
