"""TransferClassifier: a pretrained backbone plus a new head, fine-tuned as configured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lt_transfer.backbones import Backbone, LayerGroup, build_backbone
from lt_transfer.modules._evaluation import eval_loader_name, stage_accuracy
from lt_transfer.optim import (
    apply_lr_scales,
    layerwise_lr_scales,
    no_decay_parameter_ids,
    param_groups_for,
)

__all__ = ["TransferClassifier"]

FinetuneMode = Literal["frozen", "partial", "full"]


class TransferClassifier(LightningModule):
    """Backbone + new classification head with frozen, partial or full fine-tuning.

    The backbone's layer groups (input → output) decide what trains:

    * ``"frozen"``: only the head trains (linear probe / fixed feature extractor);
    * ``"partial"``: the head and the last ``trainable_groups`` layer groups train;
    * ``"full"``: everything trains.

    Trainable backbone group ``i`` of ``n`` gets the learning rate
    ``lr * backbone_lr_scale * layer_decay ** (n - 1 - i)`` (the head gets ``lr``), stored
    as ``lr_scale`` on its optimizer param group. Biases and normalisation weights get no
    weight decay. Layer groups without trainable parameters are *frozen*: their modules stay
    in eval mode (BatchNorm uses and keeps its running statistics, dropout is off) unless
    ``train_bn=True``. The frozen state is read from ``requires_grad`` each time, so a
    callback that unfreezes groups (``ProgressiveUnfreezing``) is respected.

    Args:
        backbone: ``"torchvision/<model>"`` spec or a :class:`~lt_transfer.Backbone`.
        num_classes: number of target classes (the head's width).
        weights: weights for a spec backbone: ``None``, a torchvision weights name
            (``"DEFAULT"``) or a local state-dict path.
        finetune: ``"frozen"``, ``"partial"`` or ``"full"``.
        trainable_groups: for ``"partial"`` only: how many layer groups, counted from the
            head, train.
        backbone_lr_scale: learning-rate multiplier of the backbone group nearest the head.
        layer_decay: multiplier per group towards the input (1 = no decay).
        head_dropout: dropout before the new head.
        train_bn: let BatchNorm in frozen groups update its running statistics.
        optimizer: optimizer factory taking param groups (``lr`` and ``weight_decay`` are
            its own arguments).
        scheduler: optional lr-scheduler factory.
        scheduler_interval: step the scheduler each ``"epoch"`` or ``"step"``.
        scheduler_monitor: metric for schedulers that need one (ReduceLROnPlateau).
        eval_names: names of the validation/test dataloaders in order (e.g.
            ``["source", "target"]``); ``None`` uses the datamodule's ``eval_names``
            attribute if it has one.

    Raises:
        ValueError: on inconsistent arguments (named in the message).

    Example:
        >>> import torch
        >>> model = TransferClassifier("torchvision/resnet18", num_classes=3,
        ...                            finetune="partial", trainable_groups=2)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 3])
        >>> [g.name for g in model.trainable_layer_groups()]
        ['layer3', 'layer4']
    """

    def __init__(
        self,
        backbone: str | Backbone = "torchvision/resnet18",
        num_classes: int = 10,
        weights: str | None = None,
        finetune: FinetuneMode = "full",
        trainable_groups: int | None = None,
        backbone_lr_scale: float = 0.1,
        layer_decay: float = 1.0,
        head_dropout: float = 0.0,
        train_bn: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        scheduler_monitor: str = "val/loss",
        eval_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        # Factories are not plain values: keeping them out of hparams keeps checkpoints loadable
        # with torch.load(weights_only=True), so `fit(ckpt_path=...)` resumes (the CLI saves the
        # full config, optimizer included, to config.yaml anyway).
        ignore = ["optimizer", "scheduler"] + (["backbone"] if isinstance(backbone, nn.Module) else [])
        self.save_hyperparameters(ignore=ignore)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"TransferClassifier(num_classes={num_classes!r}) must be an int >= 2 "
                "(the number of target classes)."
            )
        if finetune not in ("frozen", "partial", "full"):
            raise ValueError(
                f"TransferClassifier(finetune={finetune!r}) must be 'frozen', 'partial' or 'full'."
            )
        if not 0 <= head_dropout < 1:
            raise ValueError(f"TransferClassifier(head_dropout={head_dropout}) must be in [0, 1).")
        layerwise_lr_scales(1, backbone_lr_scale, layer_decay)  # validates both values

        self.backbone = build_backbone(backbone, weights) if isinstance(backbone, str) else backbone
        if not isinstance(self.backbone, Backbone):
            raise TypeError(
                f"TransferClassifier(backbone=...) must be a spec string or a Backbone, got "
                f"{type(backbone).__name__}; wrap a module with lt_transfer.build_backbone()."
            )
        if weights is not None and not isinstance(backbone, str):
            raise ValueError(
                "TransferClassifier(weights=...) only applies to a spec-string backbone; load "
                "weights into the Backbone before passing it."
            )
        groups = self.backbone.layer_groups()
        if finetune == "partial":
            if trainable_groups is None or not 1 <= trainable_groups <= len(groups):
                raise ValueError(
                    f"TransferClassifier(finetune='partial', trainable_groups={trainable_groups!r})"
                    f": the backbone {self.backbone.name!r} has {len(groups)} layer groups "
                    f"({[g.name for g in groups]}); set trainable_groups between 1 and "
                    f"{len(groups)}, or use finetune='full'."
                )
        elif trainable_groups is not None:
            raise ValueError(
                f"TransferClassifier(trainable_groups={trainable_groups}) only applies to "
                f"finetune='partial', not finetune={finetune!r}; remove it or switch modes."
            )
        num_trainable = {"frozen": 0, "full": len(groups)}.get(finetune, trainable_groups)
        for index, group in enumerate(groups):
            trainable = index >= len(groups) - num_trainable
            for param in group.parameters():
                param.requires_grad_(trainable)

        linear = nn.Linear(self.backbone.num_features, num_classes)
        self.head = nn.Sequential(nn.Dropout(head_dropout), linear) if head_dropout else linear
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self._metrics = nn.ModuleDict()
        self.train()

    # ------------------------------------------------------------------ model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits ``(N, num_classes)``."""
        return self.head(self.backbone(x))

    def trainable_layer_groups(self) -> list[LayerGroup]:
        """Backbone layer groups that currently have trainable parameters."""
        return [g for g in self.backbone.layer_groups() if any(p.requires_grad for p in g.parameters())]

    def frozen_layer_groups(self) -> list[LayerGroup]:
        """Backbone layer groups with no trainable parameter (kept in eval mode)."""
        return [g for g in self.backbone.layer_groups() if not any(p.requires_grad for p in g.parameters())]

    def train(self, mode: bool = True) -> TransferClassifier:
        """Set train/eval mode, keeping frozen layer groups in eval mode (unless ``train_bn``)."""
        super().train(mode)
        if mode and not self.hparams.train_bn:
            for group in self.frozen_layer_groups():
                for module in group.modules:
                    module.eval()
        return self

    # --------------------------------------------------------------- training
    def _split_batch(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(batch, (list, tuple)):
            return batch[0], (batch[1] if len(batch) > 1 else None)
        if isinstance(batch, Mapping) and "input_ids" in batch:  # a tokenizer batch (text backbones)
            labels = batch.get("labels", batch.get("label"))
            return {k: v for k, v in batch.items() if k not in ("labels", "label")}, labels
        if isinstance(batch, dict):
            return batch["x"] if "x" in batch else batch["input"], batch.get("y", batch.get("label"))
        return batch, None

    def _check_labels(self, y: torch.Tensor) -> None:
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= self.hparams.num_classes:
            raise ValueError(
                f"TransferClassifier(num_classes={self.hparams.num_classes}) got labels in "
                f"[{low}, {high}]; set num_classes to the data's class count (at least "
                f"{high + 1}) or fix the labels."
            )

    def _eval_prefix(self, stage: str, dataloader_idx: int) -> str:
        name = eval_loader_name(self, dataloader_idx)
        if name is not None:
            return f"{stage}/{name}"
        return stage if dataloader_idx == 0 else f"{stage}/{dataloader_idx}"

    def setup(self, stage: str) -> None:
        """Check ``num_classes`` against the datamodule's, if it declares one."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None)
        if data_classes is not None and data_classes != self.hparams.num_classes:
            raise ValueError(
                f"TransferClassifier(num_classes={self.hparams.num_classes}) but the "
                f"datamodule {type(datamodule).__name__} has num_classes={data_classes}; "
                "make them equal (the CLI links data.num_classes to model.num_classes)."
            )
        self._labels_checked = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = self._split_batch(batch)
        if y is None:
            raise ValueError("TransferClassifier.training_step needs labelled (x, y) batches.")
        if not getattr(self, "_labels_checked", False):
            self._check_labels(y)
            self._labels_checked = True
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metric, attribute = stage_accuracy(self, "train", 0)
        metric(logits.detach(), y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", metric, on_step=False, on_epoch=True, metric_attribute=attribute)
        return loss

    def _eval_step(self, stage: str, batch: Any, dataloader_idx: int) -> torch.Tensor:
        x, y = self._split_batch(batch)
        logits = self(x)
        if y is None:
            return logits
        loss = F.cross_entropy(logits, y)
        metric, attribute = stage_accuracy(self, stage, dataloader_idx)
        metric(logits, y)
        prefix = self._eval_prefix(stage, dataloader_idx)
        kwargs = {"on_epoch": True, "add_dataloader_idx": False, "prog_bar": dataloader_idx == 0}
        self.log(f"{prefix}/loss", loss, **kwargs)
        self.log(f"{prefix}/acc", metric, metric_attribute=attribute, **kwargs)
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return self._eval_step("test", batch, dataloader_idx)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Return class probabilities ``(N, num_classes)``."""
        x, _ = self._split_batch(batch)
        return self(x).softmax(dim=-1)

    # -------------------------------------------------------------- optimizer
    def param_groups(self) -> list[dict]:
        """Optimizer param groups: head, then trainable backbone groups (output → input).

        Each group has ``name``, ``params``, ``lr_scale`` and, for biases and norm weights,
        ``weight_decay=0``.
        """
        no_decay = no_decay_parameter_ids(self)
        groups = param_groups_for("head", self.head.named_parameters(), 1.0, no_decay)
        layer_groups = self.backbone.layer_groups()
        scales = layerwise_lr_scales(
            len(layer_groups), self.hparams.backbone_lr_scale, self.hparams.layer_decay
        )
        for layer_group, scale in reversed(list(zip(layer_groups, scales, strict=True))):
            groups += param_groups_for(
                f"backbone.{layer_group.name}", layer_group.named_parameters, scale, no_decay
            )
        return groups

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.param_groups())
        apply_lr_scales(optimizer)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": self.hparams.scheduler_interval,
                "monitor": self.hparams.scheduler_monitor,
            },
        }
