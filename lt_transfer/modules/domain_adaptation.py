"""DomainAdaptationModule: DANN, multi-kernel MMD and CORAL on labelled source + unlabelled target.

One LightningModule covers the standard unsupervised domain adaptation recipes on a shared
feature extractor ``G`` (a :class:`~lt_transfer.Backbone`) and label head ``C``:

* ``"source_only"``: cross-entropy on the source only (the baseline; the target batch is
  not forwarded at all);
* ``"dann"``: + ``trade_off *`` the domain-adversarial loss of a discriminator behind a
  gradient reversal layer whose coefficient follows the schedule (Ganin & Lempitsky 2015);
* ``"mmd"``: + ``trade_off * coefficient *`` multi-kernel MMD between source and target
  features (DAN, Long et al. 2015);
* ``"coral"``: + ``trade_off * coefficient *`` the CORAL loss (Sun & Saenko 2016).

The coefficient is a pure function of trainer progress (``global_step /
estimated_stepping_batches`` or ``current_epoch / max_epochs``): validation and sanity
checks do not move it, a resumed run continues it exactly, and it is logged every step as
``train/coefficient``. With ``lr_annealing=True`` the learning rate follows the paper's
``mu_0 / (1 + 10 p) ** 0.75`` through a step-wise ``LambdaLR`` whose state is checkpointed.

``backbone="lenet"`` builds :class:`~lt_transfer.backbones.LeNetBackbone`, the LeNet-size digit
network of the DANN paper's MNIST experiments.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from lt_transfer.backbones import Backbone, LeNetBackbone, build_backbone
from lt_transfer.batches import Batch, Input, batch_size, concat_inputs, slice_input, split_domain_batch
from lt_transfer.losses.adversarial import (
    CoefficientSchedule,
    DomainAdversarialLoss,
    ProgressUnit,
    ScheduleName,
    dann_lr_factor,
    domain_accuracy,
    domain_adversarial_loss,
    domain_discriminator,
    training_progress,
)
from lt_transfer.losses.coral import coral_loss
from lt_transfer.losses.mmd import MMDEstimator, mmd_loss
from lt_transfer.modules._base import ClassificationModule, NanPolicy, Stage
from lt_transfer.optim import no_decay_parameter_ids, param_groups_for, resolve_backbone_lr_scale

__all__ = ["AdaptationMethod", "DomainAdaptationModule", "METHOD_DEFAULTS"]

AdaptationMethod = Literal["dann", "mmd", "coral", "source_only"]

#: Values of the method-specific arguments when they are ``None`` (and the method uses them).
METHOD_DEFAULTS: dict[str, Any] = {
    "trade_off": 1.0,
    "trade_off_on": "loss",
    "discriminator_hidden": 256,
    "discriminator_depth": 2,
    "mmd_kernel_multipliers": (0.25, 0.5, 1.0, 2.0, 4.0),
    "mmd_estimator": "unbiased",
}
#: The methods that use each method-specific argument.
_USED_BY: dict[str, tuple[str, ...]] = {
    "trade_off": ("dann", "mmd", "coral"),
    "trade_off_on": ("dann",),
    "discriminator_hidden": ("dann",),
    "discriminator_depth": ("dann",),
    "mmd_kernel_multipliers": ("mmd",),
    "mmd_estimator": ("mmd",),
}


class _DannAnnealing:
    """``LambdaLR`` factor ``1 / (1 + 10 p) ** 0.75`` with ``p = step / total`` (picklable)."""

    def __init__(self, total_steps: float) -> None:
        self.total_steps = float(total_steps)

    def __call__(self, step: int) -> float:
        return dann_lr_factor(step / self.total_steps)


class DomainAdaptationModule(ClassificationModule):
    """Backbone + label head + alignment (DANN / MMD / CORAL / source-only).

    Training batches are ``{"source": <labelled batch>, "target": <batch>}`` (as
    :class:`~lt_transfer.data.DomainAdaptationDataModule` yields) or ``(source, target)``
    pairs, each read by :func:`lt_transfer.batches.split_batch`: ``(x, y)`` tuples, dicts
    (``{"image": x, "label": y}``) or tokenizer dicts; target labels, if present, are
    ignored. Text works as it is: the joint forward pads the two tokenizer batches to a
    common length (:func:`lt_transfer.batches.concat_inputs`). Validation/test loaders are
    labelled and named by ``eval_names`` (``val/target/acc`` is the target accuracy; an
    unnamed loader ``i`` logs ``val/<i>/acc``).

    Arguments that only one method uses default to ``None`` and are an error with another
    method; ``None`` means the value in :data:`METHOD_DEFAULTS`.

    Args:
        backbone: ``"lenet"`` (:class:`LeNetBackbone`), a ``"torchvision/<model>"`` or
            ``"hf/<model>"`` spec, or a :class:`~lt_transfer.Backbone`.
        num_classes: number of classes.
        weights: weights of a torchvision spec backbone (see ``build_backbone``).
        method: ``"dann"``, ``"mmd"``, ``"coral"`` or ``"source_only"``.
        trade_off: weight of the alignment loss (not for ``"source_only"``; ``None``: 1.0).
        schedule: coefficient schedule ``"dann"`` (``2 / (1 + exp(-gamma p)) - 1``),
            ``"constant"`` (1) or ``"linear"`` (warm-up). For DANN it is the gradient-reversal
            coefficient (the discriminator always learns at full strength); for MMD and
            CORAL it multiplies ``trade_off``.
        schedule_unit: progress per optimizer ``"step"`` or per ``"epoch"``.
        gamma: steepness of the ``"dann"`` schedule.
        warmup: warm-up fraction of the ``"linear"`` schedule.
        discriminator_hidden: hidden width of the DANN discriminator (``None``: 256).
        discriminator_depth: hidden layers of the DANN discriminator (``None``: 2).
        mmd_kernel_multipliers: Gaussian bandwidth multipliers of the multi-kernel MMD
            (``None``: ``(0.25, 0.5, 1.0, 2.0, 4.0)``).
        mmd_estimator: ``"unbiased"`` (``None``), ``"biased"`` or ``"linear"`` (the linear
            estimator pairs rows: batches are truncated to the smaller of the two sizes).
        joint_forward: forward source and target as one batch, so BatchNorm normalises with
            statistics of both domains; ``False`` forwards them separately (each domain
            with its own batch statistics in training).
        backbone_lr_scale: learning-rate multiplier of the backbone; head and discriminator
            use the full rate. ``None``: 0.1 for a pretrained backbone (``weights`` given, a
            Hugging Face model), else 1.0; the value in use is :attr:`backbone_lr_scale`.
        lr_annealing: the DANN paper's ``mu_0 / (1 + 10 p) ** 0.75`` per step.
        optimizer: optimizer factory taking param groups.
        eval_names: names of the validation/test loaders; ``None`` reads the datamodule's
            ``eval_names``.
        head_hidden: hidden widths of the label predictor (``Linear → ReLU`` each, then the
            class layer); ``()`` is one linear layer. The DANN paper's MNIST label predictor
            is ``(100, 100)`` on the flattened conv features.
        trade_off_on: DANN only (``None``: ``"loss"``). ``"loss"``: ``trade_off`` weights the
            whole domain loss, so it also slows the discriminator's own learning;
            ``"reversal"``: ``trade_off`` only scales the reversed gradient (GRL coefficient
            ``trade_off * schedule``) and the discriminator always learns at full strength,
            as in the paper's GRL formulation where ``lambda`` sits in the reversal layer.
            Identical at ``trade_off=1``.
        nan_policy: on a non-finite training loss, ``"raise"`` an error naming the batch and
            the NaN/Inf input (source or target), ``"skip_batch"`` (no optimizer step for it)
            or ``"warn"`` (train on it anyway).
        lr: base learning rate (head and discriminator; the backbone gets it times
            :attr:`backbone_lr_scale`) in place of the optimizer's own; ``None``: the
            optimizer's. ``Tuner.lr_find`` sets it.

    Raises:
        ValueError: on invalid arguments (named in the message); at fit start, on an
            unbounded training length with a progress-based schedule or an empty loader.

    Example:
        >>> model = DomainAdaptationModule("lenet", num_classes=10, method="dann")
        >>> batch = {"source": (torch.randn(4, 3, 28, 28), torch.tensor([0, 1, 2, 3])),
        ...          "target": [torch.randn(6, 3, 28, 28)]}
        >>> losses = model.compute_losses(batch, coefficient=0.5)
        >>> sorted(losses), model(torch.zeros(2, 3, 28, 28)).shape
        (['domain_acc', 'loss', 'source_acc', 'source_loss', 'transfer_loss'], torch.Size([2, 10]))
        >>> model.hparams.discriminator_hidden, model.backbone_lr_scale
        (None, 1.0)
    """

    def __init__(
        self,
        backbone: str | Backbone = "lenet",
        num_classes: int = 10,
        weights: str | None = None,
        method: AdaptationMethod = "dann",
        trade_off: float | None = None,
        schedule: ScheduleName = "dann",
        schedule_unit: ProgressUnit = "step",
        gamma: float = 10.0,
        warmup: float = 0.1,
        discriminator_hidden: int | None = None,
        discriminator_depth: int | None = None,
        mmd_kernel_multipliers: tuple[float, ...] | None = None,
        mmd_estimator: MMDEstimator | None = None,
        joint_forward: bool = True,
        backbone_lr_scale: float | None = None,
        lr_annealing: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        eval_names: list[str] | None = None,
        head_hidden: tuple[int, ...] = (),
        trade_off_on: Literal["loss", "reversal"] | None = None,
        nan_policy: NanPolicy = "raise",
        lr: float | None = None,
    ) -> None:
        name = type(self).__name__
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"{name}(num_classes={num_classes!r}) must be an int >= 2.")
        super().__init__(
            num_classes=num_classes, optimizer=optimizer, eval_names=eval_names, nan_policy=nan_policy, lr=lr
        )
        # The optimizer factory is not a plain value: keeping it out of hparams keeps checkpoints
        # loadable with torch.load(weights_only=True) (the CLI saves the full config anyway).
        ignore = ["optimizer", "backbone"] if isinstance(backbone, nn.Module) else ["optimizer"]
        self.save_hyperparameters(ignore=ignore)
        if method not in ("dann", "mmd", "coral", "source_only"):
            raise ValueError(f"{name}(method={method!r}) must be 'dann', 'mmd', 'coral' or 'source_only'.")
        given = {
            "trade_off": trade_off,
            "trade_off_on": trade_off_on,
            "discriminator_hidden": discriminator_hidden,
            "discriminator_depth": discriminator_depth,
            "mmd_kernel_multipliers": mmd_kernel_multipliers,
            "mmd_estimator": mmd_estimator,
        }
        _check_method_arguments(name, method, given)
        settings = {key: METHOD_DEFAULTS[key] if value is None else value for key, value in given.items()}
        if isinstance(head_hidden, (str, bytes)) or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in head_hidden
        ):
            raise ValueError(
                f"{name}(head_hidden={head_hidden!r}) must be a sequence of ints >= 1, e.g. (100, 100), "
                "or () for a linear head."
            )
        # validates schedule, unit, gamma and warmup with messages that name them
        self.schedule = CoefficientSchedule(schedule, schedule_unit, gamma, 1.0, warmup)
        self._trade_off = float(settings["trade_off"])
        self._trade_off_on: str = settings["trade_off_on"]
        self._mmd_kernel_multipliers = tuple(float(m) for m in settings["mmd_kernel_multipliers"])
        self._mmd_estimator: MMDEstimator = settings["mmd_estimator"]

        self.backbone = _build_backbone(name, backbone, weights)
        self._backbone_lr_scale = resolve_backbone_lr_scale(backbone_lr_scale, self.backbone.pretrained, name)
        width = self.backbone.num_features
        layers: list[nn.Module] = []
        for hidden in head_hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        # a bare Linear when head_hidden=() keeps earlier checkpoints loadable
        self.head = (
            nn.Sequential(*layers, nn.Linear(width, num_classes)) if layers else nn.Linear(width, num_classes)
        )
        self.domain_loss: DomainAdversarialLoss | None = None
        if method == "dann":
            disc = domain_discriminator(
                self.backbone.num_features, settings["discriminator_hidden"], settings["discriminator_depth"]
            )
            self.domain_loss = DomainAdversarialLoss(disc, validate_args=False)

    # ------------------------------------------------------------------ model
    @property
    def backbone_lr_scale(self) -> float:
        """The backbone learning-rate scale in use (``hparams.backbone_lr_scale`` resolved)."""
        return self._backbone_lr_scale

    def forward(self, x: Input) -> torch.Tensor:
        """Class logits ``(N, num_classes)`` for an input tensor or tokenizer dict."""
        with self.explained_channel_errors(x):
            return self.head(self.backbone(x))

    def coefficient(self) -> float:
        """The schedule's value at the trainer's current progress (no hidden state)."""
        return self.schedule(self.trainer)

    def progress(self) -> float:
        """Training progress ``p in [0, 1]`` from the trainer's counters."""
        return training_progress(self.trainer, self.hparams.schedule_unit)

    def compute_losses(self, batch: Any, coefficient: float) -> dict[str, torch.Tensor]:
        """All training losses and diagnostics of one batch at the given coefficient.

        Returns ``loss`` (the total to minimise), ``source_loss``, ``source_acc`` and, for
        the alignment methods, ``transfer_loss`` (plus ``domain_acc`` for DANN).
        """
        source, target = split_domain_batch(batch, type(self).__name__)
        return self._losses(source, target, coefficient)

    def _features(self, source: Batch, target: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        hp = self.hparams
        xs, xt = source.x, target.x
        if hp.method == "source_only":
            with self.explained_channel_errors(xs):
                return self.backbone(xs), None
        if isinstance(xs, torch.Tensor) and isinstance(xt, torch.Tensor) and xs.shape[1:] != xt.shape[1:]:
            raise ValueError(
                f"{type(self).__name__}: source inputs {tuple(xs.shape[1:])} and target inputs "
                f"{tuple(xt.shape[1:])} differ in shape; both domains share one network."
            )
        if not hp.joint_forward:
            with self.explained_channel_errors(xs):
                return self.backbone(xs), self.backbone(xt)
        joint = concat_inputs(xs, xt)
        with self.explained_channel_errors(joint):
            features = self.backbone(joint)
        n = batch_size(xs)
        return slice_input(features, 0, n), slice_input(features, n, len(features))

    def _losses(self, source: Batch, target: Batch, coefficient: float) -> dict[str, torch.Tensor]:
        if source.y is None:
            raise ValueError(
                f"{type(self).__name__}: the source batch must be labelled: (x, y) or a dict with labels "
                "under 'y', 'label' or 'labels'."
            )
        ys = source.y
        fs, ft = self._features(source, target)
        logits = self.head(fs)
        source_loss = F.cross_entropy(logits.float(), ys)
        out = {
            "source_loss": source_loss,
            "source_acc": (logits.detach().argmax(-1) == ys).float().mean(),
        }
        if ft is None:
            out["loss"] = source_loss
            return out
        method = self.hparams.method
        if method == "dann":
            assert self.domain_loss is not None
            reversal_only = self._trade_off_on == "reversal"
            ls, lt = self.domain_loss.logits(
                fs, ft, self._trade_off * coefficient if reversal_only else coefficient
            )
            transfer = domain_adversarial_loss(ls, lt)
            out["domain_acc"] = domain_accuracy(ls, lt)
            out["loss"] = source_loss + (transfer if reversal_only else self._trade_off * transfer)
        else:
            if method == "mmd":
                if self._mmd_estimator == "linear":
                    n = min(len(fs), len(ft))
                    fs, ft = fs[:n], ft[:n]
                transfer = mmd_loss(fs, ft, self._mmd_kernel_multipliers, self._mmd_estimator)
            else:
                transfer = coral_loss(fs, ft)
            out["loss"] = source_loss + self._trade_off * coefficient * transfer
        out["transfer_loss"] = transfer
        return out

    def batch_labels(self, batch: Any, stage: Stage) -> torch.Tensor | None:
        """The source labels of a training batch; the labels of an evaluation batch."""
        if stage == "train":
            return split_domain_batch(batch, type(self).__name__)[0].y
        return super().batch_labels(batch, stage)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        source, target = split_domain_batch(batch, type(self).__name__)
        if source.y is not None:
            self.check_batch_labels("train", source.y, self.hparams.num_classes, batch_idx)
        coefficient = self.coefficient() if self.hparams.method != "source_only" else 0.0
        out = self._losses(source, target, coefficient)
        parts = {"source input": source.x, "source labels": source.y, "target input": target.x}
        if self.checked_loss(out["loss"], batch_idx, parts) is None:
            return self.skipped_step_output()
        bs = batch_size(source.x)
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=bs)
        for key in ("source_loss", "source_acc", "transfer_loss", "domain_acc"):
            if key in out:
                self.log(f"train/{key}", out[key], batch_size=bs)
        if self.hparams.method != "source_only":
            self.log("train/coefficient", coefficient, batch_size=bs)
        return out["loss"]

    # ------------------------------------------------------------ safeguards
    def on_train_start(self) -> None:
        """Fail fast on an empty (source or target) training loader, an empty validation loader
        (Lightning's CombinedLoader would run with nothing useful, #21893) or an unbounded
        progress-based schedule."""
        super().on_train_start()
        if self.hparams.method != "source_only" and self.hparams.schedule != "constant":
            training_progress(self.trainer, self.hparams.schedule_unit)  # raises when unbounded

    # -------------------------------------------------------------- evaluation
    def eval_prefix(self, stage: Stage, dataloader_idx: int) -> str:
        """Log-key prefix of a loader: ``<stage>/<name>``, or ``<stage>/<index>`` for an unnamed one.

        Example:
            >>> DomainAdaptationModule(eval_names=["source", "target"]).eval_prefix("val", 1)
            'val/target'
        """
        name = self.eval_loader_name(dataloader_idx)
        return f"{stage}/{dataloader_idx if name is None else name}"

    # -------------------------------------------------------------- optimizer
    def param_groups(self) -> list[dict]:
        """Head, discriminator (full lr) and backbone (:attr:`backbone_lr_scale`) param groups.

        Example:
            >>> [g["name"] for g in DomainAdaptationModule(method="coral").param_groups()][::2]
            ['head', 'backbone']
        """
        no_decay = no_decay_parameter_ids(self)
        groups = param_groups_for("head", self.head.named_parameters(), 1.0, no_decay)
        if self.domain_loss is not None:
            groups += param_groups_for("discriminator", self.domain_loss.named_parameters(), 1.0, no_decay)
        groups += param_groups_for(
            "backbone", self.backbone.named_parameters(), self.backbone_lr_scale, no_decay
        )
        return groups

    def configure_scheduler(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """With ``lr_annealing``: the paper's step-wise ``LambdaLR`` (needs a bounded run)."""
        if not self.hparams.lr_annealing:
            return None
        total = float(self.trainer.estimated_stepping_batches)
        if not math.isfinite(total):
            raise ValueError(
                "DomainAdaptationModule(lr_annealing=True) needs a bounded training length; set "
                "Trainer(max_steps=...) or max_epochs."
            )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _DannAnnealing(total))
        return {"scheduler": scheduler, "interval": "step"}


_UNUSED_GROUPS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("discriminator_hidden", "discriminator_depth"), "DANN only"),
    (("trade_off_on",), "DANN only"),
    (("mmd_kernel_multipliers", "mmd_estimator"), "MMD only"),
    (("trade_off",), "no alignment term in source_only"),
)


def _check_method_arguments(name: str, method: str, given: dict[str, Any]) -> None:
    """Raise for a method-specific argument given to another method, or an invalid value."""
    unused = []
    for keys, why in _UNUSED_GROUPS:
        passed = [
            f"{key}={given[key]!r}" for key in keys if given[key] is not None and method not in _USED_BY[key]
        ]
        if passed:
            unused.append(f"{'/'.join(keys)} ({why}; got {', '.join(passed)})")
    if unused:
        raise ValueError(
            f"{name}(method={method!r}) does not use {', '.join(unused)}; remove them (leave them None) "
            "or choose the method that uses them."
        )
    trade_off = given["trade_off"]
    if trade_off is not None and not (
        isinstance(trade_off, (int, float)) and math.isfinite(trade_off) and trade_off >= 0
    ):
        raise ValueError(f"{name}(trade_off={trade_off!r}) must be a finite number >= 0.")
    if given["trade_off_on"] not in (None, "loss", "reversal"):
        raise ValueError(f"{name}(trade_off_on={given['trade_off_on']!r}) must be 'loss' or 'reversal'.")
    if given["mmd_estimator"] not in (None, "unbiased", "biased", "linear"):
        raise ValueError(
            f"{name}(mmd_estimator={given['mmd_estimator']!r}) must be 'unbiased', 'biased' or 'linear'."
        )
    multipliers = given["mmd_kernel_multipliers"]
    if multipliers is not None and (not multipliers or any(not m > 0 for m in multipliers)):
        raise ValueError(f"{name}(mmd_kernel_multipliers={multipliers!r}) must be non-empty and all > 0.")


def _build_backbone(name: str, backbone: str | Backbone, weights: str | None) -> Backbone:
    if isinstance(backbone, str):
        if backbone == "lenet":
            if weights is not None:
                raise ValueError(f"{name}(weights={weights!r}) does not apply to the 'lenet' backbone.")
            return LeNetBackbone()
        return build_backbone(backbone, weights)
    if isinstance(backbone, Backbone):
        if weights is not None:
            raise ValueError(f"{name}(weights=...) only applies to a spec-string backbone.")
        return backbone
    raise TypeError(
        f"{name}(backbone=...) must be 'lenet', a 'torchvision/<model>' or 'hf/<model>' spec or a Backbone, "
        f"got {type(backbone).__name__}; wrap a module with lt_transfer.build_backbone()."
    )
