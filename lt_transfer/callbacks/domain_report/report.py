"""The domain-shift report as a plain function: proxy A-distance, embedding figure and features.

The **proxy A-distance** (PAD, Ben-David et al. 2006/2010; see
:mod:`lt_transfer.metrics.proxy_a_distance`) between source and target feature vectors: 0 =
a linear classifier cannot tell the domains apart, 2 = perfectly separable. It works on any
feature function and any loaders, with or without Lightning; :class:`DomainShiftReport`
calls it during training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lt_transfer.callbacks.domain_report.features import extract_features
from lt_transfer.callbacks.domain_report.plotting import plot_domain_embedding
from lt_transfer.metrics.proxy_a_distance import proxy_a_distance

__all__ = ["check_same_width", "domain_shift_report", "report_features"]


def domain_shift_report(
    fn: Callable[[Any], torch.Tensor],
    source_loader: Iterable,
    target_loader: Iterable,
    max_samples: int | None = 500,
    device: torch.device | str = "cpu",
    **options: Any,
) -> tuple[float, Any, dict[str, torch.Tensor | None]]:
    """Proxy A-distance, embedding figure and the features themselves, for any feature function.

    Args:
        fn: maps a batch input to ``(N, D)`` features (``(N, C, H, W)`` is average-pooled).
        source_loader: source-domain batches (read by the batch contract).
        target_loader: target-domain batches.
        max_samples: most samples per domain (``None``: all).
        device: where ``fn`` runs.
        **options: by keyword, ``title`` and ``seed`` of :func:`report_features` and the figure
            options of :func:`~lt_transfer.callbacks.domain_report.plot_domain_embedding`
            (``methods``, ``figsize``, ``dpi``).

    Raises:
        ValueError: an empty loader, or source and target features of different widths.

    Returns:
        ``(pad, figure, data)`` where ``data`` holds ``source``, ``target`` features and
        ``source_labels``, ``target_labels`` (``None`` when a loader has no labels).

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> g = torch.Generator().manual_seed(0)
        >>> src = DataLoader(TensorDataset(torch.randn(64, 4, generator=g)), batch_size=32)
        >>> tgt = DataLoader(TensorDataset(torch.randn(64, 4, generator=g) + 8), batch_size=32)
        >>> pad, fig, data = domain_shift_report(torch.nn.Identity(), src, tgt, figsize=(4, 2), dpi=40)
        >>> pad, data["source"].shape
        (2.0, torch.Size([64, 4]))
    """
    source, source_labels = extract_features(fn, source_loader, max_samples, device)
    target, target_labels = extract_features(fn, target_loader, max_samples, device)
    return report_features(source, target, source_labels, target_labels, **options)


def check_same_width(source: torch.Tensor, target: torch.Tensor) -> None:
    """Raise unless the ``(N, D)`` source and target features have the same width ``D``.

    Example:
        >>> check_same_width(torch.zeros(3, 4), torch.zeros(5, 4))
    """
    if source.shape[1] != target.shape[1]:
        raise ValueError(
            f"DomainShiftReport: source features {tuple(source.shape)} and target features "
            f"{tuple(target.shape)} differ in width; both domains must go through the same network."
        )


def report_features(
    source: torch.Tensor,
    target: torch.Tensor,
    source_labels: torch.Tensor | None = None,
    target_labels: torch.Tensor | None = None,
    *,
    title: str = "",
    seed: int = 0,
    **figure_options: Any,
) -> tuple[float, Any, dict[str, torch.Tensor | None]]:
    """:func:`domain_shift_report` on features already extracted (``(N, D)`` per domain).

    Args:
        source: source features ``(N, D)``.
        target: target features ``(M, D)``.
        source_labels: class labels of the source samples (``None``: unlabelled).
        target_labels: class labels of the target samples.
        title: figure title (the distance is appended).
        seed: seed of the PAD split and of t-SNE.
        **figure_options: the figure options of
            :func:`~lt_transfer.callbacks.domain_report.plot_domain_embedding`: ``methods``
            (``"pca"`` and/or ``"tsne"``), ``figsize`` (inches; default ``(9, 3.8 per method)``),
            ``dpi``.

    Raises:
        ValueError: features of different widths, or fewer than
            :data:`~lt_transfer.metrics.proxy_a_distance.MIN_SAMPLES` per domain.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> source, target = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g) + 9
        >>> pad, fig, data = report_features(source, target, figsize=(4, 2), dpi=40)
        >>> pad
        2.0
    """
    check_same_width(source, target)
    pad = float(proxy_a_distance(source, target, seed=seed))
    full_title = f"{title}  proxy A-distance = {pad:.2f}".strip()
    figure = plot_domain_embedding(
        source, target, source_labels, target_labels, title=full_title, seed=seed, **figure_options
    )
    data = {
        "source": source,
        "target": target,
        "source_labels": source_labels,
        "target_labels": target_labels,
    }
    return pad, figure, data
