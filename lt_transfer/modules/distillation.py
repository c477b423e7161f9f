"""DistillationModule: train a student against a frozen teacher (KD, DKD, attention transfer).

The teacher is a registered sub-module, so it follows the student to the Trainer's device
and precision (``.to()``, ``"bf16-true"`` conversion, autocast under ``"16-mixed"`` /
``"bf16-mixed"``), but it is frozen (``requires_grad=False``), kept in eval mode for the
whole fit, never handed to the optimizer and, unless ``save_teacher=True``, left out of
checkpoints. The loss- and teaching-specific arguments are checked in
:mod:`~lt_transfer.modules._distillation_arguments`; the teaching views (function matching)
come from :mod:`~lt_transfer.modules._teaching`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lt_transfer._lightning_compat import attached_trainer, cli_hparams_active, without_cli_hparams
from lt_transfer.backbones import architecture_only, architecture_only_active, load_teacher
from lt_transfer.batches import Input, batch_size, split_batch
from lt_transfer.losses.attention_transfer import attention_transfer_loss
from lt_transfer.losses.distillation import HintLoss, kd_loss
from lt_transfer.losses.dkd import dkd_terms
from lt_transfer.modules._base import ClassificationModule, NanPolicy
from lt_transfer.modules._distillation_arguments import (
    DistillationLossName,
    MixKind,
    Teaching,
    check_distillation_arguments,
    resolve_distillation_arguments,
)
from lt_transfer.modules._hints import capture_outputs, output_width
from lt_transfer.modules._teacher_cache import TeacherOutputCache
from lt_transfer.modules._teaching import (
    MixedViews,
    declared_augmentation,
    mix_views,
    mixed_cross_entropy,
    step_seed,
)
from lt_transfer.optim import no_decay_parameter_ids, param_groups_for

__all__ = ["DistillationModule", "TeachingMode"]

_TEACHER_PREFIX = "teacher."
#: Checkpoint entry of the module's own state (the seed of the function-matching views).
_STATE_KEY = "lt_transfer_distillation"
#: How the teacher saw the training batches (:attr:`DistillationModule.teaching_mode`).
TeachingMode = Literal["consistent", "function_matching", "cached"]
#: Layers that never output spatial maps (attention transfer needs (N, C, H, W) maps).
_VECTOR_LAYERS = (nn.Linear, nn.Flatten, nn.BatchNorm1d)


class DistillationModule(ClassificationModule):
    r"""Knowledge distillation: a student learns from labels and from a frozen teacher.

    The loss mixes the label loss with a teacher term chosen by ``loss``, plus an optional
    FitNets hint (Romero et al. 2015):

    .. math::

        \mathcal{L} = \alpha\,\operatorname{CE}(z^s, y) + (1 - \alpha)\,\mathcal{L}_{teacher}
            + \lambda_{hint}\,\lVert r(u^s) - u^t \rVert^2

    where :math:`\mathcal{L}_{teacher}` is

    * ``loss="kd"`` (Hinton et al. 2015): :math:`T^2\,\operatorname{KL}(\sigma(z^t/T)\Vert
      \sigma(z^s/T))` (:func:`~lt_transfer.losses.kd_loss`; ``batchmean``);
    * ``loss="dkd"`` (Zhao et al., CVPR 2022): :math:`T^2(\alpha_{dkd}\,\mathrm{TCKD} +
      \beta_{dkd}\,\mathrm{NCKD})` (:func:`~lt_transfer.losses.dkd_loss`), times a linear
      warm-up over ``dkd_warmup_epochs``; unlabelled samples take the teacher's top class as
      their target class. The paper's ``CE + DKD`` is ``alpha=0.5`` with twice the learning rate;
    * ``loss="at"`` (Zagoruyko & Komodakis, ICLR 2017): the sum over ``at_layers`` pairs of
      :func:`~lt_transfer.losses.attention_transfer_loss` (``at_beta``/2 times the mean
      squared difference of the normalised spatial attention maps); no logits of the teacher.

    A batch without labels (or samples labelled ``ignore_index``) trains with the teacher term
    only, with the same weight ``1 - alpha``, so unlabelled images (Hinton's *transfer set*)
    can be mixed in.

    **Teaching** (Beyer et al., "Knowledge distillation: A good teacher is patient and
    consistent", CVPR 2022). Without the output cache the teacher is always *consistent*: it
    runs on exactly the view the student sees, augmentation included, at every step.

    * ``teaching=None`` (default): consistent, unless ``cache_teacher_outputs=True`` serves the
      teacher's logits of each sample from a cache ("fixed teacher"), which is valid only for
      un-augmented data. When the DataModule declares training augmentation (its ``augment``
      setting, e.g. ``DigitsDataModule(augment="light")``; read at fit start), the cache is
      refused with an error, so augmented data is always taught consistently. Plain loaders
      without such a DataModule are not inspected: the cache's per-epoch check (the teacher
      re-run on a cached batch) then finds augmentation and raises.
    * ``teaching="consistent"``: the same, stated explicitly; the cache is refused at once.
    * ``teaching="function_matching"``: each training batch is replaced by a mixed view of itself
      (``mix="mixup"``, the default, or ``"cutmix"``, weight drawn from ``Beta(mix_alpha,
      mix_alpha)``) and fed to student and teacher alike; the label loss weighs each image's
      labels by their share of the mix, DKD uses the teacher's top class of the mixed image
      (``train/acc`` is not logged for mixed views). The views are drawn from a seed kept in
      checkpoints and the trainer's counters, so a resumed run mixes as an uninterrupted one.
      Floating-point inputs only.

    :attr:`teaching_mode` says which applied. Being *patient* (long schedules) is up to the
    Trainer's ``max_epochs``.

    Batches are read by :func:`lt_transfer.batches.split_batch`: ``x``, ``(x,)``, ``(x, y)``,
    ``(x, y, index)``, dicts (``{"image": x, "label": y, "index": i}``, ``{"x", "y"}``) or
    tokenizer dicts.

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
    Only valid for a fixed, *un-augmented* training set (see teaching above): at the first
    fully cached batch of every epoch the teacher is re-run and the cache compared with its
    output; a mismatch (augmentation, changed data) raises. The cache holds ``num_samples ×
    num_classes`` floats on the model's device, is rebuilt at the start of each ``fit`` and is
    never checkpointed. It serves logits only: not with ``loss="at"`` or hints.

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
        loss: the teacher term: ``"kd"``, ``"dkd"`` or ``"at"`` (see above).
        alpha: weight of the hard (label) loss in ``[0, 1]``; ``1 - alpha`` weights the teacher term.
        temperature: softmax temperature ``T > 0`` of ``"kd"`` and ``"dkd"`` (``None``: 4).
        dkd_alpha: DKD only: weight of the target-class term (``None``: 1, the paper's).
        dkd_beta: DKD only: weight of the non-target-class term (``None``: 8, the paper's
            CIFAR-100 value).
        dkd_warmup_epochs: DKD only: epochs over which the DKD term's weight rises linearly
            to 1, ``min((epoch + 1) / dkd_warmup_epochs, 1)`` from the trainer's epoch
            (``None``: 0, no warm-up; the paper: 20 of 240).
        at_layers: AT only (required): ``[[student_layer, teacher_layer], ...]`` names of
            sub-modules (as in ``named_modules()``) whose ``(N, C, H, W)`` outputs are matched;
            channel counts may differ.
        at_beta: AT only: :math:`\beta` of the AT loss (``None``: 1000, the paper's).
        at_interpolate: AT only: resize the student's attention map to the teacher's when
            their spatial sizes differ (``None``: False, a size mismatch is an error).
        teaching: ``None``, ``"consistent"`` or ``"function_matching"`` (see above).
        mix: function matching only: ``"mixup"`` or ``"cutmix"`` (``None``: mixup).
        mix_alpha: function matching only: the mixing weight's ``Beta(mix_alpha, mix_alpha)``
            (``None``: 1, uniform).
        class_mapping: for each student class, the index of the teacher class it corresponds
            to; the teacher's logits are restricted to these columns (and re-normalised by the
            softmax). Required when the class counts differ; a mismatch without it is an error.
        hint_layers: ``[student_layer, teacher_layer]``: names of sub-modules (as in
            ``named_modules()``) whose outputs feed the hint loss.
        hint_widths: ``[student_width, teacher_width]`` channel counts of the hint layers;
            inferred for Linear, Conv, norm and :class:`~lt_transfer.Backbone` layers.
        hint_weight: :math:`\lambda_{hint}` > 0; given exactly when ``hint_layers`` is.
        cache_teacher_outputs: cache the teacher's logits per sample index (see above).
        save_teacher: keep the teacher's weights in checkpoints.
        ignore_index: label value of unlabelled samples.
        optimizer: optimizer factory taking param groups.
        scheduler: optional lr-scheduler factory.
        scheduler_interval: step the scheduler each ``"epoch"`` or ``"step"``.
        scheduler_monitor: metric for schedulers that need one.
        eval_names: names of several validation/test loaders (default: the datamodule's
            ``eval_names``); one loader logs ``val/loss`` and ``val/acc``.
        trust_checkpoint: for a checkpoint-path teacher only: read it with
            ``weights_only=False``, which runs any code its pickle holds (warns). Checkpoints of
            lt_transfer's modules never need it; a file that does is refused by default with an
            error naming this argument.
        nan_policy: on a non-finite training loss, ``"raise"`` an error naming the batch and
            what was non-finite (input, teacher logits, student), ``"skip_batch"`` (no optimizer
            step for it) or ``"warn"`` (train on it anyway). The teacher cache never keeps a
            non-finite row.
        lr: base learning rate in place of the optimizer's own (``None``: the optimizer's);
            ``Tuner.lr_find`` sets it.

    Raises:
        ValueError: inconsistent arguments (named in the message), e.g. an argument of
            another loss, ``loss="at"`` without ``at_layers`` or with a layer that has no
            spatial map, DKD with fewer than 2 classes, the cache with consistent teaching or
            function matching; student and teacher sharing parameters.

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
        >>> dkd = DistillationModule(student, teacher, loss="dkd", dkd_beta=2.0, teaching="function_matching")
        >>> dkd.teaching_mode, dkd.hparams.temperature  # None: the default temperature, 4
        ('function_matching', None)
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | str,
        teacher_weights: str | None = None,
        teacher_class: str | None = None,
        num_classes: int | None = None,
        loss: DistillationLossName = "kd",
        alpha: float = 0.5,
        temperature: float | None = None,
        dkd_alpha: float | None = None,
        dkd_beta: float | None = None,
        dkd_warmup_epochs: int | None = None,
        at_layers: list[list[str]] | None = None,
        at_beta: float | None = None,
        at_interpolate: bool | None = None,
        teaching: Teaching | None = None,
        mix: MixKind | None = None,
        mix_alpha: float | None = None,
        class_mapping: list[int] | None = None,
        hint_layers: list[str] | None = None,
        hint_widths: list[int] | None = None,
        hint_weight: float | None = None,
        cache_teacher_outputs: bool = False,
        save_teacher: bool = False,
        ignore_index: int = -1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        scheduler_monitor: str = "val/loss",
        eval_names: list[str] | None = None,
        trust_checkpoint: bool = False,
        nan_policy: NanPolicy = "raise",
        lr: float | None = None,
    ) -> None:
        super().__init__(
            num_classes=num_classes, optimizer=optimizer, scheduler=scheduler, eval_names=eval_names,
            scheduler_interval=scheduler_interval, scheduler_monitor=scheduler_monitor,
            ignore_index=ignore_index, nan_policy=nan_policy, lr=lr,
        )
        from_cli = cli_hparams_active()
        # factories and module objects are not plain data: checkpoints stay loadable with
        # torch.load(weights_only=True) (the CLI saves its config, optimizer included, anyway)
        ignore = ["optimizer", "scheduler"] + ([] if from_cli else ["student"])
        if isinstance(teacher, nn.Module) and not from_cli:
            ignore.append("teacher")
        self.save_hyperparameters(ignore=ignore)
        given = {
            "temperature": temperature,
            "dkd_alpha": dkd_alpha,
            "dkd_beta": dkd_beta,
            "dkd_warmup_epochs": dkd_warmup_epochs,
            "at_layers": at_layers,
            "at_beta": at_beta,
            "at_interpolate": at_interpolate,
            "mix": mix,
            "mix_alpha": mix_alpha,
        }
        check_distillation_arguments(type(self).__name__, loss, teaching, cache_teacher_outputs, given)
        self._settings = resolve_distillation_arguments(given)
        _check_arguments(student, num_classes, alpha, class_mapping, loss)
        _check_hint_arguments(alpha, hint_layers, hint_widths, hint_weight, cache_teacher_outputs)

        # While a checkpoint is loaded, backbones are built without their weights (the checkpoint
        # holds them); a teacher the checkpoint does not hold (save_teacher=False) loads its own.
        with without_cli_hparams(), architecture_only(architecture_only_active() and save_teacher):
            self.teacher = load_teacher(
                teacher, teacher_weights, teacher_class, trust_checkpoint=trust_checkpoint
            )
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
        if at_layers is not None:
            self._check_at_layers(at_layers)

        self._teacher_cache = TeacherOutputCache()
        self.teacher_forward_samples = 0  # samples the teacher ran on in the current fit
        # seed of the function-matching views (checkpointed): seed_everything makes it reproducible
        self._mix_seed = int(torch.initial_seed()) % 2**63
        self._fit_teaching: TeachingMode | None = None

    # --------------------------------------------------------------------- setup
    def _layer_pair(self, argument: str, pair: list[str]) -> tuple[nn.Module, nn.Module]:
        """The student's and the teacher's sub-modules named by ``pair``, or an error naming ``argument``."""
        found = []
        for role, model, name in (("student", self.student, pair[0]), ("teacher", self.teacher, pair[1])):
            try:
                found.append(model.get_submodule(name))
            except AttributeError as error:
                names = [n for n, _ in model.named_modules() if n][:12]
                raise ValueError(
                    f"DistillationModule({argument}): the {role} has no sub-module {name!r}; some of its "
                    f"names: {names}."
                ) from error
        return found[0], found[1]

    def _build_hint(self, layers: list[str], widths: list[int] | None) -> HintLoss:
        if len(layers) != 2:
            raise ValueError(
                f"DistillationModule(hint_layers={layers!r}) must be [student_layer, teacher_layer]."
            )
        found = self._layer_pair(f"hint_layers={layers!r}", layers)
        if widths is None:
            inferred = [output_width(module) for module in found]
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

    def _check_at_layers(self, layers: list[list[str]]) -> None:
        for pair in layers:
            for name, module in zip(pair, self._layer_pair(f"at_layers={layers!r}", pair), strict=True):
                if isinstance(module, _VECTOR_LAYERS):
                    raise ValueError(
                        f"DistillationModule(at_layers={layers!r}): {name!r} is a {type(module).__name__}, "
                        "whose output has no spatial map; attention transfer needs (N, C, H, W) maps: name "
                        "convolutional blocks before global pooling (use hint_layers for vectors)."
                    )

    def train(self, mode: bool = True) -> DistillationModule:
        """Set the student's mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    @property
    def teaching_mode(self) -> TeachingMode:
        """How the teacher sees the training batches: ``"consistent"``, ``"function_matching"`` or
        ``"cached"`` (the output cache); during and after ``fit``, what that fit resolved.

        Example:
            >>> module = DistillationModule(nn.Linear(4, 3), nn.Linear(4, 3), cache_teacher_outputs=True)
            >>> module.teaching_mode
            'cached'
        """
        if self._fit_teaching is not None:
            return self._fit_teaching
        if self.hparams.teaching is not None:
            return self.hparams.teaching
        return "cached" if self.hparams.cache_teacher_outputs else "consistent"

    def _resolve_teaching(self) -> TeachingMode:
        mode = self.teaching_mode
        if mode != "cached":
            return mode
        trainer = attached_trainer(self)
        augmentation = declared_augmentation(trainer.datamodule if trainer is not None else None)
        if augmentation is not None:
            raise ValueError(
                f"DistillationModule(cache_teacher_outputs=True): the training data is augmented "
                f"({augmentation}), so each step shows the student a new view, which the cached logits "
                "of an earlier view do not describe (the teacher must see the student's view: consistent "
                "teaching). Pass cache_teacher_outputs=False, or train on un-augmented data "
                "(augment='none')."
            )
        return mode

    def on_fit_start(self) -> None:
        """Resolve the teaching mode (the cache refuses augmented data); reset the teacher-output cache."""
        super().on_fit_start()
        self._fit_teaching = None
        self._fit_teaching = self._resolve_teaching()
        self._teacher_cache.reset()
        self.teacher_forward_samples = 0

    # --------------------------------------------------------------------- model
    def forward(self, x: Input) -> torch.Tensor:
        """Return the student's logits."""
        with self.explained_channel_errors(x):
            return self.student(x)

    @torch.no_grad()
    def teacher_logits(self, x: Input) -> torch.Tensor:
        """Run the frozen teacher (eval mode, no grad), mapped to the student's classes."""
        if self.teacher.training:  # only reachable if user code flipped it; keep it frozen
            self.teacher.eval()
        with self.explained_channel_errors(x):
            output = self.teacher(x)
        if not isinstance(output, torch.Tensor):
            output = getattr(output, "logits", output)
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"DistillationModule: the teacher returned {type(output).__name__}; it must return a "
                "logits tensor (or an object with .logits)."
            )
        self.teacher_forward_samples += batch_size(x)
        if self._class_index is not None:
            if int(self._class_index.max()) >= output.shape[-1]:
                raise ValueError(
                    f"DistillationModule(class_mapping=...) refers to teacher class "
                    f"{int(self._class_index.max())}, but the teacher has {output.shape[-1]} classes."
                )
            output = output.index_select(-1, self._class_index)
        return output

    def _teacher_outputs(self, x: Input, index: torch.Tensor | None) -> torch.Tensor:
        if not self.hparams.cache_teacher_outputs:
            return self.teacher_logits(x)
        if index is None:
            raise ValueError(
                "DistillationModule(cache_teacher_outputs=True) needs the sample index in each training "
                "batch: (x, y, index) or a dict with 'index' (wrap the dataset so it returns the index)."
            )
        return self._teacher_cache.lookup(x, index, self.teacher_logits, self.current_epoch)

    def _feature_layers(self) -> dict[str, tuple[nn.Module, str]]:
        """The layers whose outputs the step records: the hint pair and the AT pairs, by role."""
        layers: dict[str, tuple[nn.Module, str]] = {}
        if self.hint is not None:
            student_layer, teacher_layer = self.hparams.hint_layers
            layers["hint_student"] = (self.student, student_layer)
            layers["hint_teacher"] = (self.teacher, teacher_layer)
        for i, (student_layer, teacher_layer) in enumerate(self.hparams.at_layers or ()):
            layers[f"at_student_{i}"] = (self.student, student_layer)
            layers[f"at_teacher_{i}"] = (self.teacher, teacher_layer)
        return layers

    def _check_outputs(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
        self._check_logits(student_logits)
        width = student_logits.shape[-1]
        if self.hparams.loss == "dkd" and width < 2:
            raise ValueError(
                f"DistillationModule(loss='dkd'): the student outputs {width} logit(s); DKD needs at least "
                "2 classes (a target class and a non-target class). Use loss='kd' or a 2-class head."
            )
        if teacher_logits.shape[-1] != width:
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

    # ----------------------------------------------------------------- training
    def _mixed_views(self, x: Input, batch_idx: int) -> MixedViews | None:
        if self.teaching_mode != "function_matching":
            return None
        seed = step_seed(self._mix_seed, self.current_epoch, batch_idx, self.global_rank)
        return mix_views(x, self._settings["mix"], self._settings["mix_alpha"], seed)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        parsed = split_batch(batch, type(self).__name__)
        x, y = parsed.x, parsed.y
        views = self._mixed_views(x, batch_idx)
        if views is not None:
            x = views.x
        with capture_outputs(self._feature_layers()) as features:
            student_logits = self(x)
            teacher_logits = self._teacher_outputs(x, parsed.index)
        self._check_outputs(student_logits, teacher_logits)
        if y is not None:
            self.check_batch_labels("train", y, student_logits.shape[-1], batch_idx)
        hp = self.hparams
        hard, num_labelled = self._hard_loss(student_logits, y, views)
        soft, parts = self._teacher_term(student_logits, teacher_logits, y, views, features)
        loss = (1.0 - hp.alpha) * soft
        if num_labelled:
            loss = hp.alpha * hard + loss
        size = batch_size(x)
        hint = None
        if self.hint is not None:
            hint = self._hint_loss(features["hint_student"], features["hint_teacher"])
            loss = loss + hp.hint_weight * hint
        checked = {"input": x, "labels": y, "teacher logits": teacher_logits}
        if self.checked_loss(loss, batch_idx, checked) is None:
            return self.skipped_step_output()
        if hint is not None:
            self.log("train/hint", hint, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/soft", soft, batch_size=size)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=size)
        if num_labelled and y is not None:
            self.log("train/hard", hard, batch_size=num_labelled)
            if views is None:
                labelled = y != hp.ignore_index
                self.log_accuracy("train", student_logits[labelled], y[labelled])
        agreement = (student_logits.detach().argmax(-1) == teacher_logits.argmax(-1)).float().mean()
        self.log("train/agreement", agreement, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        return loss

    def _hard_loss(
        self, logits: torch.Tensor, y: torch.Tensor | None, views: MixedViews | None
    ) -> tuple[torch.Tensor, int]:
        """The label loss and the number of rows it covers (0: no labelled sample in the batch)."""
        ignore_index = self.hparams.ignore_index
        if y is None:
            return logits.new_zeros((), dtype=torch.float32), 0
        if views is not None:
            return mixed_cross_entropy(logits, y, views, ignore_index)
        num_labelled = int((y != ignore_index).sum())
        if num_labelled == 0:
            return logits.new_zeros((), dtype=torch.float32), 0
        return F.cross_entropy(logits.float(), y, ignore_index=ignore_index), num_labelled

    def _teacher_term(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        y: torch.Tensor | None,
        views: MixedViews | None,
        features: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The term toward the teacher chosen by ``loss``, and its parts to log."""
        settings, loss = self._settings, self.hparams.loss
        if loss == "kd":
            return kd_loss(student_logits, teacher_logits, settings["temperature"], validate_args=False), {}
        if loss == "dkd":
            terms = dkd_terms(
                student_logits,
                teacher_logits,
                None if views is not None else y,  # a mixed image's target: the teacher's top class
                temperature=settings["temperature"],
                alpha=settings["dkd_alpha"],
                beta=settings["dkd_beta"],
                ignore_index=self.hparams.ignore_index,
                validate_args=False,
            )
            warmup = settings["dkd_warmup_epochs"]
            weight = min((self.current_epoch + 1) / warmup, 1.0) if warmup else 1.0
            return weight * terms.total, {"tckd": terms.tckd, "nckd": terms.nckd}
        total = student_logits.new_zeros((), dtype=torch.float32)
        for i, pair in enumerate(self.hparams.at_layers):
            student_maps, teacher_maps = features[f"at_student_{i}"], features[f"at_teacher_{i}"]
            self._check_attention_maps(pair, student_maps, teacher_maps)
            total = total + attention_transfer_loss(
                student_maps,
                teacher_maps,
                beta=settings["at_beta"],
                interpolate=settings["at_interpolate"],
                validate_args=False,
            )
        return total, {"at": total}

    def _check_attention_maps(self, pair: list[str], student: torch.Tensor, teacher: torch.Tensor) -> None:
        shapes = f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        if student.ndim < 3 or teacher.ndim < 3:
            raise ValueError(
                f"DistillationModule(at_layers=[..., {pair!r}, ...]): the layers output {shapes}, but "
                "attention transfer needs (N, C, H, W) feature maps: name convolutional blocks before "
                "global pooling (use hint_layers for feature vectors)."
            )
        if student.ndim != teacher.ndim or len(student) != len(teacher):
            raise ValueError(
                f"DistillationModule(at_layers=[..., {pair!r}, ...]): the layers output {shapes}; they "
                "need the same batch size and number of spatial dimensions."
            )
        if student.shape[2:] != teacher.shape[2:]:
            if not self._settings["at_interpolate"]:
                raise ValueError(
                    f"DistillationModule(at_layers=[..., {pair!r}, ...]): the layers output {shapes}, "
                    "maps of different spatial sizes; pair layers of the same resolution or pass "
                    "at_interpolate=True to resize the student's attention map."
                )
            if student.ndim > 5:
                raise ValueError(
                    f"DistillationModule(at_interpolate=True) resizes 1-, 2- or 3-D maps; the layers of "
                    f"{pair!r} output {shapes}."
                )

    def _hint_loss(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        assert self.hint is not None
        if (
            student_features.shape[1] != self.hint.student_width
            or teacher_features.shape[1] != self.hint.teacher_width
        ):
            raise ValueError(
                f"DistillationModule(hint_layers={self.hparams.hint_layers}): the layers output "
                f"{tuple(student_features.shape)} and {tuple(teacher_features.shape)}, but the hint "
                f"projection expects widths {[self.hint.student_width, self.hint.teacher_width]}; pass "
                "hint_widths=[student_width, teacher_width]."
            )
        return self.hint(student_features, teacher_features)

    # --------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the teacher's weights unless ``save_teacher=True``; keep the seed of the mixed views."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[_STATE_KEY] = {"mix_seed": self._mix_seed}
        if not self.hparams.save_teacher:
            state = checkpoint["state_dict"]
            checkpoint["state_dict"] = type(state)(
                (k, v) for k, v in state.items() if not k.startswith(_TEACHER_PREFIX)
            )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Fill in this module's teacher when the checkpoint was saved without it; restore the mix seed."""
        super().on_load_checkpoint(checkpoint)
        self._mix_seed = int(checkpoint.get(_STATE_KEY, {}).get("mix_seed", self._mix_seed))
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


def _check_arguments(
    student: nn.Module,
    num_classes: int | None,
    alpha: float,
    class_mapping: list[int] | None,
    loss: str,
) -> None:
    if not isinstance(student, nn.Module):
        raise TypeError(
            f"DistillationModule(student=...) must be an nn.Module, got {type(student).__name__}."
        )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(
            f"DistillationModule(alpha={alpha!r}) must be in [0, 1] (weight of the label loss; "
            "1 - alpha weights the teacher term)."
        )
    if loss == "dkd" and num_classes is not None and not isinstance(num_classes, bool) and num_classes < 2:
        raise ValueError(
            f"DistillationModule(loss='dkd', num_classes={num_classes!r}): DKD needs at least 2 classes "
            "(a target class and a non-target class)."
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


def _check_hint_arguments(
    alpha: float,
    hint_layers: list[str] | None,
    hint_widths: list[int] | None,
    hint_weight: float | None,
    cache_teacher_outputs: bool,
) -> None:
    if alpha == 1 and hint_weight is None:
        raise ValueError(
            "DistillationModule(alpha=1.0) ignores the teacher entirely (pure label loss); use "
            "TransferClassifier, or lower alpha."
        )
    if hint_weight is not None and not hint_weight > 0:
        raise ValueError(
            f"DistillationModule(hint_weight={hint_weight}) must be > 0 (or None without hints)."
        )
    if (hint_layers is None) != (hint_weight is None):
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
