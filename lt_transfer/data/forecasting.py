"""ForecastingDataModule: windows over many series for one global forecaster, with held-out horizons.

Batches are dicts (see :mod:`lt_transfer.data.forecast_windows`): ``x`` ``(N, 1, window)``
scaled inputs, ``y`` ``(N, horizon)`` scaled targets, ``index``, and ``series``, ``loc``,
``scale``, ``mase_scale`` so that forecasts can be scaled back and scored (MASE, sMAPE) in the
series' own units.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from lightning.pytorch import LightningDataModule

from lt_transfer.data._split_loaders import SplitLoaders
from lt_transfer.data.aeon_data import FORECASTING_SETS, load_forecasting
from lt_transfer.data.forecast_windows import ForecastWindows, Scaling, cut_windows
from lt_transfer.data.ts_formats import SeriesCollection, read_series_csv, read_tsf
from lt_transfer.data.ts_preprocessing import FillPolicy, fill_missing

__all__ = ["SEASONALITY", "ForecastingDataModule", "Holdout", "read_series_collection"]

#: Seasonal period by frequency, as in the M4 competition (weekly and daily data: 1).
SEASONALITY: dict[str, int] = {
    "yearly": 1,
    "quarterly": 4,
    "monthly": 12,
    "weekly": 1,
    "daily": 1,
    "hourly": 24,
    "half_hourly": 48,
}
#: Which horizons at the end of every series are held out.
Holdout = Literal["val_test", "test", "none"]
_NAME = "ForecastingDataModule"


def read_series_collection(
    series: str | os.PathLike[str] | SeriesCollection | Sequence[Sequence[float]],
    columns: Sequence[str] | None = None,
) -> SeriesCollection:
    """Series from an aeon name (:data:`~lt_transfer.data.aeon_data.FORECASTING_SETS`), a ``.tsf`` /
    ``.csv`` file, a :class:`SeriesCollection` or a list of 1-D sequences.

    Raises:
        ValueError: a string that is neither a shipped name nor an existing file (the names are
            listed), a sequence entry that is not 1-D.

    Example:
        >>> read_series_collection([[1, 2, 3], [4.0, 5.0]]).lengths
        [3, 2]
    """
    if isinstance(series, SeriesCollection):
        return series
    if isinstance(series, (str, os.PathLike)):
        if str(series) in FORECASTING_SETS:
            return load_forecasting(str(series))
        path = Path(series)
        if not path.is_file():
            raise ValueError(
                f"{_NAME}(series={str(series)!r}): neither data aeon ships ({sorted(FORECASTING_SETS)}) nor "
                "an existing .tsf/.csv file."
            )
        return read_tsf(path) if path.suffix.lower() == ".tsf" else read_series_csv(path, columns)
    values = []
    for number, item in enumerate(series):
        array = np.asarray(item, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"{_NAME}: series {number} has shape {array.shape}; each series must be 1-D.")
        values.append(array)
    return SeriesCollection(tuple(values), tuple(f"series{i}" for i in range(len(values))))


class ForecastingDataModule(SplitLoaders, LightningDataModule):
    """Forecasting windows over many series (global training) with the last horizons held out.

    Every series ``y`` is cut at forecast origins into (input window, next ``horizon`` values)
    pairs (:mod:`lt_transfer.data.forecast_windows`). With ``holdout="val_test"`` the last
    ``horizon`` values of each series are its test target, the ``horizon`` before them its
    validation target, and training windows lie entirely before both; ``"test"`` holds out only
    the test target; ``"none"`` trains on everything (pretraining on source series). Each split
    has one window per series (origin right before its target); ``predict`` forecasts the
    ``horizon`` values after each series' end. Without a validation split (``holdout`` other
    than ``"val_test"``) ``val_dataloader`` returns ``[]``, so Lightning skips validation.

    Short history: inputs shorter than ``window`` are left-padded with their first value, and
    a training window needs ``min_context`` real input values. ``max_history`` keeps only the
    last values of each series' history (a new product, a new sensor). A series whose history
    (before the held-out horizons) is shorter than ``min_context + horizon`` has no training
    window: an error naming it, or dropped with ``short_series="drop"``.

    Scaling (``scaling``): ``"window"`` divides each window by the mean absolute value of its
    input (level-free: one model for series of any size), ``"series"`` standardises each series
    by its training part. Metrics are computed in the series' units (the batch carries ``loc``
    and ``scale``); MASE uses ``seasonality`` (default: from the data's frequency, 1 if unknown).

    Args:
        series: an aeon name (``"m1_yearly"``, ``"airline"``, ``"lynx"``, ``"shampoo_sales"``,
            ``"solar"``), a ``.tsf`` or ``.csv`` file (one series per numeric column), a
            :class:`SeriesCollection`, or a list of 1-D sequences.
        horizon: values to forecast; ``None``: the horizon the ``.tsf`` file declares.
        window: input length.
        holdout: ``"val_test"``, ``"test"`` or ``"none"`` (see above).
        series_ids: positions of the series to use (e.g. a held-out part); ``None``: all.
        scaling: ``"window"``, ``"series"`` or ``"none"``.
        seasonality: seasonal period for MASE; ``None``: from the frequency.
        max_history: keep at most this many values of each series before its test horizon.
        min_context: real input values a training window needs (>= 1).
        fill: NaN policy: ``None`` (error naming the series), a number or ``"interpolate"``.
        short_series: ``"error"`` or ``"drop"`` for series too short to train on.
        columns: the series columns of a CSV file (default: every numeric column).
        batch_size: batch size of every loader.
        num_workers: DataLoader workers.

    Raises:
        ValueError: bad arguments, no horizon, a short series, NaN without ``fill`` (named).

    Example:
        >>> dm = ForecastingDataModule("m1_yearly", window=8, holdout="test", series_ids=list(range(10)),
        ...                            batch_size=32)
        >>> dm.horizon, dm.seasonality, dm.num_series
        (6, 1, 10)
        >>> dm.setup("fit")
        >>> batch = next(iter(dm.train_dataloader()))
        >>> tuple(batch["x"].shape), tuple(batch["y"].shape), len(dm.test_set), dm.val_set
        ((32, 1, 8), (32, 6), 10, None)
    """

    def __init__(
        self,
        series: str | SeriesCollection | list[list[float]] = "m1_yearly",
        horizon: int | None = None,
        window: int = 12,
        holdout: Holdout = "val_test",
        series_ids: list[int] | None = None,
        scaling: Scaling = "window",
        seasonality: int | None = None,
        max_history: int | None = None,
        min_context: int = 1,
        fill: FillPolicy = None,
        short_series: Literal["error", "drop"] = "error",
        columns: list[str] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        # A horizon taken from the file stays out of the hyper-parameters: loggers merge them with the
        # model's, and None would clash with the model's horizon. Series objects are no plain values.
        ignored = ([] if isinstance(series, str) else ["series"]) + (["horizon"] if horizon is None else [])
        self.save_hyperparameters(ignore=ignored)
        collection = read_series_collection(series, columns)
        for argument, value in (("window", window), ("min_context", min_context), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{_NAME}({argument}={value!r}) must be an int >= 1.")
        if holdout not in ("val_test", "test", "none"):
            raise ValueError(f"{_NAME}(holdout={holdout!r}) must be 'val_test', 'test' or 'none'.")
        if scaling not in ("window", "series", "none"):
            raise ValueError(f"{_NAME}(scaling={scaling!r}) must be 'window', 'series' or 'none'.")
        if short_series not in ("error", "drop"):
            raise ValueError(f"{_NAME}(short_series={short_series!r}) must be 'error' or 'drop'.")
        if max_history is not None and max_history < 1:
            raise ValueError(f"{_NAME}(max_history={max_history}) must be >= 1 or None.")
        self.horizon: int = self._resolve_horizon(horizon, collection)
        self.window = window
        self.seasonality: int = self._resolve_seasonality(seasonality, collection)
        if series_ids is not None:
            bad = [i for i in series_ids if not 0 <= i < len(collection)]
            if bad:
                raise ValueError(f"{_NAME}(series_ids=...): {bad[:5]} are not in [0, {len(collection)}).")
        ids = list(range(len(collection))) if series_ids is None else list(series_ids)
        names = [collection.names[i] for i in ids]
        values = fill_missing([collection.values[i] for i in ids], fill, _NAME, names)
        self._held_out = {"val_test": 2, "test": 1, "none": 0}[holdout] * self.horizon
        self.series_names, self.values = self._usable(names, [self._truncate(v) for v in values])
        self.train_set: ForecastWindows | None = None
        self.val_set: ForecastWindows | None = None
        self.test_set: ForecastWindows | None = None
        self.predict_set: ForecastWindows | None = None

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _resolve_horizon(horizon: int | None, collection: SeriesCollection) -> int:
        horizon = collection.horizon if horizon is None else horizon
        if horizon is None:
            raise ValueError(f"{_NAME}: the data declares no horizon; pass horizon=<values to forecast>.")
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"{_NAME}(horizon={horizon!r}) must be an int >= 1.")
        return horizon

    @staticmethod
    def _resolve_seasonality(seasonality: int | None, collection: SeriesCollection) -> int:
        if seasonality is None:
            return SEASONALITY.get((collection.frequency or "").lower(), 1)
        if isinstance(seasonality, bool) or not isinstance(seasonality, int) or seasonality < 1:
            raise ValueError(f"{_NAME}(seasonality={seasonality!r}) must be an int >= 1 or None.")
        return seasonality

    def _truncate(self, values: np.ndarray) -> np.ndarray:
        limit = self.hparams.max_history
        if limit is None:
            return values
        test = self.horizon if self.hparams.holdout != "none" else 0
        history, future = values[: len(values) - test], values[len(values) - test :]
        return np.concatenate([history[-limit:], future])

    def _usable(self, names: list[str], values: list[np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
        need = self._held_out + self.hparams.min_context + self.horizon
        short = [(name, len(v)) for name, v in zip(names, values, strict=True) if len(v) < need]
        if short and self.hparams.short_series == "error":
            raise ValueError(
                f"{_NAME}: {len(short)} series are too short for horizon={self.horizon} (e.g. {short[:3]} "
                f"as (name, length)): a training window needs min_context={self.hparams.min_context} values "
                f"before its horizon, after the {self._held_out} held-out values (holdout="
                f"{self.hparams.holdout!r}), i.e. {need} values. Lower horizon, use holdout='test'/'none', "
                "or short_series='drop'."
            )
        kept = [(name, v) for name, v in zip(names, values, strict=True) if len(v) >= need]
        if not kept:
            raise ValueError(f"{_NAME}: every series is too short (each needs {need} values); see above.")
        return [name for name, _ in kept], [v for _, v in kept]

    @property
    def num_series(self) -> int:
        """Number of series in use."""
        return len(self.values)

    def _origins(self, split: str) -> list[list[int]]:
        cut_end = [len(v) - self._held_out for v in self.values]
        if split == "train":
            low = self.hparams.min_context
            return [list(range(low, end - self.horizon + 1)) for end in cut_end]
        if split == "val":
            return [[end] for end in cut_end]
        if split == "test":
            return [[len(v) - self.horizon] for v in self.values]
        return [[len(v)] for v in self.values]

    def _windows(self, split: str) -> ForecastWindows:
        stats = []
        for values in self.values:
            part = values[: len(values) - self._held_out]
            std = float(part.std())
            stats.append((float(part.mean()), std if std > 0 else 1.0))
        return cut_windows(
            self.values,
            self._origins(split),
            self.window,
            self.horizon,
            self.hparams.scaling,
            stats,
            self.seasonality,
            with_target=split != "predict",
        )

    def setup(self, stage: str | None = None) -> None:
        """Cut the windows of every split."""
        holdout = self.hparams.holdout
        self.train_set = self._windows("train")
        self.val_set = self._windows("val") if holdout == "val_test" else None
        self.test_set = self._windows("test") if holdout != "none" else None
        self.predict_set = self._windows("predict")

    def history_and_target(
        self, split: Literal["val", "test"] = "test"
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each series' history before the split's target and the target, in the series' units.

        What the baselines (:mod:`lt_transfer.metrics.forecast_baselines`) forecast from.

        Example:
            >>> dm = ForecastingDataModule([[1, 2, 3, 4, 5, 6]], horizon=2, holdout="test")
            >>> [(h.tolist(), t.tolist()) for h, t in dm.history_and_target("test")]
            [([1.0, 2.0, 3.0, 4.0], [5.0, 6.0])]
        """
        if (split == "val" and self.hparams.holdout != "val_test") or self.hparams.holdout == "none":
            raise ValueError(f"{_NAME}(holdout={self.hparams.holdout!r}) has no {split} target.")
        pairs = []
        for values, (origin,) in zip(self.values, self._origins(split), strict=True):
            pairs.append((values[:origin], values[origin : origin + self.horizon]))
        return pairs

    # ----------------------------------------------------------------- loaders
    def missing_split(self, split: str) -> str:
        return f"{_NAME}(holdout={self.hparams.holdout!r}) has no {split} split (or setup() was not called)."
