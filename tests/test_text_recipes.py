"""The text recipes in configs/ run with `lt-transfer fit` (shipped MiniLM + tweets, offline)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lt_transfer import cli

ROOT = Path(__file__).resolve().parents[1]
# Small and frozen (no backward through the 22.7M-parameter encoder) to keep the suite fast;
# full fine-tuning itself is tested on a tiny BERT in tests/modules/test_text_classifier.py.
SMALL = [
    "--model.init_args.finetune=frozen",
    "--data.init_args.batch_size=8",
    "--data.init_args.train_samples=64",
    "--data.init_args.val_samples=32",
    "--data.init_args.test_samples=32",
]


def test_finetune_recipe_fit_fast_dev_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[cli.TransferCLI] = []

    class RecordingCLI(cli.TransferCLI):
        def before_instantiate_classes(self) -> None:
            runs.append(self)

    monkeypatch.setattr(cli, "TransferCLI", RecordingCLI)
    recipe = ROOT / "configs" / "tweets_minilm_finetune.yaml"
    cli.main(
        [
            "fit",
            "--config",
            str(recipe),
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
        ]
        + SMALL
    )
    trainer = runs[0].trainer
    assert trainer.state.finished and trainer.global_step == 1
    # validation ran on both domains, named by the datamodule's eval_names
    assert {"val/airline/acc", "val/other/acc"} <= set(trainer.callback_metrics)


def test_lora_recipe_parses(capsys: pytest.CaptureFixture) -> None:
    recipe = ROOT / "configs" / "tweets_minilm_lora.yaml"
    with pytest.raises(SystemExit):
        cli.main(["fit", "--config", str(recipe), "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "lt_transfer.TextClassifier"
    assert config["model"]["init_args"]["finetune"] == "lora"
    assert config["model"]["init_args"]["save_trainable_only"] is True
