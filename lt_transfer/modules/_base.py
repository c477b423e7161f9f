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
* bad data caught in every stage (:mod:`~lt_transfer.modules._batch_checks`): labels outside
  ``[0, num_classes)`` in any batch (checked on the host, before the batch moves to the
  device), a channel count the network does not take, a loader without batches, and the
  ``num_classes`` check against the datamodule's;
* the ``nan_policy`` for non-finite training losses (:meth:`checked_loss`,
  :mod:`~lt_transfer.modules._nan_policy`);
* ``lr``: the base learning rate, which Lightning's LR finder reads and sets;
* ``predict_step`` returning class probabilities.

Batches are read through :mod:`lt_transfer.batches`, so tuples, ``image``/``x``-keyed dicts
and tokenizer dicts work in every step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lt_transfer._lightning_compat import attached_trainer
from lt_transfer.batches import Input, split_batch
from lt_transfer.modules._batch_checks import (
    LabelProblem,
    empty_loader_message,
    explained_channel_errors,
    label_range_message,
    label_range_problem,
)
from lt_transfer.modules._checkpointing import SelfContainedCheckpoints
from lt_transfer.modules._nan_policy import (
    NAN_POLICIES,
    BufferSnapshot,
    NanPolicy,
    NonFiniteLossError,
    describe_non_finite,
)
from lt_transfer.optim import apply_lr_scales

__all__ = ["ClassificationModule", "NanPolicy", "NonFiniteLossError", "Stage"]

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
        nan_policy: what a non-finite training loss does: ``"raise"`` (an error naming the
            batch and what was non-finite), ``"skip_batch"`` (no optimizer step for it;
            counted in ``train/skipped_batches``) or ``"warn"`` (train on it anyway); see
            :mod:`lt_transfer.modules._nan_policy`.
        lr: the base learning rate: each param group's ``lr`` before its ``lr_scale``, in
            place of the optimizer factory's own (``None``: the factory's). Lightning's LR
            finder (``Tuner.lr_find``) reads and sets it.

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
        nan_policy: NanPolicy = "raise",
        lr: float | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if nan_policy not in NAN_POLICIES:
            raise ValueError(
                f"{owner}(nan_policy={nan_policy!r}) must be 'raise' (stop at the first non-finite loss), "
                "'skip_batch' (skip that batch's optimizer step) or 'warn' (train on it anyway)."
            )
        _check_lr(owner, lr)
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
        self._nan_policy = nan_policy
        self._initial_lr = lr  # ``lr`` lives in hparams once the subclass saved them
        self._metrics = nn.ModuleDict()
        self._seen_classes: int | None = None  # logit width seen, when num_classes is None
        self._prechecked: tuple[Stage, int, LabelProblem | None] | None = None
        self._buffer_snapshot = BufferSnapshot()
        self._drop_gradients = False
        self._epoch_skips = 0
        #: Training batches skipped by ``nan_policy="skip_batch"`` in the current fit.
        self.skipped_batches = 0

    # ------------------------------------------------------------ learning rate
    @property
    def lr(self) -> float | None:
        """The base learning rate (``hparams.lr``); ``None``: the optimizer factory's own.

        :meth:`configure_optimizers` gives it to every param group that sets no ``lr`` of its
        own, before the groups' ``lr_scale``; ``Tuner(trainer).lr_find(model, ...)`` before
        ``fit`` writes its suggestion here. (Lightning's ``LearningRateFinder`` callback also
        writes it into every group of the live optimizer, which flattens the ``lr_scale``
        ratios: prefer the tuner before ``fit``.)

        Example:
            >>> from lt_transfer import TransferClassifier
            >>> from lt_transfer.backbones import Backbone
            >>> model = TransferClassifier(Backbone(nn.Linear(4, 4), 4), num_classes=2, lr=0.01)
            >>> model.lr = 0.05
            >>> model.hparams.lr, model.configure_optimizers().param_groups[0]["lr"]
            (0.05, 0.05)
        """
        return self.hparams.get("lr", self._initial_lr)

    @lr.setter
    def lr(self, value: float | None) -> None:
        _check_lr(type(self).__name__, value)
        self._initial_lr = value
        self.hparams["lr"] = value

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
        """The optimizer over :meth:`param_groups` (``lr_scale`` applied) and its scheduler, if any.

        Groups without an ``lr`` of their own get :attr:`lr` when it is set; groups without a
        ``name`` are named ``pg<i>`` (``LearningRateMonitor``'s name for an unnamed group once
        there are several), so the logged series keep their names when groups are added.
        """
        groups = self.param_groups()
        for index, group in enumerate(groups, start=1):
            group.setdefault("name", f"pg{index}")
            if self.lr is not None:
                group.setdefault("lr", self.lr)
        optimizer = self.optimizer_factory(groups)
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
            # labels are range-checked per batch already (on the host): no validation (and no
            # device synchronisation) inside the metric
            self._metrics[key] = MulticlassAccuracy(
                num_classes=num_classes, average="micro", validate_args=False
            ).to(self.device)
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
    def check_labels(self, y: torch.Tensor, num_classes: int, where: str = "") -> None:
        """Raise unless every label (other than ``ignore_index``) lies in ``[0, num_classes)``.

        One vectorised ``aminmax``; on a CUDA tensor it synchronises once (the steps of this
        class check the labels on the host instead, see :meth:`on_before_batch_transfer`).

        Args:
            y: integer labels ``(N,)``.
            num_classes: the class count.
            where: which batch, for the message (e.g. ``"train batch 3"``).

        Example:
            >>> from lt_transfer import TransferClassifier
            >>> from lt_transfer.backbones import Backbone
            >>> model = TransferClassifier(Backbone(nn.Linear(4, 4), 4), num_classes=2)
            >>> model.check_labels(torch.tensor([0, 2]), 2)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: TransferClassifier has num_classes=2 but got labels in [0, 2] (1 label(s) out of ...
        """
        problem = label_range_problem(y, num_classes, self._ignore_index)
        if problem is not None:
            raise ValueError(
                label_range_message(type(self).__name__, problem, num_classes, self._ignore_index, where)
            )

    def batch_labels(self, batch: Any, stage: Stage) -> torch.Tensor | None:
        """The class labels of a ``stage`` batch that the step checks against ``num_classes``.

        Example:
            >>> from lt_transfer import TransferClassifier
            >>> from lt_transfer.backbones import Backbone
            >>> model = TransferClassifier(Backbone(nn.Linear(4, 4), 4), num_classes=2)
            >>> model.batch_labels({"x": torch.zeros(2, 4), "label": torch.tensor([1, 0])}, "val").tolist()
            [1, 0]
        """
        return split_batch(batch, type(self).__name__).y

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Check the labels of every train/val/test batch while they are still in host memory.

        The batch is as the ``DataLoader`` yielded it, so the check (one ``aminmax``) needs no
        device synchronisation; the step that follows raises the error with the batch index.
        Labels that reach the step on an accelerator without passing here (a data set that
        yields device tensors) are checked in the step, at the cost of one synchronisation.
        """
        batch = super().on_before_batch_transfer(batch, dataloader_idx)
        self._prechecked = None
        stage = self._running_stage()
        num_classes = self._num_classes if self._num_classes is not None else self._seen_classes
        if stage is None or num_classes is None:
            return batch
        y = self.batch_labels(batch, stage)
        if isinstance(y, torch.Tensor) and y.device.type == "cpu":
            self._prechecked = (stage, num_classes, label_range_problem(y, num_classes, self._ignore_index))
        return batch

    def check_batch_labels(
        self, stage: Stage, y: torch.Tensor, num_classes: int, batch_idx: int | None, dataloader_idx: int = 0
    ) -> None:
        """Raise when labels of this batch lie outside ``[0, num_classes)``, naming the batch.

        Uses the host-side check of :meth:`on_before_batch_transfer` when it ran for this
        batch, else checks ``y`` itself. Every step of our modules calls it before the loss.
        """
        prechecked, self._prechecked = self._prechecked, None
        if prechecked is not None and prechecked[:2] == (stage, num_classes):
            problem = prechecked[2]
        else:
            problem = label_range_problem(y, num_classes, self._ignore_index)
        if problem is not None:
            where = self._batch_description(stage, batch_idx, dataloader_idx)
            raise ValueError(
                label_range_message(type(self).__name__, problem, num_classes, self._ignore_index, where)
            )

    def _running_stage(self) -> Stage | None:
        trainer = attached_trainer(self)
        if trainer is None:
            return None
        if trainer.training:
            return "train"
        if trainer.sanity_checking or trainer.validating:
            return "val"
        if trainer.testing:
            return "test"
        return None

    def _batch_description(self, stage: Stage, batch_idx: int | None, dataloader_idx: int = 0) -> str:
        where = f"{stage} batch {batch_idx if batch_idx is not None else '?'}"
        details = []
        if stage != "train":
            name = self.eval_loader_name(dataloader_idx)
            details.append(f"dataloader {dataloader_idx}" + (f" {name!r}" if name else ""))
        trainer = attached_trainer(self)
        if trainer is not None:
            details.append(f"epoch {trainer.current_epoch}")
        return where + (f" ({', '.join(details)})" if details else "")

    def _check_logits(self, logits: torch.Tensor) -> None:
        if self._num_classes is not None and logits.shape[-1] != self._num_classes:
            raise ValueError(
                f"{type(self).__name__}(num_classes={self._num_classes}) but the model outputs "
                f"{logits.shape[-1]} logits; make them agree."
            )
        self._seen_classes = logits.shape[-1]

    def explained_channel_errors(self, x: Input) -> Any:
        """Context manager: torch's convolution channel error about ``x`` becomes one naming the fix.

        Example:
            >>> from lt_transfer import TransferClassifier
            >>> from lt_transfer.backbones import Backbone
            >>> model = TransferClassifier(Backbone(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), 64),
            ...                            num_classes=2)
            >>> model(torch.zeros(1, 1, 6, 6))  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: TransferClassifier: the network's first convolution expects 3-channel input ...
        """
        return explained_channel_errors(type(self).__name__, x)

    def setup(self, stage: str) -> None:
        """Check ``num_classes`` against the datamodule's, if both declare one."""
        self._prechecked = None
        self._buffer_snapshot.clear()
        if stage == "fit":
            self.skipped_batches = 0
        trainer = attached_trainer(self)
        datamodule = trainer.datamodule if trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None)
        if self._num_classes is not None and data_classes is not None and data_classes != self._num_classes:
            raise ValueError(
                f"{type(self).__name__}(num_classes={self._num_classes}) but the datamodule "
                f"{type(datamodule).__name__} has num_classes={data_classes}; make them equal (the CLI "
                "links data.num_classes to model.num_classes)."
            )

    # ---------------------------------------------------------- empty loaders
    def _check_loaders(self, *stages: str) -> None:
        trainer = attached_trainer(self)
        if trainer is None:
            return
        for stage in stages:
            message = empty_loader_message(type(self).__name__, trainer, stage, self.eval_loader_name)
            if message is not None:
                raise ValueError(message)

    def on_train_start(self) -> None:
        """Raise when a training loader, or a validation loader set up so far, yields no batches."""
        self._check_loaders("train", "val")

    def teardown(self, stage: str) -> None:
        """Raise when the stage's loaders yielded no batches (Lightning skips such a loop silently)."""
        self._buffer_snapshot.clear()
        stages = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ())
        self._check_loaders(*stages)

    # -------------------------------------------------------------- nan policy
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Copy the buffers a training forward may change (``nan_policy`` ``"raise"``/``"skip_batch"``)."""
        if self._nan_policy != "warn":
            self._buffer_snapshot.take(self)

    def checked_loss(
        self, loss: torch.Tensor, batch_idx: int, parts: Mapping[str, Input | None]
    ) -> torch.Tensor | None:
        """Apply ``nan_policy`` to a training loss; call it before logging or returning the loss.

        Args:
            loss: the batch's training loss.
            batch_idx: the batch index (for the message).
            parts: what the loss was computed from, by name (``{"input": x, "labels": y}``),
                inspected only when the loss is not finite to say which held NaN/Inf.

        Returns:
            the loss, or ``None`` for a batch to skip: ``training_step`` then returns
            :meth:`skipped_step_output` (and logs nothing for the batch).

        Raises:
            NonFiniteLossError: a non-finite loss under ``nan_policy="raise"``.
        """
        local_bad = not bool(torch.isfinite(loss.detach()).all())  # one device read per step
        trainer = attached_trainer(self)
        distributed = trainer is not None and trainer.world_size > 1
        bad = trainer.strategy.reduce_boolean_decision(local_bad, all=False) if distributed else local_bad
        if not bad:
            return loss
        where = self._batch_description("train", batch_idx)
        if trainer is not None:
            where += f", global step {trainer.global_step}"
        cause = describe_non_finite(parts, self) if local_bad else "the non-finite loss was on another rank"
        owner = type(self).__name__
        if self._nan_policy == "warn":
            rank_zero_warn(
                f"{owner}: non-finite training loss ({float(loss.detach().float().mean())}) at {where}: "
                f"{cause}. Training on it (nan_policy='warn'); the weights may become non-finite."
            )
            return loss
        self._buffer_snapshot.restore()
        if self._nan_policy == "raise":
            raise NonFiniteLossError(
                f"{owner}: non-finite training loss ({float(loss.detach().float().mean())}) at {where}: "
                f"{cause}. No optimizer step was taken: the weights and BatchNorm statistics are those "
                "from before this batch. Fix the data (e.g. torch.nan_to_num in the dataset) or lower the "
                "learning rate, or pass nan_policy='skip_batch' to skip such batches ('warn' trains on them "
                "anyway)."
            )
        self.skipped_batches += 1
        self._epoch_skips += 1
        return None

    def skipped_step_output(self) -> torch.Tensor | None:
        """What ``training_step`` returns for a batch that ``nan_policy="skip_batch"`` skips.

        On one device ``None`` (Lightning then runs no backward and no optimizer update).
        Lightning cannot skip a step under DDP, so there every rank back-propagates a zero
        loss over all trainable parameters (the reducer sees each one) and the gradients are
        dropped before the optimizer step (:meth:`on_before_optimizer_step`), which then
        changes nothing; with gradient accumulation the whole window is dropped.
        """
        trainer = attached_trainer(self)
        if trainer is None or trainer.world_size == 1:
            return None
        self._drop_gradients = True
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.stack([p.reshape(-1)[:1].sum() * 0.0 for p in trainable]).sum()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop the gradients of a step that ``nan_policy="skip_batch"`` skipped under DDP."""
        if self._drop_gradients:
            self._drop_gradients = False
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None

    def on_train_epoch_start(self) -> None:
        self._epoch_skips = 0

    def on_train_epoch_end(self) -> None:
        """Log ``train/skipped_batches`` (``nan_policy="skip_batch"``); check the validation loaders."""
        if self._nan_policy == "skip_batch":
            self.log("train/skipped_batches", float(self._epoch_skips), on_step=False, on_epoch=True)
        self._check_loaders("val")

    # -------------------------------------------------------------- evaluation
    def evaluation_step(
        self, stage: Stage, batch: Any, dataloader_idx: int = 0, batch_idx: int | None = None
    ) -> torch.Tensor | None:
        """Cross-entropy and accuracy of one labelled evaluation batch, logged under :meth:`eval_prefix`.

        Returns the loss, or ``None`` for a batch without (labelled) samples.
        """
        parsed = split_batch(batch, type(self).__name__)
        logits = self(parsed.x)
        self._check_logits(logits)
        y = parsed.y
        if y is None:
            return None
        self.check_batch_labels(stage, y, logits.shape[-1], batch_idx, dataloader_idx)
        if self._ignore_index is not None:
            labelled = y != self._ignore_index
            if not bool(labelled.any()):
                return None
            logits, y = logits[labelled], y[labelled]
        loss = F.cross_entropy(logits.float(), y)
        options = {"add_dataloader_idx": False, "prog_bar": dataloader_idx == 0, "batch_size": len(y)}
        self.log(
            f"{self.eval_prefix(stage, dataloader_idx)}/loss", loss, on_epoch=True, sync_dist=True, **options
        )
        self.log_accuracy(stage, logits, y, dataloader_idx, **options)
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        return self.evaluation_step("val", batch, dataloader_idx, batch_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        return self.evaluation_step("test", batch, dataloader_idx, batch_idx)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Return class probabilities ``(N, num_classes)``."""
        return self(split_batch(batch, type(self).__name__).x).softmax(dim=-1)


def _check_lr(owner: str, lr: float | None) -> None:
    if lr is not None and (
        isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0
    ):
        raise ValueError(
            f"{owner}(lr={lr!r}) must be a finite number > 0 (the base learning rate), or None to use the "
            "optimizer's own lr."
        )


def _metric_key(stage: str, dataloader_idx: int) -> str:
    return f"{stage}_{dataloader_idx}"  # never a bare stage: ModuleDict has a ``train`` method
