"""TargetValidation: label-free validators on the target validation loader, logged for model selection.

In unsupervised domain adaptation the target has no labels, so accuracy on a labelled target
split cannot choose checkpoints or hyper-parameters. This callback computes validators that
need no target labels on the target validation loader at every validation epoch and logs
them as ``val/target/<validator>``, so one line gives label-free model selection::

    trainer = Trainer(callbacks=[
        TargetValidation(["snd", "im"]),
        ModelCheckpoint(monitor="val/target/snd", mode="max"),
    ])

============ ========================================================== =========
validator    what it measures (paper); what it needs                    ``mode``
============ ========================================================== =========
``snd``      soft neighbourhood density of the target predictions       max
             (Saito et al., ICCV 2021); target logits
``bnm``      batch nuclear norm: confident and diverse predictions      max
             (Cui et al., CVPR 2020); target logits
``im``       information maximisation: marginal minus conditional       max
             entropy (Krause et al. 2010; SHOT); target logits
``entropy``  mean prediction entropy (Grandvalet & Bengio 2004);        min
             target logits
``dev``      deep embedded validation: the source validation loss       min
             reweighted by the target/source density ratio (You et
             al., ICML 2019); source + target features, source labels
``silhouette`` silhouette of the target features grouped by predicted  max
             class (Rousseeuw 1987; Musgrave et al. 2022); target
             logits and features
``source_acc`` accuracy on the labelled source validation loader: the  max
             baseline the others should beat; source labels
============ ========================================================== =========

``dev`` is a risk, ``entropy`` an uncertainty: both ``mode="min"``. :data:`VALIDATOR_MODES` holds
the modes for code, e.g.
``ModelCheckpoint(monitor="val/target/dev", mode=VALIDATOR_MODES["dev"])``.

**Which one to trust**: :data:`DEFAULT_VALIDATOR` is the validator that the selection benchmark
(``scripts/bench_selection.py``: regret and Spearman correlation with target test accuracy
over the checkpoints of a sweep of methods, trade-offs and seeds on both digit shifts) found
best; the DANN recipes (``configs/dann_*.yaml``) checkpoint on it and
:class:`~lt_transfer.NegativeTransferMonitor` takes its ``mode`` from :data:`VALIDATOR_MODES`
when it monitors ``val/target/<validator>`` (``monitor=DEFAULT_MONITOR``) on a target without
labels. The values are
computed by the torchmetrics of :mod:`lt_transfer.metrics`: under DDP every rank gathers all
samples, so the logged value is the single-process value on the samples the ranks saw (a
``DistributedSampler`` pads a loader whose length the world size does not divide by
repeating samples).

**How it reads the model**: for every batch of the target (and, when a validator needs it,
the source) validation loader it runs the LightningModule's ``forward`` on the batch input
(:mod:`lt_transfer.batches` contract, under the trainer's precision context, no gradients,
in eval mode as validation leaves it), which must return ``(N, C)`` logits; the features of
``dev`` and ``silhouette`` are the output of the sub-module at the attribute path
``backbone`` (captured in the same forward pass). That is one extra forward pass per
validation batch of those loaders, and works with any LightningModule. **Target labels**
in the batches are ignored: never read, never used.

**Which loader is which**: ``target`` and ``source`` are loader indices or names; names come
from the module's ``eval_names`` (hyper-parameter) or the datamodule's ``eval_names``
attribute, as :class:`~lt_transfer.DomainAdaptationModule` with
:class:`~lt_transfer.DomainAdaptationDataModule` name them ``["source", "target"]``.
Nothing is computed or logged during the sanity check.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lt_transfer.batches import split_batch
from lt_transfer.callbacks.domain_report.features import forward_with_features
from lt_transfer.metrics import (
    BatchNuclearNorm,
    ClassSilhouette,
    DeepEmbeddedValidation,
    InformationMaximization,
    PredictionEntropy,
    SoftNeighborhoodDensity,
)

__all__ = [
    "DEFAULT_MONITOR",
    "DEFAULT_VALIDATOR",
    "OPTION_DEFAULTS",
    "VALIDATOR_MODES",
    "TargetValidation",
    "Validator",
]

Validator = Literal["snd", "bnm", "im", "entropy", "dev", "silhouette", "source_acc"]

#: ``mode`` of each validator for ``ModelCheckpoint``/``EarlyStopping``/``NegativeTransferMonitor``.
VALIDATOR_MODES: dict[str, Literal["max", "min"]] = {
    "snd": "max",
    "bnm": "max",
    "im": "max",
    "entropy": "min",
    "dev": "min",
    "silhouette": "max",
    "source_acc": "max",
}
#: The validator to select a run's checkpoint with when the target has no labels: ``im`` had the
#: lowest regret within a run on both digit shifts of ``scripts/bench_selection.py`` (0.53 and 0.19
#: points of target accuracy; ``dev`` is safer for choosing among runs). The recipes
#: ``configs/dann_*.yaml`` monitor ``val/target/<DEFAULT_VALIDATOR>`` with its mode (a test keeps
#: them in line with this constant).
DEFAULT_VALIDATOR: Validator = "im"
#: The logged name of :data:`DEFAULT_VALIDATOR` under the default ``log_prefix``.
DEFAULT_MONITOR = f"val/target/{DEFAULT_VALIDATOR}"
#: Values of the validator-specific options when they are ``None`` (and the validator is chosen).
OPTION_DEFAULTS: dict[str, Any] = {
    "snd_temperature": 0.05,
    "silhouette_distance": "euclidean",
    "dev_loss": "cross_entropy",
    "dev_c": 1.0,
    "normalize": False,
}
_OPTION_USERS: dict[str, tuple[str, ...]] = {
    "snd_temperature": ("snd",),
    "silhouette_distance": ("silhouette",),
    "dev_loss": ("dev",),
    "dev_c": ("dev",),
    "normalize": ("entropy", "im"),
    "source": ("dev", "source_acc"),
}
_NEEDS_SOURCE = ("dev", "source_acc")
_NEEDS_FEATURES = ("dev", "silhouette")
_NAME = "TargetValidation"


class TargetValidation(Callback):
    """Compute label-free validators on the target validation loader and log ``val/target/<name>``.

    See the module docstring for the validators, their ``mode`` and how the model is read.

    Options that only one validator uses default to ``None`` (the value in
    :data:`OPTION_DEFAULTS`) and are an error when that validator is not chosen.

    Args:
        validators: names from :data:`VALIDATOR_MODES`.
        target: index or name of the target validation loader.
        source: index or name of the labelled source validation loader, for ``dev`` and
            ``source_acc`` only (``None``: the loader named ``"source"``).
        backbone: attribute path of the feature extractor on the LightningModule (``dev``,
            ``silhouette``).
        log_prefix: logged names are ``<log_prefix>/<validator>``.
        snd_temperature: SND's softmax temperature (``None``: 0.05, the paper's).
        silhouette_distance: ``"euclidean"`` or ``"cosine"`` (``None``: euclidean).
        dev_loss: per-sample source loss of DEV, ``"cross_entropy"`` or ``"error"`` (0/1, then
            DEV estimates the target error rate) (``None``: cross-entropy).
        dev_c: inverse L2 regularisation of DEV's domain classifier (``None``: 1.0).
        normalize: divide ``entropy`` and ``im`` by ``log C`` (``None``: no).

    Raises:
        ValueError: unknown validators or options for validators that are not chosen (at
            construction); at validation, a loader that cannot be found, a validator that
            needs the source loader without one, source batches without labels, logits that
            are not ``(N, C)``, fewer target samples than classes, no target batches.

    Example:
        >>> callback = TargetValidation(["snd", "dev"], dev_loss="error")
        >>> callback.monitor("snd"), callback.mode("dev"), callback.needs_source
        ('val/target/snd', 'min', True)
    """

    def __init__(
        self,
        validators: list[Validator] | tuple[Validator, ...] = ("snd", "bnm", "im", "entropy"),
        target: int | str = "target",
        source: int | str | None = None,
        backbone: str = "backbone",
        log_prefix: str = "val/target",
        snd_temperature: float | None = None,
        silhouette_distance: Literal["euclidean", "cosine"] | None = None,
        dev_loss: Literal["cross_entropy", "error"] | None = None,
        dev_c: float | None = None,
        normalize: bool | None = None,
    ) -> None:
        super().__init__()
        validators = [validators] if isinstance(validators, str) else list(validators)
        unknown = [v for v in validators if v not in VALIDATOR_MODES]
        if not validators or unknown or len(set(validators)) != len(validators):
            raise ValueError(
                f"{_NAME}(validators={validators!r}): give each validator once, from {list(VALIDATOR_MODES)}."
            )
        for argument, value in (("target", target), ("source", source)):
            if isinstance(value, bool) or not isinstance(value, (int, str, type(None))):
                raise ValueError(f"{_NAME}({argument}={value!r}) must be a loader index or name.")
        if not isinstance(backbone, str) or not isinstance(log_prefix, str) or not log_prefix:
            raise ValueError(
                f"{_NAME}(backbone={backbone!r}, log_prefix={log_prefix!r}): both must be strings "
                "(an attribute path and a non-empty log-name prefix)."
            )
        given = {
            "snd_temperature": snd_temperature,
            "silhouette_distance": silhouette_distance,
            "dev_loss": dev_loss,
            "dev_c": dev_c,
            "normalize": normalize,
            "source": source,
        }
        for option, value in given.items():
            users = _OPTION_USERS[option]
            if value is not None and not set(users) & set(validators):
                raise ValueError(
                    f"{_NAME}({option}={value!r}) only applies to the validators {list(users)}, which are "
                    f"not in validators={validators}; remove it or add one of them."
                )
        options = {key: OPTION_DEFAULTS[key] if given[key] is None else given[key] for key in OPTION_DEFAULTS}
        if options["dev_loss"] not in ("cross_entropy", "error"):
            raise ValueError(f"{_NAME}(dev_loss={dev_loss!r}) must be 'cross_entropy' or 'error'.")
        self.validators: list[str] = validators
        self.target = target
        self.source = "source" if source is None else source
        self.backbone = backbone
        self.log_prefix = log_prefix
        self.options = options
        for name in validators:
            self._new_metric(name, 2)  # a bad temperature or distance fails now, not at validation
        self._metrics: dict[str, Metric] = {}
        self._indices: tuple[int, int | None] | None = None
        self._target_samples = 0
        self._num_classes: int | None = None

    # ----------------------------------------------------------------- public
    @property
    def needs_source(self) -> bool:
        """Whether a chosen validator reads the labelled source validation loader."""
        return any(v in _NEEDS_SOURCE for v in self.validators)

    def monitor(self, validator: str) -> str:
        """The logged name of ``validator`` (what ``ModelCheckpoint(monitor=...)`` takes)."""
        return f"{self.log_prefix}/{validator}"

    @staticmethod
    def mode(validator: str) -> Literal["max", "min"]:
        """``"max"`` or ``"min"``: the ``mode`` for monitoring ``validator``."""
        if validator not in VALIDATOR_MODES:
            raise ValueError(
                f"{_NAME}.mode({validator!r}): unknown validator; choose from {list(VALIDATOR_MODES)}."
            )
        return VALIDATOR_MODES[validator]

    # ------------------------------------------------------------------ hooks
    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._indices = self._loader_indices(trainer, pl_module)
        for metric in self._metrics.values():
            metric.reset()
        self._target_samples = 0

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or self._indices is None:
            return
        target, source = self._indices
        if dataloader_idx == target:
            self._update_target(trainer, pl_module, batch)
        elif dataloader_idx == source:
            self._update_source(trainer, pl_module, batch)

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        seen = int(
            trainer.strategy.reduce(
                torch.tensor(self._target_samples, device=pl_module.device), reduce_op="sum"
            )
        )
        if seen == 0:
            raise ValueError(
                f"{_NAME}: the target validation loader (index {self._indices[0] if self._indices else '?'}) "
                "yielded no samples; validate on target data (check limit_val_batches and the target split)."
            )
        if self._num_classes is not None and seen < self._num_classes:
            raise ValueError(
                f"{_NAME}: {seen} target validation samples for {self._num_classes} classes; the validators "
                "need at least as many target samples as classes: validate on more target data (a larger "
                "validation split, limit_val_batches)."
            )
        for name in self.validators:
            value = self._metric(name, None).compute()
            # identical on every rank (the metric gathered all samples): "max" keeps it exact
            pl_module.log(self.monitor(name), value.float(), on_epoch=True, sync_dist=True, reduce_fx="max")
        for metric in self._metrics.values():
            metric.reset()

    # --------------------------------------------------------------- helpers
    def _new_metric(self, name: str, num_classes: int) -> Metric:
        o = self.options
        if name == "snd":
            return SoftNeighborhoodDensity(temperature=o["snd_temperature"])
        if name == "bnm":
            return BatchNuclearNorm(num_classes=num_classes)
        if name == "im":
            return InformationMaximization(num_classes=num_classes, normalize=o["normalize"])
        if name == "entropy":
            return PredictionEntropy(normalize=o["normalize"])
        if name == "dev":
            return DeepEmbeddedValidation(c=o["dev_c"])
        if name == "silhouette":
            return ClassSilhouette(distance=o["silhouette_distance"])
        return MulticlassAccuracy(num_classes=num_classes, average="micro")

    def _metric(self, name: str, logits: torch.Tensor | None) -> Metric:
        if name not in self._metrics:
            if logits is None:
                raise ValueError(
                    f"{_NAME}: validator {name!r} saw no batches this epoch; every rank needs batches of the "
                    "target (and source) validation loaders."
                )
            self._metrics[name] = self._new_metric(name, logits.shape[1]).to(logits.device)
        return self._metrics[name]

    def _loader_names(self, trainer: Trainer, pl_module: LightningModule) -> list[str] | None:
        names = getattr(pl_module, "hparams", {}).get("eval_names")
        if names is None and trainer.datamodule is not None:
            names = getattr(trainer.datamodule, "eval_names", None)
        return list(names) if names is not None else None

    def _loader_indices(self, trainer: Trainer, pl_module: LightningModule) -> tuple[int, int | None]:
        count = len(trainer.num_val_batches)
        names = self._loader_names(trainer, pl_module)
        target = self._index("target", self.target, names, count)
        source = self._index("source", self.source, names, count) if self.needs_source else None
        if source is not None and source == target:
            raise ValueError(
                f"{_NAME}: target={self.target!r} and source={self.source!r} name the same loader "
                f"({target}); they must be different validation loaders."
            )
        return target, source

    def _index(self, role: str, key: int | str, names: list[str] | None, count: int) -> int:
        needs = (
            ""
            if role == "target"
            else f" (validators {[v for v in self.validators if v in _NEEDS_SOURCE]} need it)"
        )
        if isinstance(key, str):
            if not names or key not in names:
                raise ValueError(
                    f"{_NAME}({role}={key!r}): no validation loader of that name{needs}; loader names: "
                    f"{names} ({count} loader(s)). Pass the loader index ({role}=<i>), or name the loaders "
                    "with the module's or the datamodule's eval_names (e.g. ['source', 'target'])."
                )
            key = names.index(key)
        if not 0 <= key < count:
            raise ValueError(
                f"{_NAME}({role}={key}): there are {count} validation loader(s){needs}; pass a valid index"
                + (" and a source validation loader." if role == "source" else ".")
            )
        return key

    def _forward(
        self, trainer: Trainer, pl_module: LightningModule, x: Any, features: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad(), trainer.precision_plugin.val_step_context():
            if features:
                logits, feats = forward_with_features(pl_module, x, self.backbone, _NAME)
            else:
                logits, feats = pl_module(x), None
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] < 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(
                f"{_NAME}: the module's forward returned {shape}; the validators need (N, C) class logits "
                "with C >= 2 from forward(x)."
            )
        return logits.float(), None if feats is None else feats.float()

    def _update_target(self, trainer: Trainer, pl_module: LightningModule, batch: Any) -> None:
        x = split_batch(batch, _NAME).x  # the target labels, if any, are never read
        needs_features = any(v in _NEEDS_FEATURES for v in self.validators)
        logits, features = self._forward(trainer, pl_module, x, needs_features)
        self._target_samples += len(logits)
        self._num_classes = logits.shape[1]
        for name in self.validators:
            if name in ("snd", "bnm", "im", "entropy"):
                self._metric(name, logits).update(logits)
            elif name == "silhouette":
                self._metric(name, logits).update(features, logits)
            elif name == "dev":
                self._metric(name, logits).update(target_features=features)

    def _update_source(self, trainer: Trainer, pl_module: LightningModule, batch: Any) -> None:
        parsed = split_batch(batch, _NAME)
        if parsed.y is None:
            raise ValueError(
                f"{_NAME}: validators {[v for v in self.validators if v in _NEEDS_SOURCE]} need labelled "
                f"source validation batches, but the source loader ({self.source!r}) has no labels: yield "
                "(x, y) batches."
            )
        logits, features = self._forward(trainer, pl_module, parsed.x, "dev" in self.validators)
        y = parsed.y.to(logits.device)
        if "dev" in self.validators:
            if self.options["dev_loss"] == "error":
                losses = (logits.argmax(dim=1) != y).float()
            else:
                losses = F.cross_entropy(logits, y, reduction="none")
            self._metric("dev", logits).update(source_features=features, source_losses=losses)
        if "source_acc" in self.validators:
            self._metric("source_acc", logits).update(logits, y)
