"""DomainShiftReport: the domain-shift report at the start, end (and every n epochs) of training.

The callback decides when to report, which loaders hold the two domains, where the PNG and
JSON files go and what is logged; the report itself is :func:`.report.domain_shift_report`.
Only global rank 0 computes and writes; the results are broadcast to every rank.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lt_transfer.callbacks.domain_report.embedding import EmbeddingMethod
from lt_transfer.callbacks.domain_report.features import extract_features, resolve_feature_fn
from lt_transfer.callbacks.domain_report.plotting import figure_to_array
from lt_transfer.callbacks.domain_report.report import check_same_width, report_features
from lt_transfer.metrics.proxy_a_distance import MIN_SAMPLES

__all__ = ["DomainShiftReport", "ReportResult"]


@dataclass
class ReportResult:
    """One report: when it was made, the proxy A-distance and where the PNG went.

    Example:
        >>> ReportResult("start", epoch=0, step=0, pad=1.2, num_source=100, num_target=100).pad
        1.2
    """

    stage: str
    epoch: int
    step: int
    pad: float
    num_source: int
    num_target: int
    png: str | None = None


class DomainShiftReport(Callback):
    """Proxy A-distance and a 2-D embedding plot of source vs target features during training.

    At the start of training, at its end, and optionally every ``every_n_epochs`` epochs, the
    callback runs up to ``max_samples`` inputs of each domain through the module's feature
    function (eval mode, no gradients, train/eval modes restored afterwards), computes the
    proxy A-distance, draws the embedding figure and

    * saves it as ``<dirpath>/domain_report_<stage>.png`` (``start``, ``end``,
      ``epoch_<n>``) plus a ``domain_report.json`` with every result so far;
    * logs the figure to every ``TensorBoardLogger`` as image ``<log_prefix>/embedding`` and
      the distance as ``<log_prefix>/pad`` (all loggers) at the current global step.

    Only global rank 0 computes and writes; the results are broadcast so every rank holds
    the same :attr:`results`. They are in ``state_dict`` too, so a resumed run keeps the start
    report and does not redo it.

    **Feature function**: ``backbone`` is an attribute path on the LightningModule (default
    ``"backbone"``, as in :class:`~lt_transfer.TransferClassifier` and
    :class:`~lt_transfer.modules.DomainAdaptationModule`) whose call maps an input batch to
    ``(N, D)`` features (``(N, C, H, W)`` is average-pooled). Use ``"encoder"``,
    ``"model.features"``, ``"forward_features"`` ... for your own module.

    **Data**: ``source_dataloader``/``target_dataloader`` when given; otherwise the
    datamodule's ``val_dataloader()`` (falling back to the trainer's validation loaders),
    picking loaders ``source`` and ``target``: an index, or a name looked up in the
    datamodule's (or module's ``hparams``) ``eval_names`` — ``DomainAdaptationDataModule``
    names them ``["source", "target"]``. Batches are read by the batch contract of
    :mod:`lt_transfer.batches` (``(x, y)``, ``(x,)``, ``x``, or dicts keyed ``"image"``/``"x"``/...
    and ``"label"``/``"y"``/...); labels colour the class panel when present.

    **Limits**: each domain's loader is read for at most the batches the trainer's
    ``limit_val_batches`` allows (an int, or a fraction of the loader; ``fast_dev_run`` and
    ``overfit_batches`` set it too), and for at most ``max_samples`` samples. Under
    ``fast_dev_run`` the report only checks that both domains yield features of one width
    (nothing is written or logged, as ``fast_dev_run`` logs nothing); when the limits leave
    fewer than 4 samples of a domain, or none, that report is skipped. Both say so in an info
    line.

    Args:
        backbone: attribute path of the feature function on the LightningModule.
        source_dataloader: source-domain data (default: a validation loader, see above).
        target_dataloader: target-domain data.
        source: index or name of the source validation loader.
        target: index or name of the target validation loader.
        max_samples: most samples per domain (keeps PAD and t-SNE cheap).
        methods: embeddings to draw, ``"pca"`` and/or ``"tsne"`` (t-SNE needs scikit-learn;
            without it PCA alone is drawn, with a warning).
        at_start: report before the first training step.
        at_end: report when training ends.
        every_n_epochs: also report after every n-th training epoch (``None``: never).
        dirpath: output folder (default: ``<trainer.log_dir>/domain_report``, or
            ``<default_root_dir>/domain_report`` without a logger).
        figsize: figure size in inches (default ``(9, 3.8 per method)``).
        dpi: figure resolution; the PNG is ``figsize * dpi`` pixels.
        seed: seed of the PAD split and of t-SNE.
        log_prefix: name prefix of the logged image and distance.

    Raises:
        ValueError: bad arguments (named in the message); at the first report, a feature path
            that does not exist or loaders that cannot be found.

    Example:
        >>> report = DomainShiftReport(backbone="backbone", methods=["pca"], max_samples=200)
        >>> report.results
        []
    """

    def __init__(
        self,
        backbone: str = "backbone",
        source_dataloader: Any = None,
        target_dataloader: Any = None,
        source: int | str = 0,
        target: int | str = 1,
        max_samples: int = 500,
        methods: list[EmbeddingMethod] | tuple[EmbeddingMethod, ...] = ("pca", "tsne"),
        at_start: bool = True,
        at_end: bool = True,
        every_n_epochs: int | None = None,
        dirpath: str | None = None,
        figsize: tuple[float, float] | None = None,
        dpi: int = 100,
        seed: int = 0,
        log_prefix: str = "domain_report",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(backbone, str):
            raise ValueError(
                f"{name}(backbone={backbone!r}) must be an attribute path string, e.g. 'backbone'."
            )
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 8:
            raise ValueError(f"{name}(max_samples={max_samples!r}) must be an int >= 8 (samples per domain).")
        methods = list(methods)
        if not methods or any(m not in ("pca", "tsne") for m in methods):
            raise ValueError(f"{name}(methods={methods!r}) must be a non-empty list of 'pca' and/or 'tsne'.")
        if every_n_epochs is not None and (
            isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1
        ):
            raise ValueError(f"{name}(every_n_epochs={every_n_epochs!r}) must be an int >= 1 or None.")
        if not (at_start or at_end or every_n_epochs):
            raise ValueError(
                f"{name}: at_start=False, at_end=False and no every_n_epochs: nothing to report."
            )
        if isinstance(dpi, bool) or not isinstance(dpi, int) or dpi < 10:
            raise ValueError(f"{name}(dpi={dpi!r}) must be an int >= 10.")
        if figsize is not None and (len(figsize) != 2 or min(figsize) <= 0):
            raise ValueError(f"{name}(figsize={figsize!r}) must be (width, height) in inches, both > 0.")
        for arg, value in (("source", source), ("target", target)):
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ValueError(f"{name}({arg}={value!r}) must be a loader index or an eval name.")
        if "tsne" in methods:
            try:
                import sklearn.manifold  # noqa: F401
            except ImportError:
                rank_zero_warn(f"{name}: scikit-learn is not installed; drawing PCA only (no t-SNE).")
                methods = [m for m in methods if m != "tsne"] or ["pca"]
        self.backbone = backbone
        self.source_dataloader = source_dataloader
        self.target_dataloader = target_dataloader
        self.source = source
        self.target = target
        self.max_samples = max_samples
        self.methods: list[EmbeddingMethod] = methods
        self.at_start = at_start
        self.at_end = at_end
        self.every_n_epochs = every_n_epochs
        self.dirpath = dirpath
        self.figsize = tuple(figsize) if figsize is not None else None
        self.dpi = dpi
        self.seed = seed
        self.log_prefix = log_prefix
        self.results: list[ReportResult] = []

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(backbone=self.backbone, source=self.source, target=self.target)

    # ------------------------------------------------------------------ hooks
    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_start and not any(r.stage == "start" for r in self.results):
            self._report(trainer, pl_module, "start")

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._report(trainer, pl_module, f"epoch_{trainer.current_epoch:03d}")

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_end:
            self._report(trainer, pl_module, "end")

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"results": [asdict(r) for r in self.results]}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.results = [ReportResult(**r) for r in state_dict["results"]]

    # ----------------------------------------------------------------- helpers
    def output_dir(self, trainer: Trainer) -> Path:
        """Where the PNG and JSON files go."""
        if self.dirpath is not None:
            return Path(self.dirpath)
        root = trainer.log_dir if trainer.loggers else None
        return Path(root or trainer.default_root_dir) / "domain_report"

    def _names(self, trainer: Trainer, pl_module: LightningModule) -> list[str] | None:
        names = getattr(trainer.datamodule, "eval_names", None) if trainer.datamodule is not None else None
        if names is None:
            names = getattr(pl_module, "hparams", {}).get("eval_names")
        return list(names) if names is not None else None

    def _loaders(self, trainer: Trainer, pl_module: LightningModule) -> tuple[Iterable, Iterable]:
        chosen: dict[str, Iterable | None] = {
            "source": self.source_dataloader,
            "target": self.target_dataloader,
        }
        if all(v is not None for v in chosen.values()):
            return chosen["source"], chosen["target"]
        loaders: Any = None
        if trainer.datamodule is not None and hasattr(trainer.datamodule, "val_dataloader"):
            loaders = trainer.datamodule.val_dataloader()
        if loaders is None:
            loaders = trainer.val_dataloaders
        if loaders is None:
            raise ValueError(
                "DomainShiftReport: no source_dataloader/target_dataloader given and no validation "
                "loaders found; pass both loaders, or fit with a datamodule whose val_dataloader() "
                "returns the source and target loaders."
            )
        if isinstance(loaders, dict):
            keys = list(loaders)
            loaders = list(loaders.values())
        else:
            loaders = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
            keys = self._names(trainer, pl_module)
        for role in ("source", "target"):
            if chosen[role] is not None:
                continue
            key = getattr(self, role)
            if isinstance(key, str):
                if not keys or key not in keys:
                    raise ValueError(
                        f"DomainShiftReport({role}={key!r}): no validation loader of that name (names: "
                        f"{keys}); pass an index or {role}_dataloader."
                    )
                key = keys.index(key)
            if not 0 <= key < len(loaders):
                raise ValueError(
                    f"DomainShiftReport({role}={key}): there are {len(loaders)} validation loader(s); pass "
                    f"{role}_dataloader explicitly or a valid index."
                )
            chosen[role] = loaders[key]
        return chosen["source"], chosen["target"]

    def _report(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        payload: dict[str, Any] | None = None
        error: str | None = None
        if trainer.is_global_zero:
            try:
                payload = self._compute_and_write(trainer, pl_module, stage)
            except Exception as exc:  # re-raised below on every rank, after the broadcast
                error = f"{type(exc).__name__}: {exc}"
                if trainer.world_size == 1:
                    raise
        payload, error = trainer.strategy.broadcast((payload, error), src=0)
        if error is not None:
            raise RuntimeError(f"DomainShiftReport failed on rank 0: {error}")
        if payload is not None:  # None: skipped (fast_dev_run, too few samples), said in an info line
            self.results.append(ReportResult(**payload))

    def _compute_and_write(
        self, trainer: Trainer, pl_module: LightningModule, stage: str
    ) -> dict[str, Any] | None:
        fn = resolve_feature_fn(pl_module, self.backbone)
        loaders = self._loaders(trainer, pl_module)
        caps = [_batch_cap(trainer, loader) for loader in loaders]
        if 0 in caps:
            rank_zero_info(
                f"DomainShiftReport[{stage}]: Trainer(limit_val_batches={trainer.limit_val_batches}) leaves "
                "no batch of a domain's loader; no report."
            )
            return None
        modes = {m: m.training for m in pl_module.modules()}
        pl_module.eval()
        try:
            (source, source_labels), (target, target_labels) = (
                extract_features(
                    fn,
                    loader if cap is None else itertools.islice(loader, cap),
                    self.max_samples,
                    pl_module.device,
                )
                for loader, cap in zip(loaders, caps, strict=True)
            )
        finally:
            for module, mode in modes.items():
                module.train(mode)
        if trainer.fast_dev_run:
            check_same_width(source, target)
            rank_zero_info(
                f"DomainShiftReport[{stage}]: fast_dev_run: features of {len(source)} source and "
                f"{len(target)} target samples checked; no report is written (fast_dev_run logs nothing)."
            )
            return None
        if min(len(source), len(target)) < MIN_SAMPLES:
            rank_zero_info(
                f"DomainShiftReport[{stage}]: Trainer(limit_val_batches={trainer.limit_val_batches}) leaves "
                f"{len(source)} source and {len(target)} target samples; the proxy A-distance needs "
                f"{MIN_SAMPLES} per domain, so no report."
            )
            return None
        title = f"{stage} (epoch {trainer.current_epoch}, step {trainer.global_step})"
        pad, figure, data = report_features(
            source,
            target,
            source_labels,
            target_labels,
            title=title,
            seed=self.seed,
            methods=self.methods,
            figsize=self.figsize,
            dpi=self.dpi,
        )
        out_dir = self.output_dir(trainer)
        out_dir.mkdir(parents=True, exist_ok=True)
        png = out_dir / f"domain_report_{stage}.png"
        figure.savefig(png, dpi=self.dpi)
        step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics({f"{self.log_prefix}/pad": pad}, step=step)
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    f"{self.log_prefix}/embedding", figure_to_array(figure), step, dataformats="HWC"
                )
        payload = {
            "stage": stage,
            "epoch": trainer.current_epoch,
            "step": step,
            "pad": pad,
            "num_source": len(data["source"]),
            "num_target": len(data["target"]),
            "png": str(png),
        }
        summary = [asdict(r) for r in self.results] + [payload]
        (out_dir / "domain_report.json").write_text(json.dumps(summary, indent=2))
        pad_text = f"{pad:.3f}" if math.isfinite(pad) else str(pad)
        rank_zero_info(f"DomainShiftReport[{stage}]: proxy A-distance {pad_text}; wrote {png}")
        return payload


def _batch_cap(trainer: Trainer, loader: Iterable) -> int | None:
    """The batches of ``loader`` that ``trainer.limit_val_batches`` allows (``None``: all).

    Lightning's rule: an int is a count, a float a fraction of the loader's length.

    Example:
        >>> trainer = Trainer(limit_val_batches=0.5, logger=False)
        >>> _batch_cap(trainer, [[0]] * 10), _batch_cap(Trainer(fast_dev_run=True), [[0]] * 10)
        (5, 1)
    """
    limit = trainer.limit_val_batches
    try:
        length: int | None = len(loader)  # type: ignore[arg-type]
    except TypeError:
        length = None
    if isinstance(limit, int):
        cap = limit
    elif length is not None:
        cap = int(length * limit)
    else:
        return None
    return None if length is not None and cap >= length else cap
