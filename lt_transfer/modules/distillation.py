"""DistillationModule: train a student against a frozen teacher (Hinton et al. 2015).

The teacher is a registered sub-module, so it follows the student to the Trainer's device
and precision (``.to()``, ``"bf16-true"`` conversion, autocast under ``"16-mixed"`` /
``"bf16-mixed"``), but it is frozen (``requires_grad=False``), kept in eval mode for the
whole fit, never handed to the optimizer and, unless ``save_teacher=True``, left out of
checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lt_transfer.backbones import Backbone, load_teacher
from lt_transfer.losses.distillation import HintLoss, distillation_terms
from lt_transfer.optim import apply_lr_scales, no_decay_parameter_ids, param_groups_for

__all__ = ["DistillationModule"]

_TEACHER_PREFIX = "teacher."


def _output_width(module: nn.Module) -> int | None:
    if isinstance(module, Backbone):
        return module.num_features
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    if isinstance(module, nn.Sequential):
        for child in reversed(list(module)):
            if isinstance(child, nn.Flatten):
                return None
            width = _output_width(child)
            if width is not None:
                return width
    return None


@contextmanager
def _without_cli_hparams() -> Iterator[None]:
    """Hide LightningCLI's hparams context from modules built inside ours (a checkpoint teacher
    would otherwise save *our* config as its hyper-parameters)."""
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # pragma: no cover - older/newer Lightning
        yield
        return
    token = _given_hyperparameters.set(None)
    try:
        yield
    finally:
        _given_hyperparameters.reset(token)


def _is_cli_instantiation() -> bool:
    """True while LightningCLI instantiates the module (it passes the config as hparams)."""
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # pragma: no cover - older/newer Lightning
        return False
    return _given_hyperparameters.get() is not None


class DistillationModule(LightningModule):
    r"""Knowledge distillation: a student learns from labels and from a frozen teacher.

    The loss is Hinton et al.'s (2015) mix, plus an optional FitNets hint (Romero et al. 2015):

    .. math::

        \mathcal{L} = \alpha\,\operatorname{CE}(z^s, y)
            + (1 - \alpha)\,T^2\,\operatorname{KL}\bigl(\sigma(z^t/T)\,\Vert\,\sigma(z^s/T)\bigr)
            + \lambda_{hint}\,\lVert r(u^s) - u^t \rVert^2

    (see :func:`~lt_transfer.losses.distillation_loss` and
    :class:`~lt_transfer.losses.HintLoss`).

    Batches are ``x``, ``(x,)``, ``(x, y)``, ``(x, y, index)`` or dicts with ``"x"``, ``"y"``,
    ``"index"``. Samples labelled ``ignore_index`` and batches without labels train with the
    soft loss only, so unlabelled images (Hinton's *transfer set*) can be mixed in.

    The teacher:

    * is frozen (``requires_grad=False``) and runs under ``torch.no_grad()``;
    * stays in eval mode for the whole fit: :meth:`train` is overridden, so Lightning's
      ``model.train()`` at each epoch and its mode restore after validation never flip it
      (dropout off, BatchNorm running statistics used and never updated);
    * is never in the optimizer (checked in :meth:`configure_optimizers`); under DDP it has
      no parameter that needs a gradient, so it causes no unused-parameter error;
    * is a registered sub-module, so it moves with the student to the Trainer's device and
      precision (``"bf16-true"`` converts it too; ``"16-mixed"`` runs it under autocast);
    * is left out of saved checkpoints unless ``save_teacher=True``. Loading or resuming a
      checkpoint without it takes the teacher of the module being loaded into: pass
      ``teacher=`` (and ``student=`` when it was a module) to ``load_from_checkpoint``;
      spec and path teachers are rebuilt from the hyper-parameters.

    Lightning's "Found N module(s) in eval mode at the start of training" warning counts the
    teacher's modules: that is intended.

    With ``cache_teacher_outputs=True`` the teacher's logits are stored per sample index
    (batches must carry ``index``, e.g. ``(x, y, index)``) the first time a sample is seen and
    reused afterwards, so the teacher runs about once per sample instead of once per epoch.
    Only valid for a fixed, *un-augmented* training set: at the first fully cached batch of
    every epoch the teacher is re-run and the cache compared with its output; a mismatch
    (augmentation, changed data) raises. The cache holds ``num_samples × num_classes`` floats
    on the model's device, is rebuilt at the start of each ``fit`` and is never checkpointed.

    Args:
        student: the model to train; its forward returns ``(N, C)`` logits. A
            :class:`~lt_transfer.TransferClassifier` keeps its discriminative learning rates
            (its ``param_groups()`` are used).
        teacher: an ``nn.Module`` returning logits, a LightningModule checkpoint path, or a
            ``"torchvision/<model>"`` spec (the whole torchvision classifier); see
            :func:`load_teacher`.
        teacher_weights: weights for a spec teacher (``"DEFAULT"``, a path, ``"pkg://..."``).
        teacher_class: dotted class path for a checkpoint teacher not written by the CLI.
        num_classes: the student's class count; checked against its output when given
            (the CLI links it to ``data.num_classes``).
        alpha: weight of the hard (label) loss in ``[0, 1]``; ``1 - alpha`` weights the soft loss.
        temperature: softmax temperature ``T > 0``.
        class_mapping: for each student class, the index of the teacher class it corresponds
            to; the teacher's logits are restricted to these columns (and re-normalised by the
            softmax). Required when the class counts differ; a mismatch without it is an error.
        hint_layers: ``[student_layer, teacher_layer]``: names of sub-modules (as in
            ``named_modules()``) whose outputs feed the hint loss.
        hint_widths: ``[student_width, teacher_width]`` channel counts of the hint layers;
            inferred for Linear, Conv, norm and :class:`~lt_transfer.Backbone` layers.
        hint_weight: :math:`\lambda_{hint}`; > 0 exactly when ``hint_layers`` is given.
        cache_teacher_outputs: cache the teacher's logits per sample index (see above).
        save_teacher: keep the teacher's weights in checkpoints.
        ignore_index: label value of unlabelled samples.
        optimizer: optimizer factory taking param groups.
        scheduler: optional lr-scheduler factory.
        scheduler_interval: step the scheduler each ``"epoch"`` or ``"step"``.
        scheduler_monitor: metric for schedulers that need one.

    Raises:
        ValueError: inconsistent arguments (named in the message); student and teacher
            sharing parameters.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
        >>> student = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> module = DistillationModule(student, teacher, alpha=0.1, temperature=4.0)
        >>> module.train().teacher.training, module.student.training
        (False, True)
        >>> any(p.requires_grad for p in module.teacher.parameters())
        False
        >>> module(torch.zeros(2, 1, 4, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | str,
        teacher_weights: str | None = None,
        teacher_class: str | None = None,
        num_classes: int | None = None,
        alpha: float = 0.5,
        temperature: float = 4.0,
        class_mapping: list[int] | None = None,
        hint_layers: list[str] | None = None,
        hint_widths: list[int] | None = None,
        hint_weight: float = 0.0,
        cache_teacher_outputs: bool = False,
        save_teacher: bool = False,
        ignore_index: int = -1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        scheduler_monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        ignore = [] if _is_cli_instantiation() else ["student"]
        if isinstance(teacher, nn.Module) and not _is_cli_instantiation():
            ignore.append("teacher")
        self.save_hyperparameters(ignore=ignore)

        if not isinstance(student, nn.Module):
            raise TypeError(
                f"DistillationModule(student=...) must be an nn.Module, got {type(student).__name__}."
            )
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(
                f"DistillationModule(alpha={alpha!r}) must be in [0, 1] (weight of the label loss; "
                "1 - alpha weights the teacher's soft targets)."
            )
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ValueError(f"DistillationModule(temperature={temperature!r}) must be > 0 (typically 1-20).")
        if alpha == 1 and hint_weight == 0:
            raise ValueError(
                "DistillationModule(alpha=1.0) ignores the teacher entirely (pure label loss); use "
                "TransferClassifier, or lower alpha."
            )
        if num_classes is not None and (isinstance(num_classes, bool) or num_classes < 2):
            raise ValueError(f"DistillationModule(num_classes={num_classes!r}) must be an int >= 2 or None.")
        if class_mapping is not None:
            if len(class_mapping) < 2 or any(
                isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in class_mapping
            ):
                raise ValueError(
                    f"DistillationModule(class_mapping={class_mapping!r}) must list, for each student "
                    "class, a non-negative teacher class index (at least 2 entries)."
                )
            if num_classes is not None and len(class_mapping) != num_classes:
                raise ValueError(
                    f"DistillationModule(class_mapping=...) has {len(class_mapping)} entries but "
                    f"num_classes={num_classes}; give one teacher index per student class."
                )
        if hint_weight < 0:
            raise ValueError(f"DistillationModule(hint_weight={hint_weight}) must be >= 0.")
        if (hint_layers is None) != (hint_weight == 0):
            raise ValueError(
                f"DistillationModule(hint_layers={hint_layers!r}, hint_weight={hint_weight}): give both "
                "(a [student_layer, teacher_layer] pair and a weight > 0) or neither."
            )
        if hint_widths is not None and hint_layers is None:
            raise ValueError("DistillationModule(hint_widths=...) only applies together with hint_layers.")
        if cache_teacher_outputs and hint_layers is not None:
            raise ValueError(
                "DistillationModule(cache_teacher_outputs=True) caches logits only and cannot serve the "
                "hint loss's teacher features; disable one of them."
            )

        with _without_cli_hparams():
            self.teacher = load_teacher(teacher, teacher_weights, teacher_class)
        self.student = student
        teacher_ids = {id(p) for p in self.teacher.parameters()}
        shared = [name for name, p in student.named_parameters() if id(p) in teacher_ids]
        if shared:
            raise ValueError(
                f"DistillationModule: the student and the teacher share parameters (e.g. {shared[:3]}); "
                "freezing the teacher would freeze them. Pass a copy (copy.deepcopy) as the teacher."
            )
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.register_buffer(
            "_class_index",
            torch.tensor(class_mapping, dtype=torch.long) if class_mapping is not None else None,
            persistent=False,
        )

        self.hint: HintLoss | None = None
        if hint_layers is not None:
            self.hint = self._build_hint(hint_layers, hint_widths)

        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self._metrics = nn.ModuleDict()
        self._cache: torch.Tensor | None = None
        self._cache_filled: torch.Tensor | None = None
        self._cache_verified_epoch = -1
        self.teacher_forward_samples = 0  # samples the teacher ran on in the current fit

    # --------------------------------------------------------------------- setup
    def _build_hint(self, layers: list[str], widths: list[int] | None) -> HintLoss:
        if len(layers) != 2:
            raise ValueError(
                f"DistillationModule(hint_layers={layers!r}) must be [student_layer, teacher_layer]."
            )
        found = []
        for role, model, name in (("student", self.student, layers[0]), ("teacher", self.teacher, layers[1])):
            try:
                found.append(model.get_submodule(name))
            except AttributeError as error:
                names = [n for n, _ in model.named_modules() if n][:12]
                raise ValueError(
                    f"DistillationModule(hint_layers={layers!r}): the {role} has no sub-module {name!r}; "
                    f"some of its names: {names}."
                ) from error
        if widths is None:
            inferred = [_output_width(module) for module in found]
            if None in inferred:
                raise ValueError(
                    f"DistillationModule(hint_layers={layers!r}): cannot infer the channel count of "
                    f"{[n for n, w in zip(layers, inferred, strict=True) if w is None]}; pass "
                    "hint_widths=[student_width, teacher_width]."
                )
            widths = [int(w) for w in inferred]  # type: ignore[arg-type]
        if len(widths) != 2:
            raise ValueError(
                f"DistillationModule(hint_widths={widths!r}) must be [student_width, teacher_width]."
            )
        return HintLoss(widths[0], widths[1])

    def train(self, mode: bool = True) -> DistillationModule:
        """Set the student's mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def on_fit_start(self) -> None:
        """Reset the teacher-output cache (a new fit may bring new data)."""
        self._cache = None
        self._cache_filled = None
        self._cache_verified_epoch = -1
        self.teacher_forward_samples = 0

    # --------------------------------------------------------------------- model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the student's logits."""
        return self.student(x)

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Run the frozen teacher (eval mode, no grad), mapped to the student's classes."""
        if self.teacher.training:  # only reachable if user code flipped it; keep it frozen
            self.teacher.eval()
        output = self.teacher(x)
        if not isinstance(output, torch.Tensor):
            output = getattr(output, "logits", output)
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"DistillationModule: the teacher returned {type(output).__name__}; it must return a "
                "logits tensor (or an object with .logits)."
            )
        self.teacher_forward_samples += len(x)
        if self._class_index is not None:
            if int(self._class_index.max()) >= output.shape[-1]:
                raise ValueError(
                    f"DistillationModule(class_mapping=...) refers to teacher class "
                    f"{int(self._class_index.max())}, but the teacher has {output.shape[-1]} classes."
                )
            output = output.index_select(-1, self._class_index)
        return output

    def _teacher_outputs(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        if not self.hparams.cache_teacher_outputs:
            return self.teacher_logits(x)
        if index is None:
            raise ValueError(
                "DistillationModule(cache_teacher_outputs=True) needs the sample index in each training "
                "batch: (x, y, index) or {'x', 'y', 'index'} (wrap the dataset so it returns the index)."
            )
        index = index.to(device=x.device, dtype=torch.long)
        needed = int(index.max()) + 1
        if self._cache is None or self._cache_filled is None or len(self._cache) < needed:
            logits = self.teacher_logits(x)  # also gives the width
            size = max(needed, 0 if self._cache is None else len(self._cache))
            cache = logits.new_zeros(size, logits.shape[-1], dtype=torch.float32)
            filled = torch.zeros(size, dtype=torch.bool, device=x.device)
            if self._cache is not None and self._cache_filled is not None:
                cache[: len(self._cache)] = self._cache
                filled[: len(self._cache_filled)] = self._cache_filled
            self._cache, self._cache_filled = cache, filled
            self._cache[index] = logits.float()
            self._cache_filled[index] = True
            return logits
        missing = ~self._cache_filled[index]
        if bool(missing.any()):
            fresh = self.teacher_logits(x[missing])
            self._cache[index[missing]] = fresh.float()
            self._cache_filled[index[missing]] = True
        elif self._cache_verified_epoch != self.current_epoch:
            self._cache_verified_epoch = self.current_epoch
            fresh = self.teacher_logits(x).float()
            tolerance = 1e-3 if fresh.dtype == torch.float32 and x.dtype != torch.bfloat16 else 3e-2
            cached = self._cache[index]
            if not torch.allclose(fresh, cached, rtol=tolerance, atol=tolerance):
                error = float((fresh - cached).abs().max())
                raise RuntimeError(
                    "DistillationModule(cache_teacher_outputs=True): the teacher's outputs for cached "
                    f"samples changed (max abs difference {error:.3g}): the training data is augmented, "
                    "changed, or its indices are not stable. Disable the cache for augmented data."
                )
        return self._cache[index]

    @contextmanager
    def _capture_hints(self, enabled: bool) -> Iterator[dict[str, torch.Tensor]]:
        store: dict[str, torch.Tensor] = {}
        if not enabled or self.hint is None:
            yield store
            return
        student_layer, teacher_layer = self.hparams.hint_layers
        handles = []
        for role, model, name in (
            ("student", self.student, student_layer),
            ("teacher", self.teacher, teacher_layer),
        ):

            def hook(_module: nn.Module, _inputs: Any, output: Any, role: str = role) -> None:
                store[role] = output[0] if isinstance(output, (tuple, list)) else output

            handles.append(model.get_submodule(name).register_forward_hook(hook))
        try:
            yield store
        finally:
            for handle in handles:
                handle.remove()

    # ------------------------------------------------------------------ batches
    def _split_batch(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if isinstance(batch, torch.Tensor):
            return batch, None, None
        if isinstance(batch, (list, tuple)):
            if not 1 <= len(batch) <= 3:
                raise ValueError(
                    f"DistillationModule: a batch tuple has {len(batch)} items; expected x, (x, y) or "
                    "(x, y, index)."
                )
            padded = [*batch, None, None]
            return padded[0], padded[1], padded[2]
        if isinstance(batch, dict):
            x = next((batch[k] for k in ("x", "input", "image") if k in batch), None)
            if x is None:
                raise ValueError(
                    f"DistillationModule: a dict batch needs an 'x' entry, got keys {list(batch)}."
                )
            y = next((batch[k] for k in ("y", "label", "labels") if k in batch), None)
            return x, y, batch.get("index")
        raise TypeError(f"DistillationModule: unsupported batch type {type(batch).__name__}.")

    def _check_outputs(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None) -> None:
        width = student_logits.shape[-1]
        expected = self.hparams.num_classes
        if expected is not None and width != expected:
            raise ValueError(
                f"DistillationModule(num_classes={expected}) but the student outputs {width} logits; "
                "make them agree."
            )
        if teacher_logits is not None and teacher_logits.shape[-1] != width:
            if self._class_index is None:
                raise ValueError(
                    f"DistillationModule: the teacher has {teacher_logits.shape[-1]} classes and the student "
                    f"{width}. Pass class_mapping=[teacher index of each student class] to distil across "
                    "class sets."
                )
            raise ValueError(
                f"DistillationModule(class_mapping=...) has {teacher_logits.shape[-1]} entries but the "
                f"student has {width} classes; give one teacher index per student class."
            )

    def _check_labels(self, y: torch.Tensor, num_classes: int) -> None:
        labelled = y[y != self.hparams.ignore_index]
        if labelled.numel() and (int(labelled.min()) < 0 or int(labelled.max()) >= num_classes):
            raise ValueError(
                f"DistillationModule: labels in [{int(labelled.min())}, {int(labelled.max())}] but the "
                f"student has {num_classes} classes (unlabelled samples use ignore_index="
                f"{self.hparams.ignore_index})."
            )

    def _metric(self, stage: str, num_classes: int) -> MulticlassAccuracy:
        key = f"{stage}_acc"  # not the bare stage: ModuleDict has a ``train`` method
        if key not in self._metrics:
            metric = MulticlassAccuracy(num_classes=num_classes, average="micro")
            self._metrics[key] = metric.to(self.device)
        return self._metrics[key]

    # ----------------------------------------------------------------- training
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, index = self._split_batch(batch)
        with self._capture_hints(self.hint is not None) as hints:
            student_logits = self.student(x)
            teacher_logits = self._teacher_outputs(x, index)
        self._check_outputs(student_logits, teacher_logits)
        num_classes = student_logits.shape[-1]
        if y is not None:
            self._check_labels(y, num_classes)
        hp = self.hparams
        terms = distillation_terms(
            student_logits, teacher_logits, y, hp.alpha, hp.temperature, hp.ignore_index, validate_args=False
        )
        loss = terms.total
        if self.hint is not None:
            student_features, teacher_features = hints["student"], hints["teacher"]
            if (
                student_features.shape[1] != self.hint.student_width
                or teacher_features.shape[1] != self.hint.teacher_width
            ):
                raise ValueError(
                    f"DistillationModule(hint_layers={hp.hint_layers}): the layers output "
                    f"{tuple(student_features.shape)} and {tuple(teacher_features.shape)}, but the hint "
                    f"projection expects widths {[self.hint.student_width, self.hint.teacher_width]}; pass "
                    "hint_widths=[student_width, teacher_width]."
                )
            hint = self.hint(student_features, teacher_features)
            loss = loss + hp.hint_weight * hint
            self.log("train/hint", hint)
        batch_size = len(x)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/soft", terms.soft, batch_size=batch_size)
        if terms.num_labelled:
            self.log("train/hard", terms.hard, batch_size=terms.num_labelled)
            labelled = y != hp.ignore_index
            metric = self._metric("train", num_classes)
            metric(student_logits.detach()[labelled], y[labelled])
            self.log("train/acc", metric, on_step=False, on_epoch=True, metric_attribute="_metrics.train_acc")
        agreement = (student_logits.detach().argmax(-1) == teacher_logits.argmax(-1)).float().mean()
        self.log(
            "train/agreement", agreement, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True
        )
        return loss

    def _eval_step(self, stage: str, batch: Any) -> torch.Tensor | None:
        x, y, _ = self._split_batch(batch)
        logits = self.student(x)
        self._check_outputs(logits, None)
        if y is None:
            return None
        labelled = y != self.hparams.ignore_index
        if not bool(labelled.any()):
            return None
        self._check_labels(y, logits.shape[-1])
        logits, y = logits[labelled], y[labelled]
        loss = F.cross_entropy(logits.float(), y)
        metric = self._metric(stage, logits.shape[-1])
        metric(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log(f"{stage}/acc", metric, prog_bar=True, metric_attribute=f"_metrics.{stage}_acc")
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        return self._eval_step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        return self._eval_step("test", batch)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Return the student's class probabilities."""
        x, _, _ = self._split_batch(batch)
        return self.student(x).softmax(dim=-1)

    # --------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the teacher's weights from the checkpoint unless ``save_teacher=True``."""
        if not self.hparams.save_teacher:
            state = checkpoint["state_dict"]
            checkpoint["state_dict"] = type(state)(
                (k, v) for k, v in state.items() if not k.startswith(_TEACHER_PREFIX)
            )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Fill in this module's teacher when the checkpoint was saved without it."""
        state = checkpoint["state_dict"]
        if not any(k.startswith(_TEACHER_PREFIX) for k in state):
            for key, value in self.teacher.state_dict(prefix=_TEACHER_PREFIX).items():
                state[key] = value

    # ---------------------------------------------------------------- optimizer
    def param_groups(self) -> list[dict]:
        """Optimizer param groups: the student's (its own ``param_groups()`` if it has one) and
        the hint projection's. Never any teacher parameter."""
        student_groups = getattr(self.student, "param_groups", None)
        if callable(student_groups):
            groups = list(student_groups())
        else:
            groups = param_groups_for(
                "student", self.student.named_parameters(), 1.0, no_decay_parameter_ids(self.student)
            )
        if self.hint is not None:
            groups += param_groups_for(
                "hint", self.hint.named_parameters(), 1.0, no_decay_parameter_ids(self.hint)
            )
        teacher_ids = {id(p) for p in self.teacher.parameters()}
        if any(id(p) in teacher_ids for group in groups for p in group["params"]):
            raise RuntimeError("DistillationModule: a teacher parameter ended up in the optimizer groups.")
        if not groups:
            raise ValueError("DistillationModule: the student has no trainable parameter.")
        return groups

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.param_groups())
        apply_lr_scales(optimizer)
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": self.scheduler_factory(optimizer),
                "interval": self.hparams.scheduler_interval,
                "monitor": self.hparams.scheduler_monitor,
            },
        }
