"""MASE, sMAPE and the baseline forecasts against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lt_transfer.metrics import (
    SMAPE,
    MeanAbsoluteScaledError,
    drift_forecast,
    mase,
    mase_scale,
    naive_forecast,
    seasonal_naive_forecast,
    smape,
)


def test_mase_scale_by_hand() -> None:
    history = np.array([10.0, 12.0, 11.0, 15.0, 14.0])
    assert mase_scale(history) == pytest.approx((2 + 1 + 4 + 1) / 4)
    assert mase_scale(history, seasonality=2) == pytest.approx((1 + 3 + 3) / 3)
    assert math.isnan(mase_scale(history, seasonality=5))  # no seasonal difference
    assert math.isnan(mase_scale(np.array([3.0, 3.0, 3.0])))  # zero denominator
    with pytest.raises(ValueError, match="seasonality=0"):
        mase_scale(history, 0)


def test_mase_by_hand_and_invalid_series_left_out() -> None:
    # series 1: errors 1, 2 -> MAE 1.5, scale 0.5 -> 3; series 2: errors 0, 4 -> 2, scale 4 -> 0.5
    preds = torch.tensor([[1.0, 2.0], [5.0, 5.0], [0.0, 0.0]])
    target = torch.tensor([[2.0, 4.0], [5.0, 9.0], [1.0, 1.0]])
    scale = torch.tensor([0.5, 4.0, float("nan")])
    assert mase(preds, target, scale).item() == pytest.approx(1.75)
    metric = MeanAbsoluteScaledError()
    metric.update(preds[:1], target[:1], scale[:1])
    metric.update(preds[1:], target[1:], scale[1:])
    assert metric.compute().item() == pytest.approx(1.75)
    assert math.isnan(mase(preds[2:], target[2:], scale[2:]).item())
    with pytest.raises(ValueError, match="one value per series"):
        mase(preds, target, scale[:2])


def test_mase_is_unchanged_by_affine_scaling() -> None:
    history = np.array([3.0, 5.0, 4.0, 8.0])
    preds, target = torch.tensor([[8.0, 9.0]]), torch.tensor([[7.0, 10.0]])
    base = mase(preds, target, torch.tensor([mase_scale(history)]))
    moved = mase(preds * 7 + 100, target * 7 + 100, torch.tensor([mase_scale(history * 7 + 100)]))
    assert moved.item() == pytest.approx(base.item(), rel=1e-6)


def test_smape_percent_by_hand() -> None:
    preds, target = torch.tensor([[110.0, 50.0]]), torch.tensor([[100.0, 100.0]])
    expected = 100 * (10 / 210 + 50 / 150)  # 200/h * sum |e| / (|y| + |yhat|), h = 2
    assert smape(preds, target).item() == pytest.approx(expected, rel=1e-5)
    metric = SMAPE()
    metric.update(preds[:, :1], target[:, :1])
    metric.update(preds[:, 1:], target[:, 1:])
    assert metric.compute().item() == pytest.approx(expected, rel=1e-5)


def test_baselines_by_hand() -> None:
    history = np.array([1.0, 4.0, 2.0, 6.0, 3.0])
    assert naive_forecast(history, 3).tolist() == [3.0, 3.0, 3.0]
    assert seasonal_naive_forecast(history, 5, seasonality=2).tolist() == [6.0, 3.0, 6.0, 3.0, 6.0]
    assert seasonal_naive_forecast(history, 2, seasonality=1).tolist() == naive_forecast(history, 2).tolist()
    assert drift_forecast(history, 2).tolist() == [3.5, 4.0]  # slope (3 - 1) / 4
    assert drift_forecast(np.array([7.0]), 2).tolist() == [7.0, 7.0]
    with pytest.raises(ValueError, match="shorter than one season"):
        seasonal_naive_forecast(history, 2, seasonality=12)
    with pytest.raises(ValueError, match="holds NaN"):
        naive_forecast(np.array([1.0, np.nan]), 1)
    with pytest.raises(ValueError, match="history is empty"):
        drift_forecast(np.array([]), 1)
