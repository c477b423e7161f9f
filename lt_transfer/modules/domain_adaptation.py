"""DomainAdaptationModule: DANN, CDAN, MMD, CORAL, MCC, self-training on labelled source + unlabelled target.

One LightningModule covers the standard unsupervised domain adaptation recipes on a shared
feature extractor ``G`` (a :class:`~lt_transfer.Backbone`) and label head ``C``; every method
minimises the source cross-entropy plus its target term:

* ``"source_only"``: cross-entropy on the source only (the baseline; the target batch is
  not forwarded at all);
* ``"dann"``: + ``trade_off *`` the domain-adversarial loss of a discriminator behind a
  gradient reversal layer whose coefficient follows the schedule (Ganin & Lempitsky 2015);
* ``"cdan"``: the same with a discriminator conditioned on the predictions through the
  multilinear map (randomised for wide features) and, with ``entropy_conditioning``, the
  entropy weights of CDAN+E (Long et al. 2018; :mod:`lt_transfer.losses.cdan`);
* ``"mmd"``: + ``trade_off * coefficient *`` multi-kernel MMD between source and target
  features (DAN, Long et al. 2015);
* ``"coral"``: + ``trade_off * coefficient *`` the CORAL loss (Sun & Saenko 2016);
* ``"mcc"``: + ``trade_off * coefficient *`` the minimum class confusion of the target
  predictions (Jin et al. 2020); ``mcc_weight`` adds the same term to any other method
  (DANN + MCC);
* ``"self_training"``: + ``trade_off * coefficient *`` the cross-entropy on target
  pseudo-labels whose confidence reaches ``pseudo_label_threshold`` (optionally FlexMatch-style
  class-balanced thresholds); a target batch that carries a strongly augmented view
  (:data:`lt_transfer.batches.STRONG_VIEW_KEYS`) is trained on it, FixMatch-style, with the
  pseudo-labels of the weak view; without one, the same view serves as both.

No method reads the target batch's labels, if it has any.

The coefficient is a pure function of trainer progress (``global_step /
estimated_stepping_batches`` or ``current_epoch / max_epochs``): validation and sanity
checks do not move it, a resumed run continues it exactly, and it is logged every step as
``train/coefficient``. Method state lives in buffers (CDAN's random matrices, the
self-training class statistics), so checkpoints carry it. With ``lr_annealing=True`` the
learning rate follows the paper's ``mu_0 / (1 + 10 p) ** 0.75`` through a step-wise
``LambdaLR`` whose state is checkpointed.

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
from lt_transfer.losses.cdan import CDANLoss, cdan_input_width, cdan_randomized_dim
from lt_transfer.losses.coral import coral_loss
from lt_transfer.losses.mcc import mcc_loss
from lt_transfer.losses.mmd import MMDEstimator, mmd_loss
from lt_transfer.losses.self_training import SelfTrainingLoss, confident_pseudo_labels
from lt_transfer.modules._adaptation_arguments import (
    ADAPTATION_METHODS,
    METHOD_DEFAULTS,
    AdaptationMethod,
    CDANMap,
    check_method_arguments,
    resolve_method_arguments,
)
from lt_transfer.modules._base import ClassificationModule, NanPolicy, Stage
from lt_transfer.optim import no_decay_parameter_ids, param_groups_for, resolve_backbone_lr_scale

#: Literature names of methods that are spelled differently here, and what to use instead.
_METHOD_HINTS = {
    "dan": "DAN (Long et al. 2015) is method='mmd'",
    "deep_coral": "Deep CORAL is method='coral'",
    "cdan+e": "CDAN+E is method='cdan' (entropy conditioning on by default)",
    "fixmatch": "FixMatch-style training is method='self_training'",
    "shot": "SHOT needs no source data: use SourceFreeAdaptationModule",
}

__all__ = ["ADAPTATION_METHODS", "AdaptationMethod", "CDANMap", "DomainAdaptationModule", "METHOD_DEFAULTS"]

_ADVERSARIAL = ("dann", "cdan")
_TRAIN_LOG_KEYS = (
    "source_loss",
    "source_acc",
    "transfer_loss",
    "domain_acc",
    "mcc_loss",
    "pseudo_label_rate",
)


class _DannAnnealing:
    """``LambdaLR`` factor ``1 / (1 + 10 p) ** 0.75`` with ``p = step / total`` (picklable)."""

    def __init__(self, total_steps: float) -> None:
        self.total_steps = float(total_steps)

    def __call__(self, step: int) -> float:
        return dann_lr_factor(step / self.total_steps)


class DomainAdaptationModule(ClassificationModule):
    """Backbone + label head + a domain-adaptation method (see the module docstring).

    Training batches are ``{"source": <labelled batch>, "target": <batch>}`` (as
    :class:`~lt_transfer.data.DomainAdaptationDataModule` yields) or ``(source, target)``
    pairs, each read by :func:`lt_transfer.batches.split_batch`: ``(x, y)`` tuples, dicts
    (``{"image": x, "label": y}``) or tokenizer dicts; target labels, if present, are
    never read. Text works as it is: the joint forward pads the two tokenizer batches to a
    common length (:func:`lt_transfer.batches.concat_inputs`). Validation/test loaders are
    labelled and named by ``eval_names`` (``val/target/acc`` is the target accuracy; an
    unnamed loader ``i`` logs ``val/<i>/acc``).

    Arguments that only some methods use default to ``None`` and are an error with another
    method; ``None`` means the value in :data:`METHOD_DEFAULTS`.

    Args:
        backbone: ``"lenet"`` (:class:`LeNetBackbone`), a ``"torchvision/<model>"`` or
            ``"hf/<model>"`` spec, or a :class:`~lt_transfer.Backbone`.
        num_classes: number of classes.
        weights: weights of a torchvision spec backbone (see ``build_backbone``).
        method: ``"dann"``, ``"cdan"``, ``"mmd"``, ``"coral"``, ``"mcc"``, ``"self_training"``
            or ``"source_only"``.
        trade_off: weight of the method's target term (not for ``"source_only"``; ``None``: 1.0).
        schedule: coefficient schedule ``"dann"`` (``2 / (1 + exp(-gamma p)) - 1``),
            ``"constant"`` (1) or ``"linear"`` (warm-up). For DANN and CDAN it is the
            gradient-reversal coefficient (the discriminator always learns at full strength);
            for the other methods (and ``mcc_weight``) it multiplies the term's weight.
        schedule_unit: progress per optimizer ``"step"`` or per ``"epoch"``.
        gamma: steepness of the ``"dann"`` schedule.
        warmup: warm-up fraction of the ``"linear"`` schedule.
        discriminator_hidden: hidden width of the DANN/CDAN discriminator (``None``: 256).
        discriminator_depth: hidden layers of the DANN/CDAN discriminator (``None``: 2).
        mmd_kernel_multipliers: Gaussian bandwidth multipliers of the multi-kernel MMD
            (``None``: ``(0.25, 0.5, 1.0, 2.0, 4.0)``).
        mmd_estimator: ``"unbiased"`` (``None``), ``"biased"`` or ``"linear"`` (the linear
            estimator pairs rows: batches are truncated to the smaller of the two sizes).
        joint_forward: forward source and target as one batch, so BatchNorm normalises with
            statistics of both domains; ``False`` (the default) forwards them separately (each
            domain with its own batch statistics in training: per-domain BatchNorm), which beat
            joint batches for DANN, CDAN and self-training on the MNIST → MNIST-M-style target
            validation split (``docs/benchmarks.md``).
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
        trade_off_on: DANN and CDAN (``None``: ``"loss"``). ``"loss"``: ``trade_off`` weights
            the whole domain loss, so it also slows the discriminator's own learning;
            ``"reversal"``: ``trade_off`` only scales the reversed gradient (GRL coefficient
            ``trade_off * schedule``) and the discriminator always learns at full strength,
            as in the paper's GRL formulation where ``lambda`` sits in the reversal layer.
            Identical at ``trade_off=1``.
        entropy_conditioning: CDAN only (``None``: ``True``, CDAN+E): weight examples by
            ``1 + exp(-H(p))`` in the discriminator loss.
        cdan_map: CDAN only (``None``: ``"auto"``): the conditioning map; ``"auto"`` is the
            paper's rule (the full ``num_features × num_classes`` multilinear map up to 4096
            wide, else the randomised map), ``"multilinear"`` or ``"randomized"``.
        randomized_dim: CDAN only (``None``: 1024): width of the randomised map.
        mcc_weight: weight of a minimum-class-confusion term added to ``"dann"``, ``"cdan"``,
            ``"mmd"``, ``"coral"`` or ``"self_training"`` (times the schedule's coefficient);
            ``None``: no such term.
        mcc_temperature: MCC's rescaling temperature, with ``method="mcc"`` or an
            ``mcc_weight`` (``None``: 2.5).
        pseudo_label_threshold: self-training only (``None``: 0.95): the confidence in
            ``(0, 1)`` a target prediction needs to become a pseudo-label.
        class_balanced_thresholds: self-training only (``None``: ``False``): lower the
            threshold of classes that get few confident predictions (FlexMatch-style,
            :class:`~lt_transfer.losses.SelfTrainingLoss`); the class statistics are buffers.
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
        >>> cdan = DomainAdaptationModule("lenet", method="cdan", mcc_weight=1.0)
        >>> sorted(cdan.compute_losses(batch, coefficient=0.5))
        ['loss', 'mcc_loss', 'source_acc', 'source_loss', 'transfer_loss']
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
        joint_forward: bool = False,
        backbone_lr_scale: float | None = None,
        lr_annealing: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        eval_names: list[str] | None = None,
        head_hidden: tuple[int, ...] = (),
        trade_off_on: Literal["loss", "reversal"] | None = None,
        entropy_conditioning: bool | None = None,
        cdan_map: CDANMap | None = None,
        randomized_dim: int | None = None,
        mcc_weight: float | None = None,
        mcc_temperature: float | None = None,
        pseudo_label_threshold: float | None = None,
        class_balanced_thresholds: bool | None = None,
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
        if method not in ADAPTATION_METHODS:
            hint = _METHOD_HINTS.get(str(method).lower())
            raise ValueError(
                f"{name}(method={method!r}) must be one of {list(ADAPTATION_METHODS)}"
                + (f"; {hint}." if hint else ".")
            )
        given = {
            "trade_off": trade_off,
            "trade_off_on": trade_off_on,
            "discriminator_hidden": discriminator_hidden,
            "discriminator_depth": discriminator_depth,
            "mmd_kernel_multipliers": mmd_kernel_multipliers,
            "mmd_estimator": mmd_estimator,
            "entropy_conditioning": entropy_conditioning,
            "cdan_map": cdan_map,
            "randomized_dim": randomized_dim,
            "mcc_weight": mcc_weight,
            "mcc_temperature": mcc_temperature,
            "pseudo_label_threshold": pseudo_label_threshold,
            "class_balanced_thresholds": class_balanced_thresholds,
        }
        check_method_arguments(name, method, given)
        settings = resolve_method_arguments(given)
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
        self._mcc_weight = None if mcc_weight is None else float(mcc_weight)
        self._mcc_temperature = float(settings["mcc_temperature"])

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
        self.domain_loss = self._build_domain_loss(method, num_classes, settings)
        self.self_training_loss: SelfTrainingLoss | None = None
        if method == "self_training":
            balanced = bool(settings["class_balanced_thresholds"])
            self.self_training_loss = SelfTrainingLoss(
                settings["pseudo_label_threshold"],
                class_balanced=balanced,
                num_classes=num_classes if balanced else None,
                validate_args=False,
            )

    def _build_domain_loss(
        self, method: str, num_classes: int, settings: dict[str, Any]
    ) -> DomainAdversarialLoss | CDANLoss | None:
        """DANN's discriminator loss, CDAN's conditional one (with its random matrices), or ``None``."""
        if method not in _ADVERSARIAL:
            return None
        features = self.backbone.num_features
        hidden, depth = settings["discriminator_hidden"], settings["discriminator_depth"]
        if method == "dann":
            return DomainAdversarialLoss(domain_discriminator(features, hidden, depth), validate_args=False)
        cdan_map = settings["cdan_map"]
        if cdan_map == "auto":  # the paper's rule: the full map up to 4096 wide
            cdan_map = "multilinear" if cdan_randomized_dim(features, num_classes) is None else "randomized"
        randomized = settings["randomized_dim"] if cdan_map == "randomized" else None
        return CDANLoss(
            domain_discriminator(cdan_input_width(features, num_classes, randomized), hidden, depth),
            features,
            num_classes,
            randomized_dim=randomized,
            entropy_conditioning=bool(settings["entropy_conditioning"]),
            validate_args=False,
        )

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
        the methods with a target term, ``transfer_loss`` (plus ``domain_acc`` for DANN,
        ``pseudo_label_rate`` for self-training and ``mcc_loss`` with an ``mcc_weight``).
        """
        source, target = split_domain_batch(batch, type(self).__name__)
        return self._losses(source, target, coefficient)

    def _features(
        self, source: Batch, target: Batch
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Source features, target features and (self-training with two views) strong-view features."""
        hp = self.hparams
        if hp.method == "source_only":
            with self.explained_channel_errors(source.x):
                return self.backbone(source.x), None, None
        strong = target.strong if hp.method == "self_training" else None
        xs, xt = source.x, target.x
        for other, what in ((xt, "target inputs"), (strong, "strong target views")):
            if (
                isinstance(xs, torch.Tensor)
                and isinstance(other, torch.Tensor)
                and xs.shape[1:] != other.shape[1:]
            ):
                raise ValueError(
                    f"{type(self).__name__}: source inputs {tuple(xs.shape[1:])} and {what} "
                    f"{tuple(other.shape[1:])} differ in shape; both domains share one network."
                )
        target_input = xt if strong is None else concat_inputs(xt, strong)
        if hp.joint_forward:
            joint = concat_inputs(xs, target_input)
            with self.explained_channel_errors(joint):
                features = self.backbone(joint)
            n = batch_size(xs)
            fs, ft = slice_input(features, 0, n), slice_input(features, n, len(features))
        else:
            with self.explained_channel_errors(xs):
                fs, ft = self.backbone(xs), self.backbone(target_input)
        if strong is None:
            return fs, ft, None
        n = batch_size(xt)
        return fs, ft[:n], ft[n:]

    def _losses(self, source: Batch, target: Batch, coefficient: float) -> dict[str, torch.Tensor]:
        if source.y is None:
            raise ValueError(
                f"{type(self).__name__}: the source batch must be labelled: (x, y) or a dict with labels "
                "under 'y', 'label' or 'labels'."
            )
        ys = source.y
        fs, ft, ft_strong = self._features(source, target)
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
        needs_logits = method not in ("dann", "mmd", "coral") or self._mcc_weight is not None
        target_logits = self.head(ft) if needs_logits else None
        if method in _ADVERSARIAL:
            transfer, weighted = self._adversarial_loss(fs, ft, logits, target_logits, coefficient, out)
        else:
            if method == "mmd":
                if self._mmd_estimator == "linear":
                    n = min(len(fs), len(ft))
                    fs, ft = fs[:n], ft[:n]
                transfer = mmd_loss(fs, ft, self._mmd_kernel_multipliers, self._mmd_estimator)
            elif method == "coral":
                transfer = coral_loss(fs, ft)
            elif method == "mcc":
                assert target_logits is not None
                transfer = mcc_loss(target_logits, self._mcc_temperature, validate_args=False)
            else:
                assert target_logits is not None
                strong_logits = target_logits if ft_strong is None else self.head(ft_strong)
                transfer = self._self_training_loss(target_logits, strong_logits, out)
            weighted = self._trade_off * coefficient * transfer
        loss = source_loss + weighted
        if self._mcc_weight is not None:
            assert target_logits is not None
            out["mcc_loss"] = mcc_loss(target_logits, self._mcc_temperature, validate_args=False)
            loss = loss + self._mcc_weight * coefficient * out["mcc_loss"]
        out["transfer_loss"] = transfer
        out["loss"] = loss
        return out

    def batch_labels(self, batch: Any, stage: Stage) -> torch.Tensor | None:
        """The source labels of a training batch; the labels of an evaluation batch."""
        if stage == "train":
            return split_domain_batch(batch, type(self).__name__)[0].y
        return super().batch_labels(batch, stage)

    def _adversarial_loss(
        self,
        fs: torch.Tensor,
        ft: torch.Tensor,
        source_logits: torch.Tensor,
        target_logits: torch.Tensor | None,
        coefficient: float,
        out: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DANN's or CDAN's domain loss and its contribution to the total (see ``trade_off_on``)."""
        reversal_only = self._trade_off_on == "reversal"
        reversal = self._trade_off * coefficient if reversal_only else coefficient
        if isinstance(self.domain_loss, CDANLoss):
            assert target_logits is not None
            transfer = self.domain_loss(fs, ft, source_logits, target_logits, reversal)
        else:
            assert self.domain_loss is not None
            ls, lt = self.domain_loss.logits(fs, ft, reversal)
            transfer = domain_adversarial_loss(ls, lt)
            out["domain_acc"] = domain_accuracy(ls, lt)
        return transfer, transfer if reversal_only else self._trade_off * transfer

    def _self_training_loss(
        self, weak_logits: torch.Tensor, strong_logits: torch.Tensor, out: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The pseudo-label loss; logs the share of confident target predictions."""
        loss_fn = self.self_training_loss
        assert loss_fn is not None
        # the thresholds this batch is judged by (the class statistics update after the loss)
        _, confident = confident_pseudo_labels(
            weak_logits, loss_fn.threshold, loss_fn.class_thresholds(), validate_args=False
        )
        out["pseudo_label_rate"] = confident.float().mean()
        return loss_fn(weak_logits.detach(), strong_logits)

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
        for key in _TRAIN_LOG_KEYS:
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
