"""BSS against singular values worked out by hand (eigenvalues of FᵀF)."""

from __future__ import annotations

import pytest
import torch

from lt_transfer.losses import BSSLoss, bss_loss


def test_bss_matches_hand_computation() -> None:
    features = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, 1.0]])
    # FᵀF = [[5, 2], [2, 2]]: eigenvalues (7 ± √(9 + 16)) / 2 = 6 and 1 = the squared singular values
    assert bss_loss(features, k=1, eta=1.0).item() == pytest.approx(1.0, rel=1e-5)
    assert bss_loss(features).item() == pytest.approx(0.001, rel=1e-5)  # the paper's eta, k
    diagonal = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert BSSLoss(k=2, eta=0.5)(diagonal).item() == pytest.approx(0.5 * (4 + 1), rel=1e-5)


def test_bss_gradient_shrinks_the_smallest_direction_only() -> None:
    features = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    features.requires_grad_(True)
    bss_loss(features, k=1, eta=1.0).backward()
    # d(σ_min²)/dF = 2 σ_min u vᵀ: here 2 at entry (2, 2), zero elsewhere
    expected = torch.zeros(4, 3)
    expected[2, 2] = 2.0
    torch.testing.assert_close(features.grad, expected)


def test_bss_refuses_k_at_least_the_batch_size() -> None:
    with pytest.raises(ValueError, match=r"k=4\) must be smaller than the number of singular values"):
        bss_loss(torch.randn(4, 16), k=4)
    with pytest.raises(ValueError, match="k=0"):
        bss_loss(torch.randn(4, 16), k=0)
    with pytest.raises(ValueError, match=r"\(N, D\) batch features"):
        bss_loss(torch.randn(4, 16, 2, 2))
    with pytest.raises(ValueError, match="eta=-1"):
        BSSLoss(eta=-1.0)


def test_bss_is_float32_under_autocast() -> None:
    features = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, 1.0]]).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = bss_loss(features, eta=1.0)
    assert value.dtype == torch.float32 and value.item() == pytest.approx(1.0, rel=1e-5)
