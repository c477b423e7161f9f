"""SourceFreeAdaptationModule: SHOT, adapting a source-trained model with unlabelled target data only.

SHOT (Liang, Hu & Feng, "Do We Really Need to Access the Source Data? Source Hypothesis
Transfer for Unsupervised Domain Adaptation", ICML 2020) keeps the source model's classifier
head (the *hypothesis*) frozen and trains its feature extractor on the target domain with

* information maximisation (:func:`~lt_transfer.losses.information_maximization_loss`):
  confident and diverse predictions;
* ``beta ×`` the cross-entropy on self-supervised pseudo-labels: the nearest class centroid
  of the target features (:func:`~lt_transfer.losses.shot_centroids`). The default ``beta=0``
  is information maximisation alone, the paper's SHOT-IM: on the digit-shift benchmark it beats
  the paper's ``beta=0.3`` by a wide margin (the centroid labels were less accurate than the
  head's own predictions there).

The centroids are recomputed at the start of every epoch from the current model, with one pass
(no gradient, eval mode) over the target training loader, and each training batch is labelled
by its features' nearest centroid (:func:`~lt_transfer.losses.nearest_centroid_labels`): at an
epoch's first step these are exactly SHOT's labels of those examples, and no sample indices are
needed. Under DDP each process passes over its own shard and the per-class sums are added over
processes (``strategy.reduce``), so every process holds the centroids of the whole target set.
The centroids of the running epoch are saved in checkpoints, so a run resumed in the middle of
an epoch labels with the same centroids as an uninterrupted one.

No source batch is ever read: training batches are target batches (any form of
:mod:`lt_transfer.batches`; their labels, if any, are never read); a training loader that also
yields source batches is refused before it is iterated
(``DomainAdaptationDataModule(source_free=True)`` gives target batches only).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lt_transfer.batches import Batch, Input, input_to, split_batch
from lt_transfer.checkpoints import load_module
from lt_transfer.losses.information_maximization import information_maximization_loss
from lt_transfer.losses.shot import ShotCentroids, nearest_centroid_labels, shot_centroids
from lt_transfer.modules._base import ClassificationModule, Stage
from lt_transfer.optim import no_decay_parameter_ids, param_groups_for, resolve_backbone_lr_scale

__all__ = ["SourceFreeAdaptationModule"]

_CHECKPOINT_KEY = "shot_centroids"


class SourceFreeAdaptationModule(ClassificationModule):
    """SHOT: adapt a source-trained classifier to unlabelled target data, without source data.

    The source model's feature extractor (attribute path ``backbone``) trains, as a whole;
    its classifier head (attribute path ``head``) is frozen (``requires_grad=False``, eval
    mode) and must stay so: a head made trainable again is an error at fit start. The
    module's ``forward`` is ``head(backbone(x))``; the source model's other parts (a domain
    discriminator, ...) are dropped. A module given as ``source_model`` is adapted in place.

    Args:
        source_model: the source-trained model: a LightningModule checkpoint path (``.ckpt``) or
            the module itself. Required.
        source_class: dotted import path of the checkpoint's LightningModule class
            (``"lt_transfer.DomainAdaptationModule"``); ``None``: the class recorded by the CLI,
            else the one of lt_transfer's classifiers whose arguments the checkpoint's
            hyper-parameters fit.
        backbone: attribute path of the feature extractor in the source model (returns
            ``(N, D)`` features).
        head: attribute path of the classifier head (features → logits).
        num_classes: the class count, checked against the source model's (``None``: the
            source model's).
        beta: weight of the pseudo-label cross-entropy. The default 0 trains with information
            maximisation alone (the paper's SHOT-IM ablation; no centroid passes); 0.3 is the
            paper's full SHOT. The labels only help when the nearest-centroid labels beat the
            head's own predictions, which needs features the head separates linearly (SHOT: one
            linear layer behind a BN bottleneck); with a deep head in front of them they are
            worse. Chosen on the MNIST → MNIST-M-style target validation split (SHOT-IM 94.0 %
            vs SHOT 34.4 %, two seeds) and kept unchanged on every other shift (see the
            project's ``docs/benchmarks.md``).
        diversity_weight: weight of the diversity term of information maximisation (SHOT: 1).
        refinement_rounds: hard-label centroid rounds after the soft ones (SHOT: 1).
        backbone_lr_scale: learning-rate multiplier of the feature extractor; ``None``: 0.1 for
            a pretrained backbone (``backbone.pretrained``), else 1.0.
        optimizer: optimizer factory taking param groups.
        scheduler: optional lr-scheduler factory taking the optimizer.
        scheduler_interval: step the scheduler each ``"epoch"`` or ``"step"``.
        eval_names: names of the validation/test loaders; ``None`` reads the datamodule's.

    Raises:
        ValueError: no ``source_model``, missing attribute paths, a class count that does not match,
            bad weights; at fit start, a trainable head or a training loader with source batches.
        FileNotFoundError: a ``source_model`` path that is not a file.

    Example:
        >>> from lt_transfer import DomainAdaptationModule
        >>> source_model = DomainAdaptationModule("lenet", method="source_only")
        >>> model = SourceFreeAdaptationModule(source_model)
        >>> model.head is source_model.head, any(p.requires_grad for p in model.head.parameters())
        (True, False)
        >>> [group["name"] for group in model.param_groups()]
        ['backbone', 'backbone.no_decay']
        >>> model.compute_losses([torch.randn(8, 3, 28, 28)])["loss"].ndim  # IM only: no centroids yet
        0
    """

    def __init__(
        self,
        source_model: str | nn.Module | None = None,
        source_class: str | None = None,
        backbone: str = "backbone",
        head: str = "head",
        num_classes: int | None = None,
        beta: float = 0.0,
        diversity_weight: float = 1.0,
        refinement_rounds: int = 1,
        backbone_lr_scale: float | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        eval_names: list[str] | None = None,
    ) -> None:
        name = type(self).__name__
        for key, value in (("beta", beta), ("diversity_weight", diversity_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(
                    f"{name}({key}={value!r}) must be a number >= 0 (defaults: beta 0, diversity_weight 1)."
                )
        rounds = refinement_rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise ValueError(f"{name}(refinement_rounds={rounds!r}) must be an int >= 0 (SHOT: 1).")
        model = _source_model(name, source_model, source_class)
        source_hparams = getattr(model, "hparams", None)
        classes = source_hparams.get("num_classes") if isinstance(source_hparams, Mapping) else None
        if num_classes is not None and classes is not None and num_classes != classes:
            raise ValueError(
                f"{name}(num_classes={num_classes}) but the source model was trained with "
                f"num_classes={classes}; SHOT keeps the source head, so the classes must be the same."
            )
        classes = num_classes if classes is None else int(classes)
        super().__init__(
            num_classes=classes,
            optimizer=optimizer,
            scheduler=scheduler,
            scheduler_interval=scheduler_interval,
            eval_names=eval_names,
        )
        as_module = isinstance(source_model, nn.Module)
        ignore = ["optimizer", "scheduler"] + (["source_model"] if as_module else [])
        self.save_hyperparameters(ignore=ignore)
        self.backbone = _submodule(name, model, "backbone", backbone)
        self.head = _submodule(name, model, "head", head)
        self.backbone.requires_grad_(True)
        self.head.requires_grad_(False)
        pretrained = bool(getattr(self.backbone, "pretrained", False))
        self._backbone_lr_scale = resolve_backbone_lr_scale(backbone_lr_scale, pretrained, name)
        self._centroids: ShotCentroids | None = None
        self._centroids_epoch: int | None = None
        self._restored: tuple[int, ShotCentroids] | None = None
        self._resumed_in_epoch = False
        self.train()

    # ------------------------------------------------------------------ model
    @property
    def backbone_lr_scale(self) -> float:
        """The feature extractor's learning-rate scale in use (``hparams.backbone_lr_scale`` resolved)."""
        return self._backbone_lr_scale

    @property
    def centroids(self) -> ShotCentroids | None:
        """The class centroids of the running epoch (``None`` before the first pass, or with ``beta=0``)."""
        return self._centroids

    def forward(self, x: Input) -> torch.Tensor:
        """Class logits ``(N, C)``: the frozen source head on the adapted features."""
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> SourceFreeAdaptationModule:
        """Set train/eval mode; the frozen head always stays in eval mode (dropout off)."""
        super().train(mode)
        self.head.eval()
        return self

    # --------------------------------------------------------------- training
    def compute_losses(self, batch: Any) -> dict[str, torch.Tensor]:
        """SHOT's losses of one target batch: ``loss``, ``im_loss`` and, once centroids exist,
        ``pseudo_label_loss`` and ``pseudo_label_agreement`` (share of pseudo-labels equal to the
        head's prediction)."""
        target = self._target(batch)
        features = self.backbone(target.x)
        logits = self.head(features)
        im_loss = information_maximization_loss(logits, self.hparams.diversity_weight, validate_args=False)
        out = {"im_loss": im_loss, "loss": im_loss}
        if self._centroids is not None and self.hparams.beta > 0:
            labels = nearest_centroid_labels(features, *self._centroids)
            pseudo = F.cross_entropy(logits.float(), labels)
            out["pseudo_label_loss"] = pseudo
            out["pseudo_label_agreement"] = (logits.detach().argmax(1) == labels).float().mean()
            out["loss"] = im_loss + self.hparams.beta * pseudo
        return out

    def batch_labels(self, batch: Any, stage: Stage) -> torch.Tensor | None:
        """Training batches are unlabelled target data: their labels, if any, are never read."""
        return None if stage == "train" else super().batch_labels(batch, stage)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        out = self.compute_losses(batch)
        size = len(self._target(batch))
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=size)
        for key in ("im_loss", "pseudo_label_loss", "pseudo_label_agreement"):
            if key in out:
                self.log(f"train/{key}", out[key], batch_size=size)
        return out["loss"]

    def _target(self, batch: Any) -> Batch:
        """The target batch; a batch that holds source data is refused before it is used."""
        if isinstance(batch, Mapping) and ("source" in batch or "target" in batch):
            if "source" in batch:
                raise ValueError(_SOURCE_BATCHES)
            batch = batch["target"]
        return split_batch(batch, type(self).__name__)

    # -------------------------------------------------------------- centroids
    def on_train_start(self) -> None:
        """Refuse a trainable head and a training loader that yields source batches; take the
        centroids of a checkpoint saved inside the epoch the run resumes in."""
        self._check_head_frozen()
        self._target_loader()
        restored, self._restored = self._restored, None
        if restored is not None and restored[0] == self.current_epoch:
            self._centroids_epoch, self._centroids = restored
            self._resumed_in_epoch = True

    def _check_head_frozen(self) -> None:
        trainable = [name for name, p in self.head.named_parameters() if p.requires_grad]
        if trainable:
            raise ValueError(
                f"SourceFreeAdaptationModule: the classifier head {self.hparams.head!r} has trainable "
                f"parameters {trainable}; SHOT keeps the source hypothesis fixed. Leave the head frozen "
                "(requires_grad=False), e.g. do not unfreeze it in a callback."
            )

    def _target_loader(self) -> Any:
        loader = self.trainer.train_dataloader
        if isinstance(loader, Mapping):
            if "source" in loader or "target" not in loader:
                raise ValueError(_SOURCE_BATCHES)
            loader = loader["target"]
        return loader

    def on_train_epoch_start(self) -> None:
        """Recompute the class centroids with a pass over the target training loader."""
        resumed, self._resumed_in_epoch = self._resumed_in_epoch, False
        if self.hparams.beta == 0 or (resumed and self._centroids_epoch == self.current_epoch):
            return
        self._centroids = self._pass_centroids(self._target_loader())
        self._centroids_epoch = self.current_epoch

    @torch.no_grad()
    def _pass_centroids(self, loader: Any) -> ShotCentroids:
        was_training = self.training
        self.eval()
        features, logits = [], []
        try:
            for batch in loader:
                f = self.backbone(input_to(self._target(batch).x, self.device))
                features.append(f.float())
                logits.append(self.head(f).float())
        finally:
            self.train(was_training)
        if not features:
            raise ValueError("SourceFreeAdaptationModule: the target training loader yields no batches.")
        strategy = self.trainer.strategy
        return shot_centroids(
            torch.cat(features),
            torch.cat(logits),
            self.hparams.refinement_rounds,
            all_reduce=lambda tensor: strategy.reduce(tensor, reduce_op="sum"),
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the running epoch's centroids, so a mid-epoch resume labels with the same ones."""
        if self._centroids is not None and self._centroids_epoch is not None:
            checkpoint[_CHECKPOINT_KEY] = {
                "epoch": self._centroids_epoch,
                "centroids": self._centroids.centroids.cpu(),
                "candidates": self._centroids.candidates.cpu(),
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(_CHECKPOINT_KEY)
        if saved is not None:
            centroids = ShotCentroids(saved["centroids"].to(self.device), saved["candidates"].to(self.device))
            self._restored = (int(saved["epoch"]), centroids)

    # -------------------------------------------------------------- optimizer
    def param_groups(self) -> list[dict]:
        """The feature extractor's param groups (:attr:`backbone_lr_scale`); the head is frozen."""
        self._check_head_frozen()
        no_decay = no_decay_parameter_ids(self.backbone)
        parameters = self.backbone.named_parameters()
        return param_groups_for("backbone", parameters, self.backbone_lr_scale, no_decay)


_SOURCE_BATCHES = (
    "SourceFreeAdaptationModule reads target data only, but the training loader also yields source "
    "batches ({'source': ..., 'target': ...}); train on a loader of target batches, e.g. "
    "DomainAdaptationDataModule(source_free=True)."
)


def _source_model(name: str, source: str | Path | nn.Module | None, source_class: str | None) -> nn.Module:
    if source is None:
        raise ValueError(
            f"{name}(source_model=None): SHOT adapts a model trained on the source domain; pass "
            "source_model=<path of its Lightning checkpoint> (e.g. of "
            "DomainAdaptationModule(method='source_only') or TransferClassifier) or the model itself."
        )
    if isinstance(source, nn.Module):
        if source_class is not None:
            raise ValueError(f"{name}(source_class={source_class!r}) only applies to a checkpoint path.")
        return source
    if not isinstance(source, (str, Path)):
        raise TypeError(
            f"{name}(source_model=...) must be a checkpoint path or an nn.Module, got "
            f"{type(source).__name__}."
        )
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{name}(source_model={str(source)!r}): no such checkpoint file; pass the .ckpt of the "
            "source-trained model or the model itself."
        )
    where = f"{name}(source_model={str(source)!r})"
    return load_module(path, source_class, where=where, argument="source_class")


def _submodule(name: str, model: nn.Module, argument: str, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        children = [child for child, _ in model.named_children()]
        raise ValueError(
            f"{name}({argument}={path!r}): the source model {type(model).__name__} has no submodule "
            f"{path!r}; its children are {children}. Give the attribute path of its {argument}."
        ) from None
