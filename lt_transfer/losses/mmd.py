"""Multi-kernel maximum mean discrepancy (MK-MMD) between source and target features.

The squared MMD between distributions :math:`P` (source) and :math:`Q` (target) in the
reproducing kernel Hilbert space of a kernel :math:`k` (Gretton et al., "A Kernel Two-Sample
Test", JMLR 2012) is

.. math::

    \\mathrm{MMD}^2 = \\mathbb{E}\\,k(x, x') + \\mathbb{E}\\,k(y, y') - 2\\,\\mathbb{E}\\,k(x, y).

DAN (Long et al., "Learning Transferable Features with Deep Adaptation Networks", ICML
2015) uses a multi-kernel: the mean of Gaussian kernels
:math:`k(a, b) = \\frac1M \\sum_m \\exp(-\\lVert a-b \\rVert^2 / (c_m \\sigma^2))` with
bandwidth multipliers :math:`c_m`. Here :math:`\\sigma^2` is the median heuristic: the
(lower) median of the pairwise squared distances of the pooled, *detached* features, or a
fixed ``bandwidth``. The bandwidths are therefore deterministic given the features (no
random draw per call) and receive no gradient.

Estimators (``m`` source rows, ``n`` target rows):

* ``"unbiased"`` (U-statistic, :math:`O((m+n)^2)`): diagonal terms excluded, needs
  ``m, n >= 2``; can be slightly negative when the domains match.
* ``"biased"`` (V-statistic): all terms, always ``>= 0``.
* ``"linear"`` (Gretton et al. 2012, Lemma 14, :math:`O(n)`): the mean over
  ``n // 2`` disjoint pairs of
  :math:`k(x_{2i}, x_{2i+1}) + k(y_{2i}, y_{2i+1}) - k(x_{2i}, y_{2i+1}) - k(x_{2i+1}, y_{2i})`;
  needs ``m == n >= 2``; its bandwidth is the median over those pairs' distances.

Features in half precision are promoted to float32 and the distance matmuls run with
autocast disabled, so the loss is computed in float32 under AMP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

__all__ = ["MMDEstimator", "MMDLoss", "median_bandwidth", "mmd_loss"]

MMDEstimator = Literal["unbiased", "biased", "linear"]

DEFAULT_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
_EPS = 1e-12


def _promote(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type=a.device.type, enabled=False):  # keep the matmul in float32
        aa = a.pow(2).sum(1, keepdim=True)
        bb = b.pow(2).sum(1, keepdim=True)
        return (aa + bb.T - 2.0 * a @ b.T).clamp_min(0.0)


def _robust_median(values: torch.Tensor) -> torch.Tensor:
    values = values.detach()
    median = values.median() if values.numel() else values.new_tensor(0.0)
    if median <= _EPS:  # many identical points: fall back to the mean, then to 1
        median = values.mean() if values.numel() else median
    if median <= _EPS:
        median = values.new_tensor(1.0)
    return median


def median_bandwidth(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Median heuristic: lower median of the pooled off-diagonal pairwise squared distances.

    Falls back to their mean, then to 1, when the median is 0 (identical points), so the
    kernel never divides by zero. The result is detached.

    Example:
        >>> median_bandwidth(torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0]]))
        tensor(4.)
    """
    pooled = _promote(torch.cat([source, target])).detach()
    d = _sq_dists(pooled, pooled)
    mask = ~torch.eye(len(pooled), dtype=torch.bool, device=pooled.device)
    return _robust_median(d[mask])


def _kernel(sq: torch.Tensor, sigma2: torch.Tensor, multipliers: Sequence[float]) -> torch.Tensor:
    return torch.stack([torch.exp(-sq / (m * sigma2)) for m in multipliers]).mean(0)


def _validate(
    source: torch.Tensor, target: torch.Tensor, estimator: str, multipliers: Sequence[float]
) -> None:
    if source.dim() != 2 or target.dim() != 2:
        raise ValueError(
            f"mmd_loss: expected 2-D (batch, features) tensors, got source {tuple(source.shape)} "
            f"and target {tuple(target.shape)}; flatten or pool the features first."
        )
    if source.shape[1] != target.shape[1]:
        raise ValueError(
            f"mmd_loss: source features have width {source.shape[1]} but target features have "
            f"width {target.shape[1]}; MMD compares features of the same extractor."
        )
    if estimator not in ("unbiased", "biased", "linear"):
        raise ValueError(f"mmd_loss(estimator={estimator!r}) must be 'unbiased', 'biased' or 'linear'.")
    if not multipliers or any(not m > 0 for m in multipliers):
        raise ValueError(f"mmd_loss(kernel_multipliers={tuple(multipliers)}) must be non-empty and all > 0.")
    m, n = len(source), len(target)
    if estimator == "linear":
        if m != n:
            raise ValueError(
                f"mmd_loss(estimator='linear') pairs source and target rows and needs equal batch "
                f"sizes, got {m} source and {n} target rows; use equal batch sizes (or truncate "
                "to the smaller one), or estimator='unbiased'."
            )
        if m < 2:
            raise ValueError("mmd_loss(estimator='linear') needs at least 2 rows per domain, got 1.")
    elif estimator == "unbiased" and (m < 2 or n < 2):
        raise ValueError(
            f"mmd_loss(estimator='unbiased') needs at least 2 rows per domain, got {m} source and "
            f"{n} target rows; use estimator='biased' for single samples or a larger batch."
        )
    elif m < 1 or n < 1:
        raise ValueError(f"mmd_loss: empty batch ({m} source, {n} target rows).")


def mmd_loss(
    source: torch.Tensor,
    target: torch.Tensor,
    kernel_multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    estimator: MMDEstimator = "unbiased",
    bandwidth: float | None = None,
    validate_args: bool = True,
) -> torch.Tensor:
    """Squared multi-kernel MMD between ``source (m, D)`` and ``target (n, D)`` features.

    Args:
        source: source features.
        target: target features (same width).
        kernel_multipliers: bandwidth multipliers :math:`c_m` of the Gaussian kernels.
        estimator: ``"unbiased"``, ``"biased"`` or ``"linear"`` (see the module docstring).
        bandwidth: fixed base bandwidth :math:`\\sigma^2`; ``None`` uses the median heuristic.
        validate_args: check shapes and sizes (turn off on hot paths once checked).

    Returns:
        A scalar tensor (float32 for half-precision inputs).

    Raises:
        ValueError: different feature widths, non-2-D inputs, too few rows for the
            estimator, unequal batch sizes with ``"linear"``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
        >>> bool(mmd_loss(x, y + 3) > 10 * mmd_loss(x, y).abs())
        True
    """
    if validate_args:
        _validate(source, target, estimator, kernel_multipliers)
    x, y = _promote(source), _promote(target)
    if bandwidth is not None and not bandwidth > 0:
        raise ValueError(f"mmd_loss(bandwidth={bandwidth!r}) must be > 0 or None (median heuristic).")
    if estimator == "linear":
        half = len(x) // 2
        x1, x2, y1, y2 = x[0 : 2 * half : 2], x[1 : 2 * half : 2], y[0 : 2 * half : 2], y[1 : 2 * half : 2]
        terms = [
            (x1 - x2).pow(2).sum(1),
            (y1 - y2).pow(2).sum(1),
            (x1 - y2).pow(2).sum(1),
            (x2 - y1).pow(2).sum(1),
        ]
        if bandwidth is None:
            sigma2 = _robust_median(torch.cat(terms))
        else:
            sigma2 = x.new_tensor(float(bandwidth))
        kxx, kyy, kxy, kyx = (_kernel(t, sigma2, kernel_multipliers) for t in terms)
        return (kxx + kyy - kxy - kyx).mean()
    sigma2 = median_bandwidth(x, y) if bandwidth is None else x.new_tensor(float(bandwidth))
    kxx = _kernel(_sq_dists(x, x), sigma2, kernel_multipliers)
    kyy = _kernel(_sq_dists(y, y), sigma2, kernel_multipliers)
    kxy = _kernel(_sq_dists(x, y), sigma2, kernel_multipliers)
    m, n = len(x), len(y)
    if estimator == "unbiased":
        xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
        yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    else:
        xx, yy = kxx.mean(), kyy.mean()
    return xx + yy - 2.0 * kxy.mean()


class MMDLoss(nn.Module):
    """Module form of :func:`mmd_loss` (multi-kernel MMD, Long et al. 2015).

    Args:
        kernel_multipliers: bandwidth multipliers of the Gaussian kernels.
        estimator: ``"unbiased"``, ``"biased"`` or ``"linear"``.
        bandwidth: fixed base bandwidth, or ``None`` for the median heuristic.
        validate_args: check inputs on every call.

    Example:
        >>> loss_fn = MMDLoss(estimator="linear")
        >>> loss_fn(torch.zeros(4, 3), torch.ones(4, 3)).item() > 0
        True
    """

    def __init__(
        self,
        kernel_multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
        estimator: MMDEstimator = "unbiased",
        bandwidth: float | None = None,
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        multipliers = tuple(float(m) for m in kernel_multipliers)
        if not multipliers or any(not m > 0 for m in multipliers):
            raise ValueError(f"MMDLoss(kernel_multipliers={multipliers}) must be non-empty and all > 0.")
        if estimator not in ("unbiased", "biased", "linear"):
            raise ValueError(f"MMDLoss(estimator={estimator!r}) must be 'unbiased', 'biased' or 'linear'.")
        if bandwidth is not None and not bandwidth > 0:
            raise ValueError(f"MMDLoss(bandwidth={bandwidth!r}) must be > 0 or None (median heuristic).")
        self.kernel_multipliers = multipliers
        self.estimator = estimator
        self.bandwidth = bandwidth
        self.validate_args = validate_args

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mmd_loss(
            source, target, self.kernel_multipliers, self.estimator, self.bandwidth, self.validate_args
        )

    def extra_repr(self) -> str:
        return f"estimator={self.estimator!r}, kernel_multipliers={self.kernel_multipliers}"
