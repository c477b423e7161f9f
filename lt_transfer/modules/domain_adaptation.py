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

:class:`LeNetBackbone` is the LeNet-size digit network of the DANN paper's MNIST
experiments, as a :class:`~lt_transfer.Backbone` (three layer groups).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lt_transfer.backbones import Backbone, LeNetBackbone, build_backbone
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
from lt_transfer.modules._evaluation import eval_loader_name, stage_accuracy
from lt_transfer.optim import apply_lr_scales, no_decay_parameter_ids, param_groups_for

__all__ = ["AdaptationMethod", "DomainAdaptationModule", "LeNetBackbone"]

AdaptationMethod = Literal["dann", "mmd", "coral", "source_only"]


class _DannAnnealing:
    """``LambdaLR`` factor ``1 / (1 + 10 p) ** 0.75`` with ``p = step / total`` (picklable)."""

    def __init__(self, total_steps: float) -> None:
        self.total_steps = float(total_steps)

    def __call__(self, step: int) -> float:
        return dann_lr_factor(step / self.total_steps)


class DomainAdaptationModule(LightningModule):
    """Backbone + label head + alignment (DANN / MMD / CORAL / source-only).

    Training batches are ``{"source": (x_s, y_s), "target": x_t or (x_t, ...)}`` (as
    :class:`~lt_transfer.data.DomainAdaptationDataModule` yields) or ``((x_s, y_s), x_t)``
    pairs; target labels, if present, are ignored. Validation/test loaders are labelled and
    named by ``eval_names`` (``val/target/acc`` is the target accuracy).

    Args:
        backbone: ``"lenet"`` (:class:`LeNetBackbone`), a ``"torchvision/<model>"`` spec,
            or a :class:`~lt_transfer.Backbone`.
        num_classes: number of classes.
        weights: weights of a torchvision spec backbone (see ``build_backbone``).
        method: ``"dann"``, ``"mmd"``, ``"coral"`` or ``"source_only"``.
        trade_off: weight of the alignment loss.
        schedule: coefficient schedule ``"dann"`` (``2 / (1 + exp(-gamma p)) - 1``),
            ``"constant"`` (1) or ``"linear"`` (warm-up). For DANN it is the gradient-reversal
            coefficient (the discriminator always learns at full strength); for MMD and
            CORAL it multiplies ``trade_off``.
        schedule_unit: progress per optimizer ``"step"`` or per ``"epoch"``.
        gamma: steepness of the ``"dann"`` schedule.
        warmup: warm-up fraction of the ``"linear"`` schedule.
        discriminator_hidden: hidden width of the DANN discriminator.
        discriminator_depth: hidden layers of the DANN discriminator.
        mmd_kernel_multipliers: Gaussian bandwidth multipliers of the multi-kernel MMD.
        mmd_estimator: ``"unbiased"``, ``"biased"`` or ``"linear"`` (the linear estimator
            pairs rows: batches are truncated to the smaller of the two sizes).
        joint_forward: forward source and target as one batch, so BatchNorm normalises with
            statistics of both domains; ``False`` forwards them separately (each domain
            with its own batch statistics in training).
        backbone_lr_scale: learning-rate multiplier of the backbone (e.g. 0.1 for a
            pretrained one); head and discriminator use the full rate.
        lr_annealing: the DANN paper's ``mu_0 / (1 + 10 p) ** 0.75`` per step.
        optimizer: optimizer factory taking param groups.
        eval_names: names of the validation/test loaders; ``None`` reads the datamodule's
            ``eval_names``.
        head_hidden: hidden widths of the label predictor (``Linear → ReLU`` each, then the
            class layer); ``()`` is one linear layer. The DANN paper's MNIST label predictor
            is ``(100, 100)`` on the flattened conv features.
        trade_off_on: DANN only. ``"loss"``: ``trade_off`` weights the whole domain loss, so
            it also slows the discriminator's own learning; ``"reversal"``: ``trade_off``
            only scales the reversed gradient (GRL coefficient ``trade_off * schedule``) and
            the discriminator always learns at full strength, as in the paper's GRL
            formulation where ``lambda`` sits in the reversal layer. Identical at
            ``trade_off=1``.

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
    """

    def __init__(
        self,
        backbone: str | Backbone = "lenet",
        num_classes: int = 10,
        weights: str | None = None,
        method: AdaptationMethod = "dann",
        trade_off: float = 1.0,
        schedule: ScheduleName = "dann",
        schedule_unit: ProgressUnit = "step",
        gamma: float = 10.0,
        warmup: float = 0.1,
        discriminator_hidden: int = 256,
        discriminator_depth: int = 2,
        mmd_kernel_multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0),
        mmd_estimator: MMDEstimator = "unbiased",
        joint_forward: bool = True,
        backbone_lr_scale: float = 1.0,
        lr_annealing: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        eval_names: list[str] | None = None,
        head_hidden: tuple[int, ...] = (),
        trade_off_on: Literal["loss", "reversal"] = "loss",
    ) -> None:
        super().__init__()
        # The optimizer factory is not a plain value: keeping it out of hparams keeps checkpoints
        # loadable with torch.load(weights_only=True) (the CLI saves the full config anyway).
        ignore = ["optimizer", "backbone"] if isinstance(backbone, nn.Module) else ["optimizer"]
        self.save_hyperparameters(ignore=ignore)
        name = "DomainAdaptationModule"
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"{name}(num_classes={num_classes!r}) must be an int >= 2.")
        if method not in ("dann", "mmd", "coral", "source_only"):
            raise ValueError(f"{name}(method={method!r}) must be 'dann', 'mmd', 'coral' or 'source_only'.")
        if not (math.isfinite(trade_off) and trade_off >= 0):
            raise ValueError(f"{name}(trade_off={trade_off!r}) must be a finite number >= 0.")
        if mmd_estimator not in ("unbiased", "biased", "linear"):
            raise ValueError(
                f"{name}(mmd_estimator={mmd_estimator!r}) must be 'unbiased', 'biased' or 'linear'."
            )
        if not mmd_kernel_multipliers or any(not m > 0 for m in mmd_kernel_multipliers):
            raise ValueError(
                f"{name}(mmd_kernel_multipliers={mmd_kernel_multipliers!r}) must be non-empty and all > 0."
            )
        if isinstance(head_hidden, (str, bytes)) or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in head_hidden
        ):
            raise ValueError(
                f"{name}(head_hidden={head_hidden!r}) must be a sequence of ints >= 1, e.g. (100, 100), "
                "or () for a linear head."
            )
        if trade_off_on not in ("loss", "reversal"):
            raise ValueError(f"{name}(trade_off_on={trade_off_on!r}) must be 'loss' or 'reversal'.")
        if not backbone_lr_scale >= 0:
            raise ValueError(f"{name}(backbone_lr_scale={backbone_lr_scale!r}) must be >= 0.")
        unused = []
        if method != "dann" and (discriminator_hidden, discriminator_depth) != (256, 2):
            unused.append("discriminator_hidden/discriminator_depth (DANN only)")
        if method != "dann" and trade_off_on != "loss":
            unused.append("trade_off_on='reversal' (DANN only)")
        if method != "mmd" and (
            tuple(mmd_kernel_multipliers) != (0.25, 0.5, 1.0, 2.0, 4.0) or mmd_estimator != "unbiased"
        ):
            unused.append("mmd_kernel_multipliers/mmd_estimator (MMD only)")
        if method == "source_only" and trade_off != 1.0:
            unused.append("trade_off (no alignment term in source_only)")
        if unused:
            raise ValueError(
                f"{name}(method={method!r}) does not use {', '.join(unused)}; remove them or "
                "choose the method that uses them."
            )
        # validates schedule, unit, gamma and warmup with messages that name them
        self.schedule = CoefficientSchedule(schedule, schedule_unit, gamma, 1.0, warmup)

        if isinstance(backbone, str):
            if backbone == "lenet":
                if weights is not None:
                    raise ValueError(f"{name}(weights={weights!r}) does not apply to the 'lenet' backbone.")
                self.backbone: Backbone = LeNetBackbone()
            else:
                self.backbone = build_backbone(backbone, weights)
        elif isinstance(backbone, Backbone):
            if weights is not None:
                raise ValueError(f"{name}(weights=...) only applies to a spec-string backbone.")
            self.backbone = backbone
        else:
            raise TypeError(
                f"{name}(backbone=...) must be 'lenet', a 'torchvision/<model>' spec or a Backbone, got "
                f"{type(backbone).__name__}; wrap a module with lt_transfer.build_backbone()."
            )
        width = self.backbone.num_features
        layers: list[nn.Module] = []
        for hidden in head_hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        # a bare Linear when head_hidden=() keeps earlier checkpoints loadable
        self.head = (
            nn.Sequential(*layers, nn.Linear(width, num_classes)) if layers else nn.Linear(width, num_classes)
        )
        width = self.backbone.num_features
        self.domain_loss: DomainAdversarialLoss | None = None
        if method == "dann":
            disc = domain_discriminator(width, discriminator_hidden, discriminator_depth)
            self.domain_loss = DomainAdversarialLoss(disc, validate_args=False)
        self.optimizer_factory = optimizer
        self._metrics = nn.ModuleDict(
            {
                f"{stage}_{i}": MulticlassAccuracy(num_classes=num_classes, average="micro")
                for stage in ("val", "test")
                for i in range(2)
            }
        )

    # ------------------------------------------------------------------ model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)``."""
        return self.head(self.backbone(x))

    def coefficient(self) -> float:
        """The schedule's value at the trainer's current progress (no hidden state)."""
        return self.schedule(self.trainer)

    def progress(self) -> float:
        """Training progress ``p in [0, 1]`` from the trainer's counters."""
        return training_progress(self.trainer, self.hparams.schedule_unit)

    @staticmethod
    def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(batch, dict):
            if "source" not in batch or "target" not in batch:
                raise ValueError(
                    f"DomainAdaptationModule expects training batches with 'source' and 'target' "
                    f"keys, got keys {sorted(batch)}; use DomainAdaptationDataModule or a "
                    "CombinedLoader({'source': ..., 'target': ...})."
                )
            source, target = batch["source"], batch["target"]
        elif isinstance(batch, (list, tuple)) and len(batch) == 2:
            source, target = batch
        else:
            raise ValueError(
                "DomainAdaptationModule expects {'source': (x, y), 'target': x} or ((x, y), x) "
                f"training batches, got {type(batch).__name__}."
            )
        if not isinstance(source, (list, tuple)) or len(source) < 2:
            raise ValueError("DomainAdaptationModule: the source batch must be labelled (x, y).")
        target_x = target[0] if isinstance(target, (list, tuple)) else target
        return source[0], source[1], target_x

    def compute_losses(self, batch: Any, coefficient: float) -> dict[str, torch.Tensor]:
        """All training losses and diagnostics of one batch at the given coefficient.

        Returns ``loss`` (the total to minimise), ``source_loss``, ``source_acc`` and, for
        the alignment methods, ``transfer_loss`` (plus ``domain_acc`` for DANN).
        """
        hp = self.hparams
        xs, ys, xt = self._unpack(batch)
        if xs.shape[1:] != xt.shape[1:] and hp.method != "source_only":
            raise ValueError(
                f"DomainAdaptationModule: source inputs {tuple(xs.shape[1:])} and target inputs "
                f"{tuple(xt.shape[1:])} differ in shape; both domains share one network."
            )
        if hp.method == "source_only":
            fs, ft = self.backbone(xs), None
        elif hp.joint_forward:
            features = self.backbone(torch.cat([xs, xt]))
            fs, ft = features[: len(xs)], features[len(xs) :]
        else:
            fs, ft = self.backbone(xs), self.backbone(xt)
        logits = self.head(fs)
        source_loss = F.cross_entropy(logits.float(), ys)
        out = {
            "source_loss": source_loss,
            "source_acc": (logits.detach().argmax(-1) == ys).float().mean(),
        }
        if ft is None:
            out["loss"] = source_loss
            return out
        if hp.method == "dann":
            assert self.domain_loss is not None
            reversal_only = hp.get("trade_off_on", "loss") == "reversal"
            ls, lt = self.domain_loss.logits(
                fs, ft, hp.trade_off * coefficient if reversal_only else coefficient
            )
            transfer = domain_adversarial_loss(ls, lt)
            out["domain_acc"] = domain_accuracy(ls, lt)
            out["loss"] = source_loss + (transfer if reversal_only else hp.trade_off * transfer)
        else:
            if hp.method == "mmd":
                if hp.mmd_estimator == "linear":
                    n = min(len(fs), len(ft))
                    fs, ft = fs[:n], ft[:n]
                transfer = mmd_loss(fs, ft, hp.mmd_kernel_multipliers, hp.mmd_estimator)
            else:
                transfer = coral_loss(fs, ft)
            out["loss"] = source_loss + hp.trade_off * coefficient * transfer
        out["transfer_loss"] = transfer
        return out

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        coefficient = self.coefficient() if self.hparams.method != "source_only" else 0.0
        out = self.compute_losses(batch, coefficient)
        bs = len(self._unpack(batch)[0])
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=bs)
        for key in ("source_loss", "source_acc", "transfer_loss", "domain_acc"):
            if key in out:
                self.log(f"train/{key}", out[key], batch_size=bs)
        if self.hparams.method != "source_only":
            self.log("train/coefficient", coefficient, batch_size=bs)
        return out["loss"]

    # ------------------------------------------------------------ safeguards
    def on_train_start(self) -> None:
        """Fail fast on an empty training loader or an unbounded progress-based schedule."""
        self._check_train_loaders()
        if self.hparams.method != "source_only" and self.hparams.schedule != "constant":
            training_progress(self.trainer, self.hparams.schedule_unit)  # raises when unbounded

    def on_fit_end(self) -> None:
        """Raise when ``fit`` ran zero steps because a training loader was empty (#21893)."""
        if self.trainer.global_step == 0 and self.trainer.num_training_batches == 0:
            raise ValueError(
                "DomainAdaptationModule: fit finished without a single training step because the "
                "combined training loader yields no batches; check that the source and target "
                "training sets are non-empty."
            )

    def _check_train_loaders(self) -> None:
        loaders = self.trainer.train_dataloader
        items = loaders.items() if isinstance(loaders, dict) else []
        for key, loader in items:
            try:
                length = len(loader)
            except TypeError:
                continue
            if length == 0:
                raise ValueError(
                    f"DomainAdaptationModule: the {key!r} training loader yields no batches; with "
                    "Lightning's CombinedLoader the run would do nothing useful (#21893). Provide "
                    f"non-empty {key} training data."
                )

    # -------------------------------------------------------------- evaluation
    def _eval_name(self, dataloader_idx: int) -> str:
        name = eval_loader_name(self, dataloader_idx)
        return str(dataloader_idx) if name is None else name

    def _eval_step(self, stage: str, batch: Any, dataloader_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits.float(), y)
        metric, attribute = stage_accuracy(self, stage, dataloader_idx)
        metric(logits, y)
        prefix = f"{stage}/{self._eval_name(dataloader_idx)}"
        kwargs = {"on_epoch": True, "add_dataloader_idx": False, "batch_size": len(y)}
        self.log(f"{prefix}/loss", loss, **kwargs)
        self.log(f"{prefix}/acc", metric, metric_attribute=attribute, **kwargs)
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return self._eval_step("test", batch, dataloader_idx)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities ``(N, num_classes)``."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).softmax(-1)

    # -------------------------------------------------------------- optimizer
    def param_groups(self) -> list[dict]:
        """Head, discriminator (full lr) and backbone (``backbone_lr_scale``) param groups."""
        no_decay = no_decay_parameter_ids(self)
        groups = param_groups_for("head", self.head.named_parameters(), 1.0, no_decay)
        if self.domain_loss is not None:
            groups += param_groups_for("discriminator", self.domain_loss.named_parameters(), 1.0, no_decay)
        groups += param_groups_for(
            "backbone", self.backbone.named_parameters(), self.hparams.backbone_lr_scale, no_decay
        )
        return groups

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.param_groups())
        apply_lr_scales(optimizer)
        if not self.hparams.lr_annealing:
            return optimizer
        total = float(self.trainer.estimated_stepping_batches)
        if not math.isfinite(total):
            raise ValueError(
                "DomainAdaptationModule(lr_annealing=True) needs a bounded training length; set "
                "Trainer(max_steps=...) or max_epochs."
            )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _DannAnnealing(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
