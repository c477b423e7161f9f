"""When the feature cache does not apply, and why.

Cached features stand in for the backbone only when the backbone is a fixed function of each
sample and each sample is fixed. The checks here say why not, in words for the warning:

* :func:`loader_problem`: the loader cannot be served from a cache (no sample index, no
  batched fetch, persistent workers this torch release cannot restart);
* :func:`random_transforms` and :func:`augmentation_found`: random training augmentation
  (found in the data set's transform, or by loading a few samples twice);
* :func:`stochastic_modules`: BatchNorm or dropout in training mode inside the frozen
  backbone (its output would depend on the batch or on chance).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from lt_transfer.callbacks.feature_cache.random_state import preserved_rng
from lt_transfer.callbacks.feature_cache.workers import can_restart_workers, has_persistent_workers

__all__ = ["augmentation_found", "loader_problem", "random_transforms", "stochastic_modules"]

_RANDOM_TRANSFORM_NAMES = (
    "AutoAugment",
    "RandAugment",
    "TrivialAugmentWide",
    "AugMix",
    "ColorJitter",
    "ElasticTransform",
    "GaussianNoise",
)
_STOCHASTIC_MODULES = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def loader_problem(loader: DataLoader) -> str | None:
    """Why ``loader`` cannot be served from a cache, or ``None``.

    Example:
        >>> loader_problem(DataLoader([1, 2, 3], batch_size=None))
        'the loader has batch_size=None (no batched fetch)'
    """
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        return "it is an IterableDataset (no sample index)"
    if loader.batch_sampler is None:
        return "the loader has batch_size=None (no batched fetch)"
    if has_persistent_workers(loader) and not can_restart_workers(loader):
        return (
            "its persistent_workers would keep serving a stale copy of the data set and this torch "
            "release offers no way to restart them; use persistent_workers=False"
        )
    return None


def random_transforms(dataset: Any) -> list[str]:
    """Names of random transform objects reachable from the data set's ``transform``.

    ``Subset``-style wrappers (a ``dataset`` attribute) are followed.

    Example:
        >>> from torchvision import transforms as T
        >>> class Images:
        ...     transform = T.Compose([T.RandomHorizontalFlip(), T.ToTensor()])
        >>> random_transforms(Images())
        ['RandomHorizontalFlip']
    """
    found: list[str] = []
    seen: set[int] = set()

    def visit(obj: Any, level: int) -> None:
        if obj is None or id(obj) in seen or level > 6:
            return
        seen.add(id(obj))
        name = type(obj).__name__
        if name.startswith("Random") or name in _RANDOM_TRANSFORM_NAMES:
            found.append(name)
        children: list[Any] = [getattr(obj, "transforms", None), getattr(obj, "transform", None)]
        if isinstance(obj, nn.Module):
            children += list(obj.children())
        elif isinstance(obj, (list, tuple)):
            children = list(obj)
        for child in children:
            visit(child, level + 1)

    current = dataset
    for _ in range(4):
        visit(getattr(current, "transform", None), 0)
        visit(getattr(current, "transforms", None), 0)
        current = getattr(current, "dataset", None)
        if current is None:
            break
    return found


def augmentation_found(
    dataset: Any, load: Callable[[Sequence[int]], list[Any]], indices: Sequence[int]
) -> list[str]:
    """Evidence of random augmentation: random transforms, or two loads of a sample that differ.

    ``load`` returns the data set's own samples for some indices; up to four of ``indices``
    are loaded twice (the random states are restored afterwards).

    Example:
        >>> data = [torch.tensor([1.0]), torch.tensor([2.0])]
        >>> augmentation_found(data, lambda idx: [data[i] + torch.rand(1) for i in idx], [0, 1])
        ['two loads of the same sample differ']
        >>> augmentation_found(data, lambda idx: [data[i] for i in idx], [0, 1])
        []
    """
    found = random_transforms(dataset)
    if found or not indices:
        return found
    probe = list(indices[:4])
    with preserved_rng():
        first, second = load(probe), load(probe)
    if not all(_same(a, b) for a, b in zip(first, second, strict=True)):
        return ["two loads of the same sample differ"]
    return []


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):
        return True  # not comparable (e.g. an image object): no evidence either way


def stochastic_modules(backbone: nn.Module) -> list[str]:
    """Names of BatchNorm and dropout modules of ``backbone`` that are in training mode.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout())
        >>> stochastic_modules(net), stochastic_modules(net.eval())
        (['1', '2'], [])
    """
    return [name for name, m in backbone.named_modules() if isinstance(m, _STOCHASTIC_MODULES) and m.training]
