"""Forecast windows and ForecastingDataModule: hand-computed windows, scaling, held-out horizons
without leakage, short history, NaN policy, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lt_transfer.data import ForecastingDataModule, cut_windows


def test_windows_by_hand() -> None:
    values = np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    windows = cut_windows([values], [[1, 3]], window=3, horizon=2, scaling="none")
    assert windows.x[:, 0].tolist() == [[2.0, 2.0, 2.0], [2.0, 4.0, 6.0]]  # left-padded with the first value
    assert windows.y.tolist() == [[4.0, 6.0], [8.0, 10.0]]
    assert np.isnan(windows.mase_scale[0]) and windows.mase_scale[1] == 2.0  # mean |diff| of [2, 4, 6]
    scaled = cut_windows([values], [[3]], window=2, horizon=2, scaling="window")
    assert scaled.scale.tolist() == [5.0] and torch.allclose(scaled.x[0, 0], torch.tensor([0.8, 1.2]))
    assert torch.allclose(scaled.unscale(scaled.y), torch.tensor([[8.0, 10.0]]))
    series = cut_windows([values], [[3]], window=2, horizon=2, scaling="series", series_stats=[(4.0, 2.0)])
    assert series.x[0, 0].tolist() == [0.0, 1.0] and series.y.tolist() == [[2.0, 3.0]]
    with pytest.raises(ValueError, match="origin 4 of series 0 .* no 2 target values"):
        cut_windows([values], [[4]], window=2, horizon=2)


def _series(lengths=(20, 15, 30), seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return [list(100 + np.cumsum(rng.normal(1, 2, n))) for n in lengths]


def test_holdouts_never_leak_into_training() -> None:
    data = _series()
    dm = ForecastingDataModule(data, horizon=3, window=5, holdout="val_test")
    dm.setup("fit")
    for number, values in enumerate(data):
        rows = dm.train_set.series == number
        train_targets = dm.train_set.unscale(dm.train_set.y)[rows]
        allowed = np.array(values[:-6])  # every training target value lies before the held-out ones
        distance = np.abs(train_targets.flatten().double().numpy()[:, None] - allowed[None, :]).min(axis=1)
        assert distance.max() < 1e-3
        assert int(rows.sum()) == len(values) - 6 - 3  # origins 1 .. len - 6 - 3
    val = dm.val_set.unscale(dm.val_set.y)
    test = dm.test_set.unscale(dm.test_set.y)
    assert torch.allclose(test[2], torch.tensor(data[2][-3:]).float())
    assert torch.allclose(val[2], torch.tensor(data[2][-6:-3]).float())
    pairs = dm.history_and_target("val")
    assert len(pairs[0][0]) == 20 - 6 and pairs[0][1].tolist() == data[0][-6:-3]


def test_holdout_none_and_predict_windows() -> None:
    dm = ForecastingDataModule(_series(), horizon=3, window=5, holdout="none")
    dm.setup("fit")
    assert dm.val_set is None and dm.test_set is None and dm.val_dataloader() == []
    assert len(dm.train_set) == (20 - 3) + (15 - 3) + (30 - 3)
    batch = next(iter(dm.predict_dataloader()))
    assert "y" not in batch and batch["x"].shape == (3, 1, 5)
    with pytest.raises(ValueError, match="has no test split"):
        dm.test_dataloader()
    with pytest.raises(ValueError, match="has no test target"):
        dm.history_and_target("test")


def test_short_history_max_history_and_min_context() -> None:
    dm = ForecastingDataModule(_series(), horizon=3, window=8, holdout="test", max_history=6, min_context=2)
    dm.setup("fit")
    assert [len(v) for v in dm.values] == [9, 9, 9]  # 6 history values + the 3 test values
    assert len(dm.train_set) == 3 * (6 - 3 - 2 + 1)
    assert (dm.train_set.x[:, 0, :5] == dm.train_set.x[:, 0, :1]).all()  # at most 6 real values of 8


def test_horizon_longer_than_history_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"1 series are too short for horizon=15 .*\('series1', 15\)"):
        ForecastingDataModule(_series(), horizon=15, holdout="none")
    dm = ForecastingDataModule(_series(), horizon=15, holdout="none", short_series="drop")
    assert dm.series_names == ["series0", "series2"]
    with pytest.raises(ValueError, match="every series is too short"):
        ForecastingDataModule(_series(), horizon=40, holdout="none", short_series="drop")


def test_nan_policy_and_bad_arguments(tmp_path: Path) -> None:
    data = _series()
    data[1][4] = float("nan")
    with pytest.raises(ValueError, match=r"series 'series1' has 1 missing value\(s\)"):
        ForecastingDataModule(data, horizon=3)
    filled = ForecastingDataModule(data, horizon=3, fill="interpolate")
    assert np.isfinite(filled.values[1]).all()
    with pytest.raises(ValueError, match="declares no horizon; pass horizon="):
        ForecastingDataModule(_series())
    with pytest.raises(ValueError, match=r"neither data aeon ships \(\['airline'"):
        ForecastingDataModule("m4_daily")
    with pytest.raises(ValueError, match=r"series 0 has shape \(2, 3\)"):
        ForecastingDataModule([[[1, 2, 3], [4, 5, 6]]], horizon=1)
    with pytest.raises(ValueError, match=r"holdout='last'"):
        ForecastingDataModule(_series(), horizon=3, holdout="last")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"series_ids=...\): \[5\]"):
        ForecastingDataModule(_series(), horizon=3, series_ids=[0, 5])
    path = tmp_path / "sales.csv"
    path.write_text("month,a,b\n" + "".join(f"2020-{i:02d},{i},{2 * i}\n" for i in range(1, 13)))
    csv = ForecastingDataModule(str(path), horizon=2, window=4, columns=["b"], holdout="test")
    assert csv.series_names == ["b"] and csv.seasonality == 1


def test_m1_frequency_gives_the_seasonality_and_horizon() -> None:
    dm = ForecastingDataModule("m1_yearly", holdout="test", series_ids=[0, 1])
    assert (dm.horizon, dm.seasonality, dm.series_names) == (6, 1, ["T1", "T2"])
    airline = ForecastingDataModule("airline", horizon=12, window=24, holdout="val_test")
    assert airline.seasonality == 12
