"""Tests for PredictionWriter: CSV rows from trainer.predict on an image folder, names, DDP merge, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer.batches import split_batch
from lt_transfer.callbacks import PredictionWriter
from lt_transfer.data import ImageFolderDataModule
from tests.data.test_image_folder import make_folder


class TinyClassifier(pl.LightningModule):
    """Mean colour → linear → probabilities; reads batches through the batch contract."""

    def __init__(
        self, num_classes: int = 3, class_names: list[str] | None = None, logits: bool = False
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.float().mean(dim=(2, 3)) if x.ndim == 4 else x.float())

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        logits = self(split_batch(batch, "TinyClassifier").x)
        return logits if self.hparams.logits else logits.softmax(-1)


def _trainer(tmp_path: Path, writer: PredictionWriter, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        callbacks=[writer],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _data(tmp_path: Path, **kwargs) -> ImageFolderDataModule:
    make_folder(tmp_path / "photos" / "train", {"cat": 2, "dog": 2, "owl": 2})
    make_folder(tmp_path / "new", {"x": 3, "y": 2})  # any layout: searched recursively
    options = {
        "image_size": 16,
        "batch_size": 2,
        "num_workers": 0,
        "predict_root": str(tmp_path / "new"),
        **kwargs,
    }
    return ImageFolderDataModule(str(tmp_path / "photos"), **options)


def test_writes_one_row_per_image_with_class_names_and_top_k(tmp_path: Path) -> None:
    data = _data(tmp_path)
    writer = PredictionWriter(str(tmp_path / "out" / "predictions.csv"), top_k=2)
    model = TinyClassifier()
    predictions = _trainer(tmp_path, writer).predict(model, data)
    rows = _read(tmp_path / "out" / "predictions.csv")
    assert list(rows[0]) == [
        "index",
        "path",
        "prediction",
        "probability",
        "top1",
        "top1_probability",
        "top2",
        "top2_probability",
    ]
    assert [Path(r["path"]).name for r in rows] == [
        "img0.jpg",
        "img1.png",
        "img2.png",
        "img0.jpg",
        "img1.png",
    ]
    assert [int(r["index"]) for r in rows] == list(range(5))
    probabilities = torch.cat(predictions)
    names = ["cat", "dog", "owl"]
    for row, p in zip(rows, probabilities, strict=True):
        best = p.topk(2)
        assert row["prediction"] == row["top1"] == names[int(best.indices[0])]
        assert float(row["probability"]) == pytest.approx(float(best.values[0]), abs=1e-6)
        assert row["top2"] == names[int(best.indices[1])]
    assert [r["prediction"] for r in writer.rows] == [r["prediction"] for r in rows]


def test_labelled_split_adds_the_true_label(tmp_path: Path) -> None:
    make_folder(tmp_path / "photos" / "test", {"cat": 1, "dog": 1, "owl": 1})
    data = _data(tmp_path, predict_root=None)
    writer = PredictionWriter(str(tmp_path / "p.csv"), top_k=5)
    _trainer(tmp_path, writer).predict(TinyClassifier(), data)
    rows = _read(tmp_path / "p.csv")
    assert [r["label"] for r in rows] == ["cat", "dog", "owl"]
    assert "top3" in rows[0] and "top4" not in rows[0]  # top_k capped at the class count


def test_class_names_from_model_hparams_else_indices(tmp_path: Path) -> None:
    make_folder(tmp_path / "new", {"x": 2})
    data = ImageFolderDataModule(predict_root=str(tmp_path / "new"), image_size=16, num_workers=0)
    named = TinyClassifier(class_names=["a", "b", "c"])
    _trainer(tmp_path, writer := PredictionWriter(str(tmp_path / "named.csv"), top_k=0)).predict(named, data)
    rows = _read(tmp_path / "named.csv")
    assert {r["prediction"] for r in rows} <= {"a", "b", "c"} and "top1" not in rows[0]
    assert len(writer.rows) == 2

    loader = DataLoader(TensorDataset(torch.randn(5, 3)), batch_size=2)  # tuple batches: no paths
    _trainer(tmp_path, PredictionWriter(str(tmp_path / "plain.csv"))).predict(TinyClassifier(), loader)
    rows = _read(tmp_path / "plain.csv")
    assert [r["index"] for r in rows] == ["0", "1", "2", "3", "4"] and rows[0]["path"] == ""
    assert {r["prediction"] for r in rows} <= {"0", "1", "2"}


def test_bad_outputs_and_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="top_k=-1"):
        PredictionWriter(top_k=-1)
    data = _data(tmp_path)
    with pytest.raises(ValueError, match="must return class probabilities .*logits.softmax"):
        _trainer(tmp_path, PredictionWriter(str(tmp_path / "a.csv"))).predict(
            TinyClassifier(logits=True), data
        )
    with pytest.raises(ValueError, match="the model predicts 4 classes but there are 3 class names"):
        _trainer(tmp_path, PredictionWriter(str(tmp_path / "b.csv"))).predict(TinyClassifier(4), data)


def test_ddp_ranks_write_parts_and_rank_zero_merges(tmp_path: Path) -> None:
    """Exact rows and order (no tolerance): each sample once, in sample order, padding dropped."""
    data = _data(tmp_path)  # 5 images: DistributedSampler pads the 2 shards to 3 + 3
    output = tmp_path / "ddp.csv"
    trainer = _trainer(
        tmp_path, PredictionWriter(str(output), top_k=1), accelerator="cpu", devices=2, strategy="ddp_spawn"
    )
    trainer.predict(TinyClassifier(), data, return_predictions=False)
    rows = _read(output)
    assert [int(r["index"]) for r in rows] == list(range(5))
    assert [Path(r["path"]).name for r in rows] == [
        "img0.jpg",
        "img1.png",
        "img2.png",
        "img0.jpg",
        "img1.png",
    ]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ddp")) == ["ddp.csv"]


def test_cli_predict_writes_the_csv(tmp_path: Path) -> None:
    """`lt-transfer predict --data.predict_root <folder>` with the writer configured on the command line."""
    import os
    import subprocess
    import sys

    _data(tmp_path)  # writes the folders
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable,
        "-m",
        "lt_transfer.cli",
        "predict",
        "--model=tests.callbacks.test_prediction_writer.TinyClassifier",
        "--data=lt_transfer.ImageFolderDataModule",
        f"--data.root={tmp_path / 'photos'}",
        f"--data.predict_root={tmp_path / 'new'}",
        "--data.image_size=16",
        "--data.num_workers=0",
        "--trainer.logger=false",
        "--trainer.callbacks+=lt_transfer.PredictionWriter",
        f"--trainer.callbacks.output={tmp_path / 'cli.csv'}",
        "--trainer.callbacks.top_k=1",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _read(tmp_path / "cli.csv")
    assert len(rows) == 5 and {r["prediction"] for r in rows} <= {"cat", "dog", "owl"}
