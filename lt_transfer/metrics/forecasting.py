"""Forecast accuracy: MASE (scaled by the in-sample seasonal-naive error) and sMAPE in percent.

* MASE (Hyndman & Koehler, "Another look at measures of forecast accuracy", IJF 2006), as in
  the M4 competition: for one series with history :math:`y_1..y_n`, seasonal period :math:`m`
  and forecasts :math:`\\hat y_{n+1..n+h}`,

  .. math::
      \\mathrm{MASE} = \\frac{\\frac{1}{h}\\sum_{j=1}^{h} |y_{n+j} - \\hat y_{n+j}|}
      {\\frac{1}{n-m}\\sum_{t=m+1}^{n} |y_t - y_{t-m}|}

  and the score of many series is the mean of their MASEs. The denominator
  (:func:`mase_scale`) is computed from the history alone; a series whose history has no
  seasonal difference (``n <= m``) or only zero ones has no MASE and is left out (NaN scale).
  MASE is unchanged by an affine per-series scaling of the data.
* sMAPE of the M3/M4 competitions, in percent (0 to 200):
  :math:`\\frac{200}{h}\\sum_j |y_j - \\hat y_j| / (|y_j| + |\\hat y_j|)`. It is torchmetrics'
  :class:`~torchmetrics.regression.SymmetricMeanAbsolutePercentageError` × 100
  (:class:`SMAPE`, :func:`smape`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.functional.regression import symmetric_mean_absolute_percentage_error
from torchmetrics.regression import SymmetricMeanAbsolutePercentageError

__all__ = ["SMAPE", "MeanAbsoluteScaledError", "mase", "mase_scale", "smape"]


def mase_scale(history: np.ndarray | torch.Tensor, seasonality: int = 1) -> float:
    """The MASE denominator of one series: the mean absolute seasonal difference of its history.

    Returns NaN when it is undefined or zero (``len(history) <= seasonality``, or a history
    that repeats itself exactly); such series are left out of :func:`mase`.

    Example:
        >>> mase_scale(np.array([1.0, 3.0, 2.0, 6.0])), mase_scale(np.array([1.0, 3.0, 2.0, 6.0]), 2)
        (2.3333333333333335, 2.0)
        >>> mase_scale(np.array([5.0]))
        nan
    """
    if isinstance(seasonality, bool) or not isinstance(seasonality, int) or seasonality < 1:
        raise ValueError(f"mase_scale(seasonality={seasonality!r}) must be an int >= 1 (1: non-seasonal).")
    values = np.asarray(history, dtype=np.float64).reshape(-1)
    if len(values) <= seasonality:
        return float("nan")
    scale = float(np.abs(values[seasonality:] - values[:-seasonality]).mean())
    return scale if scale > 0 else float("nan")


def _per_series(preds: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    if preds.shape != target.shape or preds.ndim != 2:
        raise ValueError(
            f"MASE: preds {tuple(preds.shape)} and target {tuple(target.shape)} must both be "
            "(series, horizon)."
        )
    if scale.shape != (preds.shape[0],):
        raise ValueError(
            f"MASE: scale {tuple(scale.shape)} must hold one value per series ({preds.shape[0]})."
        )
    return (preds - target).abs().mean(dim=1) / scale


def mase(preds: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean over series of the MASE; series with a NaN, infinite or zero ``scale`` are left out.

    Args:
        preds: forecasts ``(series, horizon)``.
        target: actual values ``(series, horizon)``.
        scale: :func:`mase_scale` of each series' history ``(series,)``.

    Returns:
        A scalar tensor (NaN when no series has a valid scale).

    Example:
        >>> preds = torch.tensor([[2.0, 2.0], [10.0, 10.0]])
        >>> target = torch.tensor([[3.0, 4.0], [10.0, 12.0]])
        >>> mase(preds, target, torch.tensor([1.0, 2.0]))  # (1.5 / 1 + 1 / 2) / 2
        tensor(1.)
    """
    values = _per_series(preds.double(), target.double(), scale.double())
    valid = torch.isfinite(values) & (scale > 0)
    return values[valid].mean().float() if bool(valid.any()) else torch.tensor(float("nan"))


class MeanAbsoluteScaledError(Metric):
    """:func:`mase` accumulated over batches (and, under DDP, over ranks): the mean of per-series MASEs.

    ``update(preds, target, scale)`` with ``(series, horizon)`` forecasts and targets and one
    :func:`mase_scale` per series; series whose scale is NaN, infinite or zero are left out.

    Example:
        >>> metric = MeanAbsoluteScaledError()
        >>> metric.update(torch.tensor([[2.0, 2.0]]), torch.tensor([[3.0, 4.0]]), torch.tensor([1.0]))
        >>> metric.update(torch.tensor([[10.0, 10.0]]), torch.tensor([[10.0, 12.0]]), torch.tensor([2.0]))
        >>> metric.compute()
        tensor(1.)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> None:
        values = _per_series(preds.double(), target.double(), scale.double())
        valid = torch.isfinite(values) & (scale > 0)
        self.total += values[valid].sum()
        self.count += valid.sum()

    def compute(self) -> torch.Tensor:
        if int(self.count) == 0:
            return torch.tensor(float("nan"))
        return (self.total / self.count).float()


class SMAPE(SymmetricMeanAbsolutePercentageError):
    """sMAPE in percent (0 to 200), the M3/M4 definition: torchmetrics' value × 100.

    Example:
        >>> metric = SMAPE()
        >>> metric(torch.tensor([90.0, 110.0]), torch.tensor([100.0, 100.0]))
        tensor(10.0251)
    """

    def compute(self) -> torch.Tensor:
        return super().compute() * 100


def smape(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sMAPE in percent (0 to 200): ``200 / n * sum |y - ŷ| / (|y| + |ŷ|)``.

    Example:
        >>> smape(torch.tensor([90.0, 110.0]), torch.tensor([100.0, 100.0]))  # (10/190 + 10/210) * 100
        tensor(10.0251)
    """
    return symmetric_mean_absolute_percentage_error(preds, target) * 100
