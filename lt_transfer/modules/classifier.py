"""TransferClassifier: a pretrained backbone plus a new head, fine-tuned as configured."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lt_transfer.backbones import Backbone, build_backbone
from lt_transfer.batches import Input, split_batch
from lt_transfer.modules._base import ClassificationModule, NanPolicy
from lt_transfer.modules._finetuning import BackboneFinetuning, FinetuneMode, FrozenMode
from lt_transfer.optim import no_decay_parameter_ids, param_groups_for

__all__ = ["FinetuneMode", "FrozenMode", "TransferClassifier"]


class TransferClassifier(BackboneFinetuning, ClassificationModule):
    """Backbone + new classification head with frozen, partial or full fine-tuning.

    The backbone's layer groups (input → output) decide what trains:

    * ``"frozen"``: only the head trains (linear probe / fixed feature extractor);
    * ``"partial"``: the head and the last ``trainable_groups`` layer groups train;
    * ``"full"``: everything trains.

    Trainable backbone group ``i`` of ``n`` gets the learning rate
    ``lr * backbone_lr_scale * layer_decay ** (n - 1 - i)`` (the head gets ``lr``), stored
    as ``lr_scale`` on its optimizer param group. Biases and normalisation weights get no
    weight decay. Layer groups without trainable parameters are *frozen*: their modules are
    in ``frozen_mode`` (``"eval"``: BatchNorm uses and keeps its running statistics, dropout
    is off). The frozen state is read from ``requires_grad`` each time, so a callback that
    unfreezes groups (``ProgressiveUnfreezing``) is respected.

    Batches are read by :func:`lt_transfer.batches.split_batch`: ``(x, y)`` tuples,
    dicts (``{"image": x, "label": y}``, ``{"x": ..., "y": ...}``) and tokenizer dicts.

    Args:
        backbone: ``"torchvision/<model>"`` spec or a :class:`~lt_transfer.Backbone`.
        num_classes: number of target classes (the head's width).
        weights: weights for a spec backbone: ``None``, a torchvision weights name
            (``"DEFAULT"``) or a local state-dict path.
        finetune: ``"frozen"``, ``"partial"`` or ``"full"``.
        trainable_groups: for ``"partial"`` only: how many layer groups, counted from the
            head, train.
        backbone_lr_scale: learning-rate multiplier of the backbone group nearest the head;
            ``None``: 0.1 for a pretrained backbone (``backbone.pretrained``), else 1.0. The
            value in use is the :attr:`backbone_lr_scale` property.
        layer_decay: multiplier per group towards the input; ``None`` or 1: no decay.
        head_dropout: dropout before the new head.
        frozen_mode: mode of the modules of frozen layer groups, ``"eval"`` or ``"train"``
            (BatchNorm then normalises with batch statistics and updates its running ones).
        optimizer: optimizer factory taking param groups (``lr`` and ``weight_decay`` are
            its own arguments).
        scheduler: optional lr-scheduler factory.
        scheduler_interval: step the scheduler each ``"epoch"`` or ``"step"``.
        scheduler_monitor: metric for schedulers that need one (ReduceLROnPlateau).
        eval_names: names of the validation/test dataloaders in order (e.g.
            ``["source", "target"]``); ``None`` uses the datamodule's ``eval_names``
            attribute if it has one.
        nan_policy: on a non-finite training loss, ``"raise"`` an error naming the batch and
            the NaN/Inf input, ``"skip_batch"`` (no optimizer step for it) or ``"warn"`` (train
            on it anyway).
        lr: base learning rate (the head's; backbone groups get it times their scale), in
            place of the optimizer's own; ``None``: the optimizer's. ``Tuner.lr_find`` sets it.

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
        >>> model.hparams.backbone_lr_scale, model.backbone_lr_scale  # random init: no lower rate
        (None, 1.0)
    """

    def __init__(
        self,
        backbone: str | Backbone = "torchvision/resnet18",
        num_classes: int = 10,
        weights: str | None = None,
        finetune: FinetuneMode = "full",
        trainable_groups: int | None = None,
        backbone_lr_scale: float | None = None,
        layer_decay: float | None = None,
        head_dropout: float = 0.0,
        frozen_mode: FrozenMode = "eval",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        scheduler_monitor: str = "val/loss",
        eval_names: list[str] | None = None,
        nan_policy: NanPolicy = "raise",
        lr: float | None = None,
    ) -> None:
        name = type(self).__name__
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"{name}(num_classes={num_classes!r}) must be an int >= 2 (the number of target classes)."
            )
        super().__init__(
            num_classes=num_classes, optimizer=optimizer, scheduler=scheduler, eval_names=eval_names,
            scheduler_interval=scheduler_interval, scheduler_monitor=scheduler_monitor,
            nan_policy=nan_policy, lr=lr,
        )
        self.save_hyperparameters(ignore=self._hparams_ignored(backbone))
        if not 0 <= head_dropout < 1:
            raise ValueError(f"{name}(head_dropout={head_dropout}) must be in [0, 1).")
        self.backbone = build_backbone(backbone, weights) if isinstance(backbone, str) else backbone
        if not isinstance(self.backbone, Backbone):
            raise TypeError(
                f"{name}(backbone=...) must be a spec string or a Backbone, got "
                f"{type(backbone).__name__}; wrap a module with lt_transfer.build_backbone()."
            )
        if weights is not None and not isinstance(backbone, str):
            raise ValueError(
                f"{name}(weights=...) only applies to a spec-string backbone; load weights into the "
                "Backbone before passing it."
            )
        self.init_finetuning(finetune, trainable_groups, backbone_lr_scale, layer_decay, frozen_mode)

        linear = nn.Linear(self.backbone.num_features, num_classes)
        self.head = nn.Sequential(nn.Dropout(head_dropout), linear) if head_dropout else linear
        self.train()

    # ------------------------------------------------------------------ model
    @staticmethod
    def _hparams_ignored(backbone: object) -> list[str]:
        """Arguments kept out of the hyper-parameters: factories and module instances are not plain
        values, and keeping them out keeps checkpoints loadable with ``torch.load(weights_only=True)``
        (the CLI saves the full config, optimizer included, to config.yaml anyway)."""
        return ["optimizer", "scheduler"] + (["backbone"] if isinstance(backbone, nn.Module) else [])

    def forward(self, x: Input) -> torch.Tensor:
        """Return class logits ``(N, num_classes)`` for an input tensor or tokenizer dict."""
        with self.explained_channel_errors(x):
            return self.head(self.backbone(x))

    # --------------------------------------------------------------- training
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        parsed = split_batch(batch, type(self).__name__)
        if parsed.y is None:
            raise ValueError(
                f"{type(self).__name__}.training_step needs labelled batches: (x, y) or a dict with "
                "labels under 'y', 'label' or 'labels'."
            )
        y = parsed.y
        self.check_batch_labels("train", y, self.hparams.num_classes, batch_idx)
        logits = self(parsed.x)
        loss = self.checked_loss(F.cross_entropy(logits, y), batch_idx, {"input": parsed.x, "labels": y})
        if loss is None:
            return self.skipped_step_output()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        self.log_accuracy("train", logits, y)
        return loss

    # -------------------------------------------------------------- optimizer
    def param_groups(self) -> list[dict]:
        """Optimizer param groups: head, then trainable backbone groups (output → input).

        Each group has ``name``, ``params``, ``lr_scale`` and, for biases and norm weights,
        ``weight_decay=0``.

        Example:
            >>> from lt_transfer.backbones import Backbone
            >>> model = TransferClassifier(Backbone(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), 2),
            ...                            num_classes=2, backbone_lr_scale=0.5, layer_decay=0.5)
            >>> [(g["name"], g["lr_scale"]) for g in model.param_groups() if "no_decay" not in g["name"]]
            [('head', 1.0), ('backbone.1', 0.5), ('backbone.0', 0.25)]
        """
        no_decay = no_decay_parameter_ids(self)
        head = param_groups_for("head", self.head.named_parameters(), 1.0, no_decay)
        return head + self.backbone_param_groups(no_decay)
