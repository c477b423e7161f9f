"""``lt-transfer rank``: the subcommand beside fit/test, with --data read like the other subcommands."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lt_transfer.cli import main
from lt_transfer.ranking.command import build_parser
from tests.ranking.test_candidates import _lenet_checkpoint

DATA = {
    "class_path": "lt_transfer.DigitsDataModule",
    "init_args": {"dataset": "sklearn_digits", "image_size": 28, "labels_per_class": 3, "batch_size": 16},
}


def test_console_rank_with_a_data_config_file(tmp_path: Path):
    checkpoint, _ = _lenet_checkpoint(tmp_path)
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(DATA))
    command = [
        sys.executable, "-m", "lt_transfer.cli", "rank",
        "--candidates", f"lenet={checkpoint}", "random=torchvision/resnet18", "typo=torchvision/resnet1",
        "--data", str(tmp_path / "data.yaml"),
        "--scores", "logme", "nce", "knn",
        "--output_dir", str(tmp_path / "out"), "--progress", "false", "--device", "cpu",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| rank | candidate | logme | nce | knn | seconds |" in result.stdout
    assert "nce: source-classifier logits needed; only lenet gave them" in result.stdout
    assert "typo failed: ValueError" in result.stdout
    rows = {row["name"]: row for row in csv.DictReader((tmp_path / "out" / "ranking.csv").open())}
    assert set(rows) == {"lenet", "random", "typo"}
    assert rows["random"]["nce"] == "n/a" and rows["lenet"]["nce"] != "n/a" and rows["typo"]["logme"] == "n/a"
    assert rows["lenet"]["num_samples"] == "30" and (tmp_path / "out" / "ranking.png").is_file()


def test_main_dispatches_rank_with_overrides_and_a_config(tmp_path: Path, capsys):
    config = {"candidates": ["flat=torchvision/resnet18"], "data": DATA, "scores": ["h_score"]}
    (tmp_path / "rank.yaml").write_text(yaml.safe_dump(config))
    main(
        ["rank", "--config", str(tmp_path / "rank.yaml"), "--data.init_args.labels_per_class", "2",
         "--output_dir", str(tmp_path / "out"), "--progress", "false", "--max_samples", "20"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "| 1 | flat |" in out and "wrote ranking.csv" in out
    row = next(csv.DictReader((tmp_path / "out" / "ranking.csv").open()))
    assert row["num_samples"] == "20"  # 2 labels x 10 classes


def test_bad_arguments_are_named():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--data", "lt_transfer.DigitsDataModule"])  # no candidates
    with pytest.raises(ValueError, match="unknown transferability score 'logem'"):
        main(["rank", "--candidates", "a=torchvision/resnet18", "--data", "lt_transfer.DigitsDataModule",
              "--scores", "logem", "--output_dir", "null"])  # fmt: skip
