"""DomainShiftReport: how far apart are the source and target features, before and after training?

The report has two parts:

* the **proxy A-distance** (PAD, Ben-David et al. 2006/2010; see
  :mod:`lt_transfer.metrics.proxy_a_distance`) between source and target feature vectors:
  0 = a linear classifier cannot tell the domains apart, 2 = perfectly separable;
* a **2-D embedding plot** of the same features (PCA, and t-SNE — van der Maaten & Hinton,
  JMLR 2008 — through scikit-learn), coloured by domain and by class, as in the DANN paper's
  figures (Ganin et al., JMLR 2016). It is saved as a PNG and logged to TensorBoard as an image.

It works on any LightningModule: ``features`` names the attribute (or method) that maps an
input batch to feature vectors, and the two domains' data come from explicit loaders or
from the datamodule's validation loaders. :func:`domain_shift_report` is the same report as a
plain function (used by ``scripts/domain_shift_report.py``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from lt_transfer.metrics.proxy_a_distance import proxy_a_distance

__all__ = [
    "DomainShiftReport",
    "EmbeddingMethod",
    "ReportResult",
    "domain_shift_report",
    "embed_2d",
    "extract_features",
    "plot_domain_embedding",
    "resolve_feature_fn",
]

EmbeddingMethod = Literal["pca", "tsne"]
ReportStage = Literal["start", "end"]


# --------------------------------------------------------------------------- features
def resolve_feature_fn(module: nn.Module, features: str) -> Callable[[Any], torch.Tensor]:
    """Return the callable at attribute path ``features`` of ``module`` (e.g. ``"backbone"``).

    The attribute may be a sub-module or a method (``"forward_features"``); ``""`` means the
    module itself.

    Raises:
        ValueError: when the path does not exist or is not callable (the message lists the
            module's children).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> resolve_feature_fn(net, "0")(torch.zeros(5, 4)).shape
        torch.Size([5, 3])
    """
    target: Any = module
    for part in [p for p in features.split(".") if p]:
        if not hasattr(target, part):
            children = [name for name, _ in module.named_children()]
            raise ValueError(
                f"DomainShiftReport(features={features!r}): {type(target).__name__} has no attribute "
                f"{part!r}. The module's children are {children}; name the sub-module (or method) whose "
                "output is the feature vector, e.g. features='backbone' or features='encoder.pool'."
            )
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(
            f"DomainShiftReport(features={features!r}) names a {type(target).__name__}, not a module or "
            "method; name the sub-module whose output is the feature vector."
        )
    return target


def _inputs_and_labels(batch: Any) -> tuple[Any, torch.Tensor | None]:
    labels = None
    if isinstance(batch, (list, tuple)):
        x = batch[0]
        if len(batch) > 1 and isinstance(batch[1], torch.Tensor) and batch[1].dim() == 1:
            labels = batch[1]
    elif isinstance(batch, dict):
        key = next((k for k in ("x", "input", "image", "images") if k in batch), None)
        if key is None:
            raise ValueError(
                f"DomainShiftReport: cannot find the inputs in a batch with keys {sorted(batch)}; "
                "use (x, y) batches or a dict with an 'x' key."
            )
        x = batch[key]
        labels = next((batch[k] for k in ("y", "label", "labels") if k in batch), None)
    else:
        x = batch
    return x, labels


def _as_vectors(out: Any) -> torch.Tensor:
    if isinstance(out, (list, tuple)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ValueError(
            f"DomainShiftReport: the feature function returned {type(out).__name__}; it must return a "
            "tensor (N, D) (or (N, C, H, W), which is average-pooled)."
        )
    if out.dim() == 4:
        out = out.mean(dim=(2, 3))
    return out.flatten(1).float()


def extract_features(
    fn: Callable[[Any], torch.Tensor],
    loader: Iterable,
    max_samples: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features ``(N, D)`` (CPU, float32) and labels (or ``None``) of up to ``max_samples`` inputs.

    Modules reached by ``fn`` should already be in eval mode (the callback takes care of it).

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> loader = DataLoader(TensorDataset(torch.randn(10, 4), torch.arange(10)), batch_size=4)
        >>> feats, labels = extract_features(nn.Linear(4, 2), loader, max_samples=6)
        >>> feats.shape, labels.tolist()
        (torch.Size([6, 2]), [0, 1, 2, 3, 4, 5])
    """
    feats: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    seen = 0
    with torch.no_grad():
        for batch in loader:
            x, y = _inputs_and_labels(batch)
            x = x.to(device) if isinstance(x, torch.Tensor) else x
            feats.append(_as_vectors(fn(x)).cpu())
            if y is not None:
                labels.append(y.cpu())
            seen += len(feats[-1])
            if max_samples is not None and seen >= max_samples:
                break
    if not feats:
        raise ValueError("DomainShiftReport: a dataloader yielded no batches; both domains need samples.")
    out = torch.cat(feats)
    lab = torch.cat(labels) if len(labels) == len(feats) else None
    if max_samples is not None:
        out = out[:max_samples]
        lab = lab[:max_samples] if lab is not None else None
    return out, lab


# --------------------------------------------------------------------------- embedding
def embed_2d(features: torch.Tensor, method: EmbeddingMethod = "pca", seed: int = 0) -> np.ndarray:
    """Project ``(N, D)`` features to ``(N, 2)`` with PCA or t-SNE (scikit-learn).

    Raises:
        ValueError: unknown method.
        ImportError: ``"tsne"`` without scikit-learn.

    Example:
        >>> embed_2d(torch.randn(20, 5)).shape
        (20, 2)
    """
    x = features.double()
    if method == "pca":
        x = x - x.mean(dim=0, keepdim=True)
        _, _, v = torch.linalg.svd(x, full_matrices=False)
        out = x @ v[:2].T
        if out.shape[1] < 2:
            out = torch.cat([out, torch.zeros(len(out), 2 - out.shape[1], dtype=out.dtype)], dim=1)
        return out.numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
        return tsne.fit_transform(x.numpy())
    raise ValueError(f"embedding method={method!r} must be 'pca' or 'tsne'.")


def plot_domain_embedding(
    source: torch.Tensor,
    target: torch.Tensor,
    source_labels: torch.Tensor | None = None,
    target_labels: torch.Tensor | None = None,
    methods: Sequence[EmbeddingMethod] = ("pca",),
    title: str = "",
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
    seed: int = 0,
) -> Any:
    """A matplotlib ``Figure``: one row per method, columns coloured by domain and by class.

    Source points are circles, target points triangles. Without labels the class panel shows
    that domain in grey. The figure is ``figsize`` inches at ``dpi`` (default width 9 in,
    3.8 in per row); it does not use pyplot, so nothing global changes and no display is
    needed.

    Example:
        >>> fig = plot_domain_embedding(torch.randn(30, 4), torch.randn(30, 4) + 2,
        ...                             torch.arange(30) % 3, None, figsize=(6, 3), dpi=50)
        >>> [int(v) for v in fig.get_size_inches() * fig.dpi]
        [300, 150]
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = list(methods)
    if not methods:
        raise ValueError("plot_domain_embedding: give at least one embedding method ('pca', 'tsne').")
    figsize = figsize or (9.0, 3.8 * len(methods) + (0.4 if title else 0.0))
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(methods), 2, squeeze=False)
    n_s = len(source)
    both = torch.cat([source, target])
    classes = sorted(
        {int(v) for lab in (source_labels, target_labels) if lab is not None for v in lab.unique().tolist()}
    )
    cmap = _class_colours(len(classes))
    colour_of = {c: cmap[i] for i, c in enumerate(classes)}
    size = max(2.0, 12.0 - len(both) / 200)
    for row, method in enumerate(methods):
        xy = embed_2d(both, method, seed)
        xy_s, xy_t = xy[:n_s], xy[n_s:]
        ax_dom, ax_cls = axes[row]
        ax_dom.scatter(xy_s[:, 0], xy_s[:, 1], s=size, c="tab:blue", marker="o", alpha=0.6, label="source")
        ax_dom.scatter(xy_t[:, 0], xy_t[:, 1], s=size, c="tab:orange", marker="^", alpha=0.6, label="target")
        ax_dom.legend(loc="best", fontsize=7, markerscale=1.5)
        for points, labels, marker in ((xy_s, source_labels, "o"), (xy_t, target_labels, "^")):
            colours = "0.6" if labels is None else [colour_of[int(v)] for v in labels]
            ax_cls.scatter(points[:, 0], points[:, 1], s=size, c=colours, marker=marker, alpha=0.6)
        if classes:
            handles = [
                ax_cls.scatter([], [], s=12, color=colour_of[c], marker="s", label=str(c)) for c in classes
            ]
            ax_cls.legend(
                handles=handles,
                loc="best",
                fontsize=6,
                ncol=2,
                title="class (○ src, △ tgt)",
                title_fontsize=6,
            )
        ax_dom.set_title(f"{method.upper() if method == 'pca' else 't-SNE'}: by domain", fontsize=9)
        ax_cls.set_title(f"{method.upper() if method == 'pca' else 't-SNE'}: by class", fontsize=9)
        for ax in (ax_dom, ax_cls):
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _class_colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    name = "tab10" if n <= 10 else "tab20"
    cmap = colormaps[name]
    return [cmap(i % cmap.N) for i in range(n)]


def _figure_to_array(fig: Any) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


# --------------------------------------------------------------------------- report
@dataclass
class ReportResult:
    """One report: when it was made, the proxy A-distance and where the PNG went."""

    stage: str
    epoch: int
    step: int
    pad: float
    num_source: int
    num_target: int
    png: str | None = None


def domain_shift_report(
    fn: Callable[[Any], torch.Tensor],
    source_loader: Iterable,
    target_loader: Iterable,
    max_samples: int | None = 500,
    methods: Sequence[EmbeddingMethod] = ("pca",),
    title: str = "",
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[float, Any, dict[str, torch.Tensor | None]]:
    """Proxy A-distance, embedding figure and the features themselves, for any feature function.

    Returns:
        ``(pad, figure, data)`` where ``data`` holds ``source``, ``target`` features and
        ``source_labels``, ``target_labels`` (``None`` when a loader has no labels).

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> g = torch.Generator().manual_seed(0)
        >>> src = DataLoader(TensorDataset(torch.randn(64, 4, generator=g)), batch_size=32)
        >>> tgt = DataLoader(TensorDataset(torch.randn(64, 4, generator=g) + 8), batch_size=32)
        >>> pad, fig, data = domain_shift_report(nn.Identity(), src, tgt, figsize=(4, 2), dpi=40)
        >>> pad, data["source"].shape
        (2.0, torch.Size([64, 4]))
    """
    source, source_labels = extract_features(fn, source_loader, max_samples, device)
    target, target_labels = extract_features(fn, target_loader, max_samples, device)
    if source.shape[1] != target.shape[1]:
        raise ValueError(
            f"DomainShiftReport: source features {tuple(source.shape)} and target features "
            f"{tuple(target.shape)} differ in width; both domains must go through the same network."
        )
    pad = float(proxy_a_distance(source, target, seed=seed))
    full_title = f"{title}  proxy A-distance = {pad:.2f}".strip()
    figure = plot_domain_embedding(
        source, target, source_labels, target_labels, methods, full_title, figsize, dpi, seed
    )
    data = {
        "source": source,
        "target": target,
        "source_labels": source_labels,
        "target_labels": target_labels,
    }
    return pad, figure, data


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

    **Feature function**: ``features`` is an attribute path on the LightningModule (default
    ``"backbone"``, as in :class:`~lt_transfer.TransferClassifier` and
    :class:`~lt_transfer.modules.DomainAdaptationModule`) whose call maps an input batch to
    ``(N, D)`` features (``(N, C, H, W)`` is average-pooled). Use ``"encoder"``,
    ``"model.features"``, ``"forward_features"`` ... for your own module.

    **Data**: ``source_dataloader``/``target_dataloader`` when given; otherwise the
    datamodule's ``val_dataloader()`` (falling back to the trainer's validation loaders),
    picking loaders ``source`` and ``target``: an index, or a name looked up in the
    datamodule's (or module's ``hparams``) ``eval_names`` — ``DomainAdaptationDataModule``
    names them ``["source", "target"]``. Batches are ``(x, y)``, ``(x,)``, ``x`` or dicts
    with ``"x"``/``"y"``; labels colour the class panel when present.

    Args:
        features: attribute path of the feature function on the LightningModule.
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
        >>> report = DomainShiftReport(features="backbone", methods=["pca"], max_samples=200)
        >>> report.results
        []
    """

    def __init__(
        self,
        features: str = "backbone",
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
        if not isinstance(features, str):
            raise ValueError(
                f"{name}(features={features!r}) must be an attribute path string, e.g. 'backbone'."
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
        self.features = features
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
        return self._generate_state_key(features=self.features, source=self.source, target=self.target)

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
        assert payload is not None
        self.results.append(ReportResult(**payload))

    def _compute_and_write(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> dict[str, Any]:
        fn = resolve_feature_fn(pl_module, self.features)
        source_loader, target_loader = self._loaders(trainer, pl_module)
        modes = {m: m.training for m in pl_module.modules()}
        pl_module.eval()
        try:
            title = f"{stage} (epoch {trainer.current_epoch}, step {trainer.global_step})"
            pad, figure, data = domain_shift_report(
                fn,
                source_loader,
                target_loader,
                self.max_samples,
                self.methods,
                title,
                self.figsize,
                self.dpi,
                self.seed,
                pl_module.device,
            )
        finally:
            for module, mode in modes.items():
                module.train(mode)
        out_dir = self.output_dir(trainer)
        out_dir.mkdir(parents=True, exist_ok=True)
        png = out_dir / f"domain_report_{stage}.png"
        figure.savefig(png, dpi=self.dpi)
        step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics({f"{self.log_prefix}/pad": pad}, step=step)
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    f"{self.log_prefix}/embedding", _figure_to_array(figure), step, dataformats="HWC"
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
