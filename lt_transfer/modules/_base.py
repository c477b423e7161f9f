"""The shared skeleton of the classification LightningModules of lt_transfer.

:class:`ClassificationModule` owns what :class:`~lt_transfer.TransferClassifier`,
:class:`~lt_transfer.TextClassifier`, :class:`~lt_transfer.DomainAdaptationModule` and
:class:`~lt_transfer.DistillationModule` have in common:

* ``configure_optimizers``: the optimizer factory applied to :meth:`param_groups` (each
  group's ``lr_scale`` applied once, before any scheduler reads the rates), then the
  scheduler of :meth:`configure_scheduler`;
* the evaluation step (``validation_step``/``test_step``): cross-entropy and accuracy per
  loader, logged as ``<stage>/loss`` and ``<stage>/acc`` for a single loader and as
  ``<stage>/<name>/...`` for named loaders (:meth:`eval_prefix`);
* a registry of accuracy metrics, one per stage and loader (:meth:`stage_accuracy`);
* loader names from ``eval_names`` or the datamodule's ``eval_names`` attribute
  (:meth:`eval_loader_name`);
* label-range checks (:meth:`check_labels`) and the ``num_classes`` check against the
  datamodule's;
* ``predict_step`` returning class probabilities.

Batches are read through :mod:`lt_transfer.batches`, so tuples, ``image``/``x``-keyed dicts
and tokenizer dicts work in every step.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lt_transfer._lightning_compat import attached_trainer
from lt_transfer.batches import split_batch
from lt_transfer.modules._checkpointing import SelfContainedCheckpoints
from lt_transfer.optim import apply_lr_scales

__all__ = ["ClassificationModule", "Stage"]

#: The stages a metric or a log key belongs to.
Stage = Literal["train", "val", "test"]


class ClassificationModule(SelfContainedCheckpoints):
    """Base class of the classification LightningModules: optimizer, evaluation, metrics.

    Subclasses implement ``forward`` (input → logits ``(N, C)``), :meth:`param_groups` and
    ``training_step``; they call ``save_hyperparameters`` themselves (in their own
    ``__init__``, after ``super().__init__(...)``).

    Args:
        num_classes: the class count (``None``: taken from the logits' width).
        optimizer: optimizer factory taking the param groups.
        scheduler: optional lr-scheduler factory taking the optimizer.
        scheduler_interval: step the scheduler each ``"epoch"`` or ``"step"``.
        scheduler_monitor: metric for schedulers that need one (ReduceLROnPlateau).
        eval_names: names of the validation/test loaders in order; ``None`` uses the
            datamodule's ``eval_names`` attribute if it has one.
        ignore_index: label value of unlabelled samples (left out of loss, accuracy and
            checks); ``None``: every label counts.

    Example:
        >>> class Linear(ClassificationModule):
        ...     def __init__(self):
        ...         super().__init__(num_classes=2, optimizer=torch.optim.SGD)
        ...         self.net = nn.Linear(3, 2)
        ...     def forward(self, x):
        ...         return self.net(x)
        ...     def param_groups(self):
        ...         return [{"name": "net", "params": list(self.net.parameters()), "lr": 0.1}]
        >>> model = Linear()
        >>> model.predict_step({"image": torch.zeros(4, 3)}, 0).shape
        torch.Size([4, 2])
        >>> type(model.configure_optimizers()).__name__
        'SGD'
    """

    def __init__(
        self,
        *,
        num_classes: int | None,
        optimizer: OptimizerCallable,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        scheduler_monitor: str = "val/loss",
        eval_names: list[str] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(
                f"{type(self).__name__}(scheduler_interval={scheduler_interval!r}) must be 'epoch' or 'step'."
            )
        if eval_names is not None and (
            isinstance(eval_names, str) or not all(isinstance(n, str) for n in eval_names)
        ):
            raise ValueError(
                f"{type(self).__name__}(eval_names={eval_names!r}) must be a list of loader names, "
                "e.g. ['source', 'target'], or None."
            )
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self._num_classes = num_classes
        self._scheduler_interval = scheduler_interval
        self._scheduler_monitor = scheduler_monitor
        self._eval_names = list(eval_names) if eval_names is not None else None
        self._ignore_index = ignore_index
        self._metrics = nn.ModuleDict()
        self._checked_labels: set[str] = set()

    # ------------------------------------------------------------ subclass API
    def param_groups(self) -> list[dict]:
        """Optimizer param groups (``name``, ``params``, ``lr_scale``, ...); see :mod:`lt_transfer.optim`."""
        raise NotImplementedError(f"{type(self).__name__} must implement param_groups().")

    def configure_scheduler(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """The ``lr_scheduler`` config for ``optimizer``, or ``None`` for no scheduler.

        The default builds the ``scheduler`` factory's scheduler with ``scheduler_interval``
        and ``scheduler_monitor``; override it for a module's own schedule.

        Example:
            >>> from functools import partial
            >>> from lt_transfer import TransferClassifier
            >>> from lt_transfer.backbones import Backbone
            >>> model = TransferClassifier(Backbone(nn.Linear(4, 4), 4), num_classes=2,
            ...                            scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1))
            >>> config = model.configure_optimizers()["lr_scheduler"]
            >>> type(config["scheduler"]).__name__, config["interval"], config["monitor"]
            ('StepLR', 'epoch', 'val/loss')
        """
        if self.scheduler_factory is None:
            return None
        return {
            "scheduler": self.scheduler_factory(optimizer),
            "interval": self._scheduler_interval,
            "monitor": self._scheduler_monitor,
        }

    def configure_optimizers(self) -> Any:
        """The optimizer over :meth:`param_groups` (``lr_scale`` applied) and its scheduler, if any."""
        optimizer = self.optimizer_factory(self.param_groups())
        apply_lr_scales(optimizer)
        scheduler = self.configure_scheduler(optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ----------------------------------------------------------------- metrics
    def stage_accuracy(self, stage: Stage, dataloader_idx: int = 0) -> MulticlassAccuracy | None:
        """The accuracy metric of ``stage`` and loader ``dataloader_idx``; ``None`` before its first batch.

        Example:
            >>> from lt_transfer import TransferClassifier
            >>> from lt_transfer.backbones import Backbone
            >>> model = TransferClassifier(Backbone(nn.Linear(4, 4), 4), num_classes=2)
            >>> model.stage_accuracy("val") is None
            True
        """
        key = _metric_key(stage, dataloader_idx)
        return self._metrics[key] if key in self._metrics else None

    def _accuracy(
        self, stage: Stage, dataloader_idx: int, num_classes: int
    ) -> tuple[MulticlassAccuracy, str]:
        key = _metric_key(stage, dataloader_idx)
        if key not in self._metrics:
            self._metrics[key] = MulticlassAccuracy(num_classes=num_classes, average="micro").to(self.device)
        return self._metrics[key], f"_metrics.{key}"

    def log_accuracy(
        self, stage: Stage, logits: torch.Tensor, y: torch.Tensor, dataloader_idx: int = 0, **kwargs: Any
    ) -> None:
        """Update the accuracy of ``stage``/``dataloader_idx`` and log it (epoch-level) as ``<prefix>/acc``.

        ``kwargs`` go to ``self.log`` (the prefix is ``stage`` for training, else
        :meth:`eval_prefix`).
        """
        metric, attribute = self._accuracy(stage, dataloader_idx, logits.shape[-1])
        metric(logits.detach(), y)
        prefix = stage if stage == "train" else self.eval_prefix(stage, dataloader_idx)
        options = {"on_step": False, "on_epoch": True, **kwargs}
        self.log(f"{prefix}/acc", metric, metric_attribute=attribute, **options)

    # ------------------------------------------------------------ eval loaders
    def eval_loader_name(self, dataloader_idx: int) -> str | None:
        """Name of evaluation loader ``dataloader_idx``, or ``None`` when no names are configured.

        Names come from ``eval_names``, else from the attached trainer's datamodule's
        ``eval_names`` attribute.

        Raises:
            ValueError: when fewer names than loaders are given.

        Example:
            >>> from lt_transfer import TransferClassifier
            >>> from lt_transfer.backbones import Backbone
            >>> model = TransferClassifier(Backbone(nn.Linear(4, 4), 4), num_classes=2,
            ...                            eval_names=["source", "target"])
            >>> model.eval_loader_name(1)
            'target'
        """
        names = self._eval_names
        trainer = attached_trainer(self)
        if names is None and trainer is not None:
            names = getattr(trainer.datamodule, "eval_names", None)
        if names is None:
            return None
        if dataloader_idx >= len(names):
            raise ValueError(
                f"eval_names={list(names)} names {len(names)} dataloaders but got dataloader index "
                f"{dataloader_idx}; give one name per validation/test dataloader."
            )
        return names[dataloader_idx]

    def eval_prefix(self, stage: Stage, dataloader_idx: int) -> str:
        """Log-key prefix of a loader: ``<stage>/<name>``; unnamed: ``<stage>`` (loader 0) or ``<stage>/<i>``.

        Example:
            >>> from lt_transfer import TransferClassifier
            >>> from lt_transfer.backbones import Backbone
            >>> model = TransferClassifier(Backbone(nn.Linear(4, 4), 4), num_classes=2)
            >>> model.eval_prefix("val", 0), model.eval_prefix("test", 2)
            ('val', 'test/2')
        """
        name = self.eval_loader_name(dataloader_idx)
        if name is not None:
            return f"{stage}/{name}"
        return stage if dataloader_idx == 0 else f"{stage}/{dataloader_idx}"

    # ------------------------------------------------------------------ checks
    def check_labels(self, y: torch.Tensor, num_classes: int) -> None:
        """Raise unless every label (other than ``ignore_index``) lies in ``[0, num_classes)``.

        Example:
            >>> from lt_transfer import TransferClassifier
            >>> from lt_transfer.backbones import Backbone
            >>> model = TransferClassifier(Backbone(nn.Linear(4, 4), 4), num_classes=2)
            >>> model.check_labels(torch.tensor([0, 2]), 2)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: TransferClassifier has num_classes=2 but got labels in [0, 2]; ...
        """
        labelled = y if self._ignore_index is None else y[y != self._ignore_index]
        if not labelled.numel():
            return
        low, high = int(labelled.min()), int(labelled.max())
        if low < 0 or high >= num_classes:
            unlabelled = (
                ""
                if self._ignore_index is None
                else f" (unlabelled samples use ignore_index={self._ignore_index})"
            )
            raise ValueError(
                f"{type(self).__name__} has num_classes={num_classes} but got labels in [{low}, {high}]; "
                f"set num_classes to the data's class count (at least {high + 1}) or fix the labels"
                f"{unlabelled}."
            )

    def _check_labels_once(self, key: str, y: torch.Tensor, num_classes: int) -> None:
        """Check the labels of the first batch of each stage/loader of a run (no sync per step)."""
        if key not in self._checked_labels:
            self.check_labels(y, num_classes)
            self._checked_labels.add(key)

    def _check_logits(self, logits: torch.Tensor) -> None:
        if self._num_classes is not None and logits.shape[-1] != self._num_classes:
            raise ValueError(
                f"{type(self).__name__}(num_classes={self._num_classes}) but the model outputs "
                f"{logits.shape[-1]} logits; make them agree."
            )

    def setup(self, stage: str) -> None:
        """Check ``num_classes`` against the datamodule's, if both declare one."""
        self._checked_labels = set()
        trainer = attached_trainer(self)
        datamodule = trainer.datamodule if trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None)
        if self._num_classes is not None and data_classes is not None and data_classes != self._num_classes:
            raise ValueError(
                f"{type(self).__name__}(num_classes={self._num_classes}) but the datamodule "
                f"{type(datamodule).__name__} has num_classes={data_classes}; make them equal (the CLI "
                "links data.num_classes to model.num_classes)."
            )

    # -------------------------------------------------------------- evaluation
    def evaluation_step(self, stage: Stage, batch: Any, dataloader_idx: int = 0) -> torch.Tensor | None:
        """Cross-entropy and accuracy of one labelled evaluation batch, logged under :meth:`eval_prefix`.

        Returns the loss, or ``None`` for a batch without (labelled) samples.
        """
        parsed = split_batch(batch, type(self).__name__)
        logits = self(parsed.x)
        self._check_logits(logits)
        y = parsed.y
        if y is None:
            return None
        if self._ignore_index is not None:
            labelled = y != self._ignore_index
            if not bool(labelled.any()):
                return None
            logits, y = logits[labelled], y[labelled]
        self._check_labels_once(f"{stage}_{dataloader_idx}", y, logits.shape[-1])
        loss = F.cross_entropy(logits.float(), y)
        options = {"add_dataloader_idx": False, "prog_bar": dataloader_idx == 0, "batch_size": len(y)}
        self.log(
            f"{self.eval_prefix(stage, dataloader_idx)}/loss", loss, on_epoch=True, sync_dist=True, **options
        )
        self.log_accuracy(stage, logits, y, dataloader_idx, **options)
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        return self.evaluation_step("val", batch, dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        return self.evaluation_step("test", batch, dataloader_idx)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Return class probabilities ``(N, num_classes)``."""
        return self(split_batch(batch, type(self).__name__).x).softmax(dim=-1)


def _metric_key(stage: str, dataloader_idx: int) -> str:
    return f"{stage}_{dataloader_idx}"  # never a bare stage: ModuleDict has a ``train`` method
