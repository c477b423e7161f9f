"""WiSE-FT: exact ends, BatchNorm statistics interpolated, the sweep's choice, the callback."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer.callbacks import (
    InterpolationSweep,
    WeightInterpolation,
    interpolate_weights,
    interpolation_sweep,
    pretrained_state,
)
from tests.callbacks.regularized import DataModule, Plain, loader, trainer


def _finetuned(tmp_path: Path) -> tuple[Plain, dict[str, torch.Tensor]]:
    model = Plain()
    start = pretrained_state(model, "encoder")
    trainer(tmp_path, [], max_steps=6).fit(model, loader())
    return model, start


def test_ends_are_exact_and_batchnorm_statistics_are_interpolated(tmp_path: Path) -> None:
    model, start = _finetuned(tmp_path)
    end = {k: v.clone() for k, v in model.state_dict().items()}
    head = model.classifier.weight.detach().clone()
    interpolate_weights(model, start, end, 0.0)
    state = model.state_dict()
    assert all(torch.equal(state[k], start[k]) for k in start if not k.endswith("num_batches_tracked"))
    assert torch.equal(state["encoder.1.num_batches_tracked"], end["encoder.1.num_batches_tracked"])
    assert torch.equal(model.classifier.weight, head)  # the head is always the fine-tuned one
    interpolate_weights(model, start, end, 0.25)
    mean = model.state_dict()["encoder.1.running_mean"]
    torch.testing.assert_close(
        mean, 0.75 * start["encoder.1.running_mean"] + 0.25 * end["encoder.1.running_mean"]
    )
    interpolate_weights(model, start, end, 1.0)
    assert all(torch.equal(v, end[k]) for k, v in model.state_dict().items())


def test_sweep_chooses_on_validation_and_restores_or_applies(tmp_path: Path) -> None:
    model, start = _finetuned(tmp_path)
    end = {k: v.clone() for k, v in model.state_dict().items()}
    data = DataModule()
    kept = interpolation_sweep(model, data, [0.0, 0.5, 1.0], start, apply="finetuned")
    assert all(torch.equal(v, end[k]) for k, v in model.state_dict().items())
    assert sorted(kept.accuracy) == ["test", "val"] and all(len(v) == 3 for v in kept.accuracy.values())
    applied = interpolation_sweep(model, data, [0.0, 0.5, 1.0], start, stages=["val"])
    assert applied.accuracy["val"] == kept.accuracy["val"]
    reference = Plain()
    reference.load_state_dict(end)
    interpolate_weights(reference, start, end, applied.best_alpha)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True)
    )
    # accuracy at alpha=1 is the fine-tuned model's
    model.load_state_dict(end)
    model.eval()
    x, y = next(iter(DataLoader(loader(16).dataset, batch_size=16)))
    with torch.no_grad():
        accuracy = float((model(x).argmax(-1) == y).float().mean())
    assert kept.at(1.0)["val"] == pytest.approx(accuracy)


def test_ties_choose_the_alpha_nearest_the_finetuned_model() -> None:
    sweep = InterpolationSweep([0.0, 0.5, 1.0], {"val": [0.9, 0.9, 0.8]})
    assert sweep.best_alpha == 0.5
    assert InterpolationSweep([0.0, 1.0], {"test": [0.1, 0.2]}).best_alpha is None


def test_callback_runs_the_sweep_when_training_ends_and_saves_each_alpha(tmp_path: Path) -> None:
    model = Plain()
    start = pretrained_state(model, "encoder")
    wise = WeightInterpolation([0.0, 0.5, 1.0], backbone="encoder", dirpath=str(tmp_path / "wise"))
    trainer(tmp_path, [wise], max_steps=6, limit_val_batches=0).fit(model, datamodule=DataModule())
    assert all(torch.equal(wise.snapshot[k], v) for k, v in start.items())
    assert wise.sweep is not None and wise.sweep.best_alpha in (0.0, 0.5, 1.0)
    assert sorted(p.name for p in (tmp_path / "wise").iterdir()) == [
        "alpha=0.5.pt",
        "alpha=0.pt",
        "alpha=1.pt",
    ]
    saved = torch.load(tmp_path / "wise" / f"alpha={wise.sweep.best_alpha:g}.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_bad_input(tmp_path: Path) -> None:
    model = Plain()
    data = SimpleNamespace(val_dataloader=loader, test_dataloader=loader)
    with pytest.raises(ValueError, match=r"alphas=\[1.5\]"):
        WeightInterpolation([1.5])
    with pytest.raises(ValueError, match="pretrained=None"):
        interpolation_sweep(model, data, [0.0, 1.0])
    start = pretrained_state(model, "encoder")
    with pytest.raises(ValueError, match="add 'val' to stages"):
        interpolation_sweep(model, data, [0.0, 1.0], start, stages=["test"])
    unlabelled = SimpleNamespace(val_dataloader=lambda: DataLoader(TensorDataset(torch.randn(4, 3, 6, 6))))
    with pytest.raises(ValueError, match="no labels"):
        interpolation_sweep(model, unlabelled, [1.0], start, stages=["val"])
    with pytest.raises(ValueError, match="has no datamodule"):
        trainer(tmp_path, [WeightInterpolation(backbone="encoder")], max_steps=1).fit(Plain(), loader())
