"""Forecasting windows: (input window, next ``horizon`` values) cut from many series, scaled per series.

A *window* ends at a forecast origin ``t`` of a series ``y``: its input is
``y[t - window : t]`` (left-padded with its first value when fewer than ``window`` values exist)
and its target is ``y[t : t + horizon]``. :func:`cut_windows` cuts them at given origins and
scales each by one of:

* ``"window"``: divide input and target by the mean absolute value of the input's real values
  (the scaling of DeepAR, Salinas et al. 2020; level-free, so one model fits series of any size);
* ``"series"``: subtract the mean and divide by the standard deviation of the series' training
  part (given by the caller, so no held-out value leaks into the scaling);
* ``"none"``.

:class:`ForecastWindows` keeps what is needed to undo the scaling (``loc``, ``scale``: the
original value is ``scaled * scale + loc``) and each window's MASE denominator (the history
before its origin, :func:`lt_transfer.metrics.forecasting.mase_scale`). As a data set it yields
dict batches with documented keys (the batch contract reads ``x``, ``y`` and ``index``;
:class:`~lt_transfer.TransferForecaster` reads the rest): ``x`` ``(1, window)``, ``y``
``(horizon,)`` (absent for future windows), ``index``, ``series``, ``loc``, ``scale``,
``mase_scale``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from lt_transfer.metrics.forecasting import mase_scale

__all__ = ["FORECAST_BATCH_KEYS", "ForecastWindows", "Scaling", "cut_windows"]

#: How windows are scaled (see the module docstring).
Scaling = Literal["window", "series", "none"]
#: The keys of a forecasting batch besides the input ``x`` and target ``y``.
FORECAST_BATCH_KEYS = ("index", "series", "loc", "scale", "mase_scale")


@dataclass(frozen=True, eq=False)
class ForecastWindows(Dataset):
    """Scaled forecasting windows; a map-style data set of dict samples (keys above).

    Attributes:
        x: scaled inputs ``(N, 1, window)``.
        y: scaled targets ``(N, horizon)``, or ``None`` for future windows (nothing to compare).
        series: the series each window comes from ``(N,)``.
        loc: added after scaling back ``(N,)``.
        scale: multiplied after scaling back ``(N,)``.
        mase_scale: MASE denominator of the history before each window's origin ``(N,)``
            (NaN when undefined).

    Example:
        >>> windows = cut_windows([np.arange(1.0, 9.0)], [[5, 6]], window=3, horizon=2)
        >>> len(windows), windows[0]["x"].tolist(), windows[0]["y"].tolist()
        (2, [[0.75, 1.0, 1.25]], [1.5, 1.75])
        >>> windows.unscale(windows.y)[1].tolist()
        [7.0, 8.0]
    """

    x: torch.Tensor
    y: torch.Tensor | None
    series: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor
    mase_scale: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = {
            "x": self.x[index],
            "index": torch.tensor(index),
            "series": self.series[index],
            "loc": self.loc[index],
            "scale": self.scale[index],
            "mase_scale": self.mase_scale[index],
        }
        if self.y is not None:
            sample["y"] = self.y[index]
        return sample

    def unscale(self, values: torch.Tensor) -> torch.Tensor:
        """Scaled values ``(N, ...)`` of these windows back in the series' units."""
        shape = (-1,) + (1,) * (values.ndim - 1)
        return values * self.scale.view(shape) + self.loc.view(shape)


def _window_scale(inputs: np.ndarray) -> tuple[float, float]:
    level = float(np.abs(inputs).mean())
    return 0.0, level if level > 0 else 1.0


def cut_windows(
    series: Sequence[np.ndarray],
    origins: Sequence[Sequence[int]],
    window: int,
    horizon: int,
    scaling: Scaling = "window",
    series_stats: Sequence[tuple[float, float]] | None = None,
    seasonality: int = 1,
    with_target: bool = True,
) -> ForecastWindows:
    """Cut and scale the windows of every series at the given forecast origins.

    Args:
        series: the series (1-D, without NaN).
        origins: for each series, the origins ``t`` (each ``1 <= t``, and ``t + horizon <=
            len`` when ``with_target``).
        window: input length (shorter inputs are left-padded with their first value).
        horizon: target length.
        scaling: ``"window"``, ``"series"`` or ``"none"`` (see the module docstring).
        series_stats: ``(mean, std)`` of each series' training part, for ``"series"``.
        seasonality: the seasonal period of the MASE denominators.
        with_target: ``False`` for future windows (no target).

    Raises:
        ValueError: an origin outside the series, ``"series"`` scaling without statistics.

    Example:
        >>> windows = cut_windows([np.array([2.0, 4.0, 6.0])], [[1]], window=2, horizon=2, scaling="none")
        >>> windows.x.tolist(), windows.y.tolist(), windows.mase_scale.tolist()
        ([[[2.0, 2.0]]], [[4.0, 6.0]], [nan])
    """
    if scaling == "series" and series_stats is None:
        raise ValueError("cut_windows(scaling='series') needs series_stats (mean, std) of every series.")
    inputs, targets, rows = [], [], []
    for number, (values, starts) in enumerate(zip(series, origins, strict=True)):
        for origin in starts:
            if origin < 1 or (with_target and origin + horizon > len(values)) or origin > len(values):
                raise ValueError(
                    f"cut_windows: origin {origin} of series {number} (length {len(values)}) leaves no input "
                    f"or no {horizon} target values."
                )
            past = values[max(0, origin - window) : origin]
            if scaling == "window":
                loc, scale = _window_scale(past)
            elif scaling == "series":
                assert series_stats is not None
                loc, scale = series_stats[number]
            else:
                loc, scale = 0.0, 1.0
            padded = np.concatenate([np.full(window - len(past), past[0]), past])
            inputs.append((padded - loc) / scale)
            if with_target:
                targets.append((values[origin : origin + horizon] - loc) / scale)
            rows.append((number, loc, scale, mase_scale(values[:origin], seasonality)))
    if not rows:
        raise ValueError("cut_windows: no window to cut (no origins given).")
    number, loc, scale, denominators = (np.array(column) for column in zip(*rows, strict=True))

    def tensor(values: np.ndarray | list) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values, dtype=np.float32))

    return ForecastWindows(
        tensor(inputs).unsqueeze(1),
        tensor(targets) if with_target else None,
        torch.as_tensor(number, dtype=torch.long),
        tensor(loc),
        tensor(scale),
        tensor(denominators),
    )
