"""The domain-shift figure: source vs target features in 2-D, coloured by domain and by class.

Drawn with matplotlib's object API (no pyplot), so nothing global changes and no display is
needed; :func:`figure_to_array` renders it for TensorBoard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lt_transfer.callbacks.domain_report.embedding import EmbeddingMethod, embed_2d

__all__ = ["figure_to_array", "plot_domain_embedding"]


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


def figure_to_array(fig: Any) -> np.ndarray:
    """The figure rendered as an RGB image array ``(H, W, 3)``, ``uint8``.

    Example:
        >>> fig = plot_domain_embedding(torch.randn(8, 3), torch.randn(8, 3), figsize=(2, 1), dpi=40)
        >>> figure_to_array(fig).shape
        (40, 80, 3)
    """
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
