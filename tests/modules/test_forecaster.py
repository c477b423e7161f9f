"""TransferForecaster: fast_dev_run, metrics in series units, fine-tuning modes, checkpoints,
bad input, and one ddp_spawn run whose metrics equal the single-process ones."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer import ForecastingDataModule, TransferForecaster
from lt_transfer.backbones import FCNBackbone
from lt_transfer.checkpoints import CheckpointError
from lt_transfer.metrics import mase, smape

HORIZON, WINDOW = 3, 6


def _trainer(**kwargs) -> pl.Trainer:
    options = dict(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    return pl.Trainer(**{**options, **kwargs})


def _series(count: int = 4, length: int = 24, level: float = 50) -> list[list[float]]:
    t = np.arange(length)
    return [list(level * (i + 1) + 10 * np.sin(t / 2 + i) + t) for i in range(count)]


def _data(**kwargs) -> ForecastingDataModule:
    options = {"horizon": HORIZON, "window": WINDOW, "holdout": "val_test", "batch_size": 16, **kwargs}
    return ForecastingDataModule(_series(), **options)


def _model(**kwargs) -> TransferForecaster:
    torch.manual_seed(0)
    return TransferForecaster(FCNBackbone(filters=(4, 8, 4)), horizon=HORIZON, **kwargs)


def test_fast_dev_run_fit_test_predict() -> None:
    data, model = _data(), _model(linear_window=WINDOW)
    trainer = _trainer(fast_dev_run=True)
    trainer.fit(model, data)
    results = trainer.test(model, data, verbose=False)[0]
    assert {"test/loss", "test/mae", "test/smape", "test/mase"} <= set(results)
    forecasts = torch.cat(trainer.predict(model, data))
    batch = next(iter(data.predict_dataloader()))
    with torch.no_grad():
        raw = model.eval()(batch["x"])
    assert forecasts.shape == (4, HORIZON)  # scaled back to the series' units:
    assert torch.allclose(forecasts, raw * batch["scale"][:, None] + batch["loc"][:, None])


def test_logged_metrics_are_in_series_units() -> None:
    data, model = _data(), _model()
    trainer = _trainer(max_epochs=2)
    trainer.fit(model, data)
    logged = trainer.test(model, data, verbose=False)[0]
    model.eval()
    batch = next(iter(data.test_dataloader()))
    with torch.no_grad():
        preds = model.predict_step(batch, 0)
    target = data.test_set.unscale(data.test_set.y)
    history_scales = torch.tensor([float(s) for s in data.test_set.mase_scale])
    assert logged["test/mase"] == pytest.approx(mase(preds, target, history_scales).item(), rel=1e-4)
    assert logged["test/smape"] == pytest.approx(smape(preds, target).item(), rel=1e-4)
    assert logged["test/mae"] == pytest.approx((preds - target).abs().mean().item(), rel=1e-4)


def test_training_beats_the_naive_forecast_on_a_learnable_pattern() -> None:
    """25 epochs of full fine-tuning on 8 series of a sine on a trend (no level offsets: with
    levels of 50-400 the pattern is a ~1% ripple on each scaled window, and whether training beat
    the naive forecast then depended on the thread count: MASE 1.99 at 1 thread, 2.34 at 2 vs
    naive 2.22). Measured test MASE 0.94 / 1.30 / 0.84 at 1 / 2 / 4 threads vs naive 2.22; we
    assert < 0.8 x naive (1.78), a margin of 0.48 over the worst measured."""
    data = ForecastingDataModule(
        _series(count=8, length=40, level=0), horizon=HORIZON, window=WINDOW, holdout="test", batch_size=32
    )
    model = _model(linear_window=WINDOW, optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    trainer = _trainer(max_epochs=25, limit_val_batches=0)
    trainer.fit(model, data)
    learned = trainer.test(model, data, verbose=False)[0]["test/mase"]
    pairs = data.history_and_target("test")
    naive = torch.tensor(np.stack([np.full(HORIZON, h[-1]) for h, _ in pairs]))
    target = torch.tensor(np.stack([t for _, t in pairs]))
    scales = torch.tensor([float(np.abs(np.diff(h)).mean()) for h, _ in pairs])
    assert learned < 0.8 * mase(naive, target, scales).item()


def test_finetune_modes_and_param_groups() -> None:
    frozen = _model(finetune="frozen")
    assert [g["name"] for g in frozen.param_groups()] == ["head", "head.no_decay"]
    frozen.train()
    assert not frozen.backbone.model.block1.training and frozen.head.training
    partial = _model(finetune="partial", trainable_groups=1, backbone_lr_scale=0.5, linear_window=WINDOW)
    names = [(g["name"], g["lr_scale"]) for g in partial.param_groups() if "no_decay" not in g["name"]]
    assert names == [("head", 1.0), ("backbone.block3", 0.5)]
    assert any(p is partial.linear_path.weight for g in partial.param_groups() for p in g["params"])
    with pytest.raises(ValueError, match=r"required with 'partial' only, between 1 and 3"):
        _model(finetune="partial")
    with pytest.raises(ValueError, match=r"loss='huber'\) must be one of \['mse', 'mae'\]"):
        _model(loss="huber")


def test_bad_input_is_named() -> None:
    model = _model(linear_window=WINDOW)
    with pytest.raises(ValueError, match=r"linear_window=6\) got inputs of length 8"):
        model(torch.zeros(2, 1, 8))
    with pytest.raises(TypeError, match="series of different lengths cannot share a batch"):
        model([torch.zeros(1, 6), torch.zeros(1, 7)])
    loader = DataLoader(TensorDataset(torch.randn(4, 1, WINDOW), torch.randn(4, HORIZON + 1)), batch_size=2)
    with pytest.raises(ValueError, match=r"forecasts \(2, 3\) but the targets have shape \(2, 4\)"):
        _trainer(fast_dev_run=True).fit(_model(), loader)
    with pytest.raises(ValueError, match=r"horizon=3\) but the datamodule .* has horizon=2"):
        _trainer(fast_dev_run=True).fit(_model(), ForecastingDataModule(_series(), horizon=2, window=WINDOW))
    with pytest.raises(ValueError, match="pass a spec string"):
        TransferForecaster(FCNBackbone(), weights="x.pt")


def test_a_horizon_from_the_file_does_not_clash_with_the_model_in_the_loggers(tmp_path: Path) -> None:
    # M1 declares its horizon (6) in the file: the datamodule gets none, the model gets 6
    data = ForecastingDataModule("m1_yearly", series_ids=[0, 1, 2, 3], holdout="test")
    trainer = _trainer(fast_dev_run=True, logger=CSVLogger(tmp_path))
    trainer.fit(TransferForecaster(FCNBackbone(filters=(2, 2, 2)), horizon=6), data)
    assert "horizon" not in data.hparams and data.horizon == 6


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = TransferForecaster("ts/fcn", horizon=HORIZON, linear_window=WINDOW)
    trainer = _trainer()
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "spec.ckpt")
    loaded = TransferForecaster.load_from_checkpoint(tmp_path / "spec.ckpt").eval()
    x = torch.randn(2, 1, WINDOW)
    assert torch.equal(loaded(x), model.eval()(x))
    custom = _model()
    trainer.strategy.connect(custom)
    trainer.save_checkpoint(tmp_path / "custom.ckpt")
    with pytest.raises(CheckpointError, match="pass backbone=..."):
        TransferForecaster.load_from_checkpoint(tmp_path / "custom.ckpt")
    again = TransferForecaster.load_from_checkpoint(
        tmp_path / "custom.ckpt", backbone=FCNBackbone(filters=(4, 8, 4))
    )
    assert torch.equal(again.head.weight, custom.head.weight)


def test_ddp_spawn_metrics_equal_single_process() -> None:
    """Tolerance rel=1e-5: the same windows summed in another order over 2 ranks (float32)."""
    data = _data(holdout="test", batch_size=2)  # 4 test windows: 2 per rank, no padding
    model = _model()
    distributed = _trainer(strategy="ddp_spawn", devices=2).test(model, data, verbose=False)[0]
    single = _trainer(devices=1).test(model, data, verbose=False)[0]
    for key in ("test/mase", "test/smape", "test/mae", "test/loss"):
        assert distributed[key] == pytest.approx(single[key], rel=1e-5), key
