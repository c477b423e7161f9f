"""Feature vectors of a network's sub-module over a loader: what the domain-shift report compares.

:func:`resolve_feature_fn` finds the callable at an attribute path of a module (the backbone,
or any sub-module or method); :func:`extract_features` runs it over a loader, reading each
batch by the batch contract (:func:`lt_transfer.batches.split_batch`), and returns ``(N, D)``
features with the class labels when the batches have them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from lt_transfer.batches import input_to, split_batch

__all__ = ["extract_features", "resolve_feature_fn"]


def resolve_feature_fn(module: nn.Module, backbone: str) -> Callable[[Any], torch.Tensor]:
    """Return the callable at attribute path ``backbone`` of ``module`` (e.g. ``"backbone"``).

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
    for part in [p for p in backbone.split(".") if p]:
        if not hasattr(target, part):
            children = [name for name, _ in module.named_children()]
            raise ValueError(
                f"DomainShiftReport(backbone={backbone!r}): {type(target).__name__} has no attribute "
                f"{part!r}. The module's children are {children}; name the sub-module (or method) whose "
                "output is the feature vector, e.g. backbone='backbone' or backbone='encoder.pool'."
            )
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(
            f"DomainShiftReport(backbone={backbone!r}) names a {type(target).__name__}, not a module or "
            "method; name the sub-module whose output is the feature vector."
        )
    return target


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

    Batches are read by the batch contract of :mod:`lt_transfer.batches` (a tensor,
    ``(x, y[, index])``, a dict with ``"image"``/``"x"``/... and ``"label"``/``"y"``/...); the
    labels are kept when every batch has class indices ``(N,)``. Modules reached by ``fn``
    should already be in eval mode (the callback takes care of it).

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
        for raw in loader:
            batch = split_batch(raw, "DomainShiftReport")
            feats.append(_as_vectors(fn(input_to(batch.x, device))).cpu())
            if batch.y is not None and batch.y.dim() == 1:
                labels.append(batch.y.cpu())
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
