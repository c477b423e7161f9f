"""Reference forecasts that learned forecasters are measured against: naive, seasonal naive, drift.

Each takes one series' history (1-D) and returns the next ``horizon`` values:

* :func:`naive_forecast`: the last value, repeated (the random walk);
* :func:`seasonal_naive_forecast`: the value one season earlier (the last ``seasonality``
  values, repeated); identical to the naive forecast for ``seasonality=1`` (yearly data);
* :func:`drift_forecast`: the last value plus the average change of the history per step
  (the random walk with drift: a line through the first and last values).

The MASE of :mod:`lt_transfer.metrics.forecasting` divides by the in-sample error of the
seasonal naive forecast, so its one-step in-sample MASE is 1 by construction.
"""

from __future__ import annotations

import numpy as np

__all__ = ["drift_forecast", "naive_forecast", "seasonal_naive_forecast"]


def _history(history: np.ndarray, horizon: int, caller: str) -> np.ndarray:
    values = np.asarray(history, dtype=np.float64).reshape(-1)
    if not len(values):
        raise ValueError(f"{caller}: the history is empty; a forecast needs at least one value.")
    if np.isnan(values).any():
        raise ValueError(f"{caller}: the history holds NaN; fill it first (fill='interpolate').")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"{caller}(horizon={horizon!r}) must be an int >= 1.")
    return values


def naive_forecast(history: np.ndarray, horizon: int) -> np.ndarray:
    """The last value of ``history``, ``horizon`` times.

    Example:
        >>> naive_forecast(np.array([1.0, 2.0, 5.0]), 3).tolist()
        [5.0, 5.0, 5.0]
    """
    values = _history(history, horizon, "naive_forecast")
    return np.full(horizon, values[-1])


def seasonal_naive_forecast(history: np.ndarray, horizon: int, seasonality: int = 1) -> np.ndarray:
    """The value one season earlier: the last ``seasonality`` values of ``history``, repeated.

    Raises:
        ValueError: a history shorter than one season (use :func:`naive_forecast`).

    Example:
        >>> seasonal_naive_forecast(np.array([1.0, 2.0, 3.0, 4.0]), 5, seasonality=2).tolist()
        [3.0, 4.0, 3.0, 4.0, 3.0]
    """
    values = _history(history, horizon, "seasonal_naive_forecast")
    if isinstance(seasonality, bool) or not isinstance(seasonality, int) or seasonality < 1:
        raise ValueError(f"seasonal_naive_forecast(seasonality={seasonality!r}) must be an int >= 1.")
    if len(values) < seasonality:
        raise ValueError(
            f"seasonal_naive_forecast: a history of {len(values)} values is shorter than one season "
            f"(seasonality={seasonality}); use naive_forecast."
        )
    season = values[-seasonality:]
    return np.resize(season, horizon)


def drift_forecast(history: np.ndarray, horizon: int) -> np.ndarray:
    """The last value plus ``step * (last - first) / (n - 1)`` for steps 1..horizon (flat for n = 1).

    Example:
        >>> drift_forecast(np.array([1.0, 2.0, 5.0]), 2).tolist()
        [7.0, 9.0]
    """
    values = _history(history, horizon, "drift_forecast")
    slope = (values[-1] - values[0]) / (len(values) - 1) if len(values) > 1 else 0.0
    return values[-1] + slope * np.arange(1, horizon + 1)
