"""The time-series recipes in configs/ run with `lt-transfer fit` (aeon's shipped data, offline)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lt_transfer import FCNBackbone, cli

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recipe: str, *extra: str) -> cli.TransferCLI:
    runs: list[cli.TransferCLI] = []

    class RecordingCLI(cli.TransferCLI):
        def before_instantiate_classes(self) -> None:
            runs.append(self)
            super().before_instantiate_classes()

    monkeypatch.setattr(cli, "TransferCLI", RecordingCLI)
    arguments = ["fit", "--config", str(ROOT / "configs" / recipe), "--trainer.fast_dev_run=true"]
    cli.main([*arguments, f"--trainer.default_root_dir={tmp_path}", *extra])
    return runs[0]


def test_ucr_recipe_fine_tunes_a_weights_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "fcn.pt"
    torch.save(FCNBackbone().state_dict(), weights)
    run = _run(tmp_path, monkeypatch, "ucr_fcn_fewlabel.yaml", f"--model.init_args.weights={weights}")
    assert run.model.backbone.pretrained and run.model.hparams.num_classes == 3  # linked from the data
    assert run.trainer.global_step == 1


def test_ucr_recipe_with_a_multivariate_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run(
        tmp_path,
        monkeypatch,
        "ucr_fcn_fewlabel.yaml",
        "--data.init_args.dataset=BasicMotions",
        "--model.init_args.backbone=lt_transfer.FCNBackbone",
        "--model.init_args.backbone.in_channels=6",
        "--model.init_args.backbone.filters=[8, 8, 8]",
    )
    assert run.model.backbone.in_channels == 6 and run.trainer.global_step == 1


def test_m1_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run(tmp_path, monkeypatch, "m1_forecaster.yaml")
    assert run.datamodule.num_series == 181 and run.trainer.global_step == 1
