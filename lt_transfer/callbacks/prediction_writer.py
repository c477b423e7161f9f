"""PredictionWriter: ``trainer.predict`` → a CSV of files, predicted class names, probabilities, top-k.

The model's ``predict_step`` returns class probabilities ``(N, C)`` (as
:class:`~lt_transfer.TransferClassifier` does). Each row of the CSV is one sample:

``index, path, prediction, probability, top1, top1_probability, ..., topK, topK_probability``

plus ``label`` (the true class name) when the batches carry labels and ``dataloader`` when
there are several predict loaders. ``index`` is the sample's position in its predict data
set, ``path`` the file from the batch (``{"image": ..., "path": [...]}`` batches such as
:class:`~lt_transfer.data.ImageFolderDataModule` yields; empty otherwise). Class names come
from the model's ``class_names`` (stored in lt_transfer checkpoints) or ``hparams["class_names"]``,
else the datamodule's ``class_names``, else the
class indices.

Under DDP every rank writes its part (``<output>.rank<r>.part``) and rank 0 merges the parts
into ``output`` in sample order (the copies that ``DistributedSampler`` pads shards with are
dropped), then removes them. Ranks must share the file system where ``output`` lies.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from typing_extensions import override

from lt_transfer.batches import split_batch

__all__ = ["PredictionWriter"]


class PredictionWriter(BasePredictionWriter):
    """Write ``trainer.predict`` results to a CSV file (class names, probabilities, top-k).

    Args:
        output: the CSV file (its folder is created).
        top_k: how many best classes to list per row (capped at the number of classes; 0:
            only the prediction).

    Attributes:
        rows: after ``trainer.predict``, the rows written (dicts of column → value; on rank 0
            all ranks' rows, elsewhere the rank's own).

    Raises:
        ValueError: ``top_k < 0``; during ``predict``, outputs that are not probabilities
            ``(N, C)`` or class names that do not match ``C``.

    Example:
        >>> import tempfile, torch
        >>> import lightning.pytorch as pl
        >>> from torch.utils.data import DataLoader
        >>> class Model(pl.LightningModule):
        ...     def predict_step(self, batch, batch_idx):
        ...         return batch["image"].softmax(-1)
        >>> images = [{"image": torch.tensor([0.0, 2.0]), "path": f"{i}.png"} for i in range(3)]
        >>> output = tempfile.mkdtemp() + "/predictions.csv"
        >>> trainer = pl.Trainer(callbacks=[PredictionWriter(output, top_k=2)], logger=False,
        ...                      enable_progress_bar=False, enable_model_summary=False)
        >>> _ = trainer.predict(Model(), DataLoader(images, batch_size=2))
        >>> print(open(output).read().splitlines()[1])
        0,0.png,1,0.880797,1,0.880797,0,0.119203
    """

    def __init__(self, output: str = "predictions.csv", top_k: int = 5) -> None:
        super().__init__(write_interval="batch")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"PredictionWriter(top_k={top_k!r}) must be an int >= 0.")
        self.output = Path(output)
        self.top_k = top_k
        self.rows: list[dict[str, Any]] = []
        self._class_names: list[str] | None = None
        self._offsets: dict[int, int] = {}

    # ------------------------------------------------------------------ hooks
    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.rows = []
        self._offsets = {}
        self._class_names = _class_names(trainer, pl_module)

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        probabilities = _check_probabilities(prediction)
        count, classes = probabilities.shape
        names = self._names(classes)
        if batch_indices is None or len(batch_indices) != count:
            start = self._offsets.get(dataloader_idx, 0)
            batch_indices = list(range(start, start + count))
            self._offsets[dataloader_idx] = start + count
        paths = batch.get("path") if isinstance(batch, dict) else None
        labels = split_batch(batch, "PredictionWriter").y
        k = min(self.top_k, classes)
        top = probabilities.topk(max(k, 1), dim=-1)
        for row in range(count):
            record: dict[str, Any] = {"dataloader": dataloader_idx, "index": int(batch_indices[row])}
            record["path"] = str(paths[row]) if paths is not None else ""
            if labels is not None:
                record["label"] = names[int(labels[row])]
            record["prediction"] = names[int(top.indices[row, 0])]
            record["probability"] = round(float(top.values[row, 0]), 6)
            for rank in range(k):
                record[f"top{rank + 1}"] = names[int(top.indices[row, rank])]
                record[f"top{rank + 1}_probability"] = round(float(top.values[row, rank]), 6)
            self.rows.append(record)

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.world_size <= 1:
            self._write(self.output, _sorted_unique(self.rows))
            return
        part = self.output.with_name(f"{self.output.name}.rank{trainer.global_rank}.part")
        self._write(part, self.rows, all_columns=True)
        trainer.strategy.barrier("PredictionWriter.parts_written")
        if trainer.is_global_zero:
            parts = [
                self.output.with_name(f"{self.output.name}.rank{r}.part") for r in range(trainer.world_size)
            ]
            rows = [row for path in parts for row in _read_part(path)]
            self.rows = _sorted_unique(rows)
            self._write(self.output, self.rows)
            for path in parts:
                path.unlink()
        trainer.strategy.barrier("PredictionWriter.merged")

    # ---------------------------------------------------------------- helpers
    def _names(self, classes: int) -> list[str]:
        if self._class_names is None:
            return [str(i) for i in range(classes)]
        if len(self._class_names) != classes:
            raise ValueError(
                f"PredictionWriter: the model predicts {classes} classes but there are "
                f"{len(self._class_names)} class names ({self._class_names[:5]}...); the datamodule or the "
                "model's hparams['class_names'] belong to other data."
            )
        return self._class_names

    def _write(self, path: Path, rows: list[dict[str, Any]], all_columns: bool = False) -> None:
        columns = self._columns(rows, all_columns)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temporary, path)

    def _columns(self, rows: list[dict[str, Any]], all_columns: bool) -> list[str]:
        present = {key for row in rows for key in row}
        columns = ["dataloader", "index", "path", "label", "prediction", "probability"]
        width = max(
            (int(key[3:]) for key in present if key.startswith("top") and key[3:].isdigit()), default=0
        )
        for rank in range(1, width + 1):
            columns += [f"top{rank}", f"top{rank}_probability"]
        if all_columns:
            return columns
        several_loaders = len({row["dataloader"] for row in rows}) > 1
        return [
            c
            for c in columns
            if (c != "dataloader" or several_loaders) and (c != "label" or "label" in present)
        ]


def _class_names(trainer: Trainer, pl_module: LightningModule) -> list[str] | None:
    # the model knows what its outputs mean (lt_transfer modules store the training data's class
    # names in their checkpoints); a prediction-only datamodule may not know the classes at all
    names = getattr(pl_module, "class_names", None)
    if names is None:
        hparams = getattr(pl_module, "hparams", {})
        names = hparams.get("class_names") if hasattr(hparams, "get") else None
    if names is None and trainer.datamodule is not None:
        names = getattr(trainer.datamodule, "class_names", None)
    return None if names is None else [str(name) for name in names]


def _check_probabilities(prediction: Any) -> torch.Tensor:
    if not isinstance(prediction, torch.Tensor) or prediction.ndim != 2:
        shape = tuple(prediction.shape) if isinstance(prediction, torch.Tensor) else type(prediction).__name__
        raise ValueError(
            f"PredictionWriter: predict_step must return class probabilities (N, C), got {shape}; return "
            "logits.softmax(-1)."
        )
    probabilities = prediction.detach().float().cpu()
    sums = probabilities.sum(dim=-1)
    if bool((probabilities < 0).any()) or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        raise ValueError(
            "PredictionWriter: predict_step must return class probabilities (rows >= 0 summing to 1), got "
            f"rows summing to {sums[:3].tolist()}...; return logits.softmax(-1)."
        )
    return probabilities


def _read_part(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["dataloader"], row["index"] = int(row["dataloader"]), int(row["index"])
        for key, value in list(row.items()):
            if value == "":
                del row[key]
            elif key == "probability" or key.endswith("_probability"):
                row[key] = float(value)
    return rows


def _sorted_unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    unique = {(row["dataloader"], row["index"]): row for row in rows}
    return [unique[key] for key in sorted(unique)]
