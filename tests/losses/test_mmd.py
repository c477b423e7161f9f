"""Multi-kernel MMD against a naive O(n^2) reference, and its bad inputs."""

from __future__ import annotations

import itertools

import pytest
import torch

from lt_transfer.losses.mmd import MMDLoss, median_bandwidth, mmd_loss

MULTS = (0.5, 1.0, 2.0)


def _k(a: torch.Tensor, b: torch.Tensor, sigma2: float) -> float:
    d = float(((a - b) ** 2).sum())
    return sum(float(torch.exp(torch.tensor(-d / (m * sigma2), dtype=torch.float64))) for m in MULTS) / len(
        MULTS
    )


def _naive(x: torch.Tensor, y: torch.Tensor, sigma2: float, estimator: str) -> float:
    m, n = len(x), len(y)
    if estimator == "linear":
        total = 0.0
        for i in range(m // 2):
            x1, x2, y1, y2 = x[2 * i], x[2 * i + 1], y[2 * i], y[2 * i + 1]
            total += _k(x1, x2, sigma2) + _k(y1, y2, sigma2) - _k(x1, y2, sigma2) - _k(x2, y1, sigma2)
        return total / (m // 2)
    skip = estimator == "unbiased"
    xx = [_k(x[i], x[j], sigma2) for i, j in itertools.product(range(m), range(m)) if not (skip and i == j)]
    yy = [_k(y[i], y[j], sigma2) for i, j in itertools.product(range(n), range(n)) if not (skip and i == j)]
    xy = [_k(x[i], y[j], sigma2) for i, j in itertools.product(range(m), range(n))]
    return sum(xx) / len(xx) + sum(yy) / len(yy) - 2 * sum(xy) / len(xy)


@pytest.mark.parametrize("estimator", ["unbiased", "biased", "linear"])
def test_matches_naive_reference(estimator: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = torch.randn(8 if estimator == "linear" else 6, 3, generator=g, dtype=torch.float64) + 0.5
    got = mmd_loss(x, y, MULTS, estimator, bandwidth=2.0).item()
    assert got == pytest.approx(_naive(x, y, 2.0, estimator), abs=1e-5)


def test_median_heuristic_is_deterministic_and_correct() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = (
        torch.randn(5, 2, generator=g, dtype=torch.float64),
        torch.randn(4, 2, generator=g, dtype=torch.float64),
    )
    pooled = torch.cat([x, y])
    dists = [float(((pooled[i] - pooled[j]) ** 2).sum()) for i in range(9) for j in range(9) if i != j]
    lower_median = sorted(dists)[(len(dists) - 1) // 2]
    assert median_bandwidth(x, y).item() == pytest.approx(lower_median)
    expected = _naive(x, y, lower_median, "unbiased")
    assert mmd_loss(x, y, MULTS).item() == pytest.approx(expected, abs=1e-5)
    assert mmd_loss(x, y, MULTS).item() == mmd_loss(x, y, MULTS).item()


def test_zero_on_same_sample_symmetric_and_shift_scores_higher() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(64, 4, generator=g), torch.randn(64, 4, generator=g)
    assert mmd_loss(x, x, estimator="biased").abs().item() < 1e-6
    assert mmd_loss(x, x, estimator="linear").abs().item() < 1e-6
    torch.testing.assert_close(mmd_loss(x, y), mmd_loss(y, x))
    for estimator in ("unbiased", "biased", "linear"):
        assert mmd_loss(x, y + 1.0, estimator=estimator) > mmd_loss(x, y, estimator=estimator) + 0.05


@pytest.mark.parametrize("estimator", ["unbiased", "biased", "linear"])
def test_the_median_bandwidth_receives_no_gradient(estimator: str) -> None:
    """The gradient of the loss with the median-heuristic bandwidth equals its gradient with that
    bandwidth passed as a fixed number (the naive reference's constant sigma², checked in float64):
    the bandwidth is data-dependent but no gradient flows through it (tried: with the bandwidth's
    ``detach`` removed the gradients differ far beyond the float64 tolerance of 1e-10)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = (torch.randn(8, 3, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    sigma2 = float(median_bandwidth(x, y)) if estimator != "linear" else None
    loss = mmd_loss(x, y, MULTS, estimator)
    grads = torch.autograd.grad(loss, (x, y))
    if sigma2 is None:  # the linear estimator's bandwidth: the median over its pairs' distances
        pairs = torch.cat([x[0::2] - x[1::2], y[0::2] - y[1::2], x[0::2] - y[1::2], x[1::2] - y[0::2]])
        sigma2 = float(pairs.detach().pow(2).sum(1).median())
    fixed = mmd_loss(x, y, MULTS, estimator, bandwidth=sigma2)
    torch.testing.assert_close(loss, fixed, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, torch.autograd.grad(fixed, (x, y)), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_bad_inputs_raise_or_stay_finite() -> None:
    with pytest.raises(ValueError, match="width 3 but target features have width 4"):
        mmd_loss(torch.randn(4, 3), torch.randn(4, 4))
    with pytest.raises(ValueError, match="equal batch sizes, got 4 source and 6 target"):
        mmd_loss(torch.randn(4, 3), torch.randn(6, 3), estimator="linear")
    with pytest.raises(ValueError, match="at least 2 rows per domain"):
        mmd_loss(torch.randn(1, 3), torch.randn(5, 3))
    assert torch.isfinite(mmd_loss(torch.randn(1, 3), torch.randn(1, 3), estimator="biased"))
    same = torch.ones(6, 3)
    for estimator in ("unbiased", "biased", "linear"):
        value = mmd_loss(same, same.clone(), estimator=estimator)
        assert torch.isfinite(value) and abs(value.item()) < 1e-6
    apart = mmd_loss(torch.zeros(4, 2), torch.ones(4, 2))  # identical within each domain
    assert torch.isfinite(apart) and apart.item() > 0
    with pytest.raises(ValueError, match="kernel_multipliers"):
        MMDLoss(kernel_multipliers=())


def test_gradients_finite_under_bf16_autocast() -> None:
    x = torch.randn(16, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = torch.nn.functional.linear(x, torch.eye(8))
        loss = MMDLoss()(feats[:8], feats[8:] + 1)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(x.grad).all()
