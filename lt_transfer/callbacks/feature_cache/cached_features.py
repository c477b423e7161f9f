"""CachedFeatures: the typed input slot of a batch served from the feature cache.

A cached batch must reach the LightningModule's step through the user's own ``DataLoader``
(collate function, worker processes, ``pin_memory``), Lightning's transfer to the device and
``DistributedDataParallel``, and the step passes it to the backbone exactly as it would pass
an image batch. The wrapped backbone forward then has to know, without guessing from shapes
or values, whether its input is cached features. :class:`CachedFeatures` is how it knows: a
``torch.Tensor`` subclass holding the ``(N, D)`` features, with the rows' data-set indices and
the identity of the cache that produced them attached. It is recognised by type alone.

What keeps the type (checked by the tests): ``torch.stack`` of per-sample ``CachedFeatures``
(what ``default_collate`` does, in the main process and in workers, including its
shared-memory ``out=`` path), pickling (worker → main process), and the row-preserving moves
``to`` / ``cuda`` / ``cpu`` / ``pin_memory`` / ``clone`` / ``detach`` / ``contiguous``
(``pin_memory``, Lightning's ``move_data_to_device``, DDP's input move, precision plugins'
input casts). Every other operation returns a plain tensor, so anything computed *from* cached
features (a slice, a sum, a concatenation with other inputs) is never mistaken for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["CachedFeatures"]


class CachedFeatures(torch.Tensor):
    """Cached backbone features ``(N, D)`` of data-set rows ``sample_indices``, from cache ``cache_id``.

    Its values are the features themselves; the two attributes say where they come from. One
    sample's ``CachedFeatures`` is ``(D,)`` with a 0-d ``sample_indices``; ``torch.stack``
    (``default_collate``) joins samples of one cache into a batch.

    Attributes:
        sample_indices: ``(N,)`` int64 data-set indices of the rows (``()`` for one sample).
        cache_id: the id of the feature store that served them (a stale id means the store
            was dropped or rebuilt since, and the callback recomputes those rows).

    Example:
        >>> from torch.utils.data import default_collate
        >>> rows = [CachedFeatures(torch.full((3,), float(i)), torch.tensor(i), cache_id=1) for i in (4, 7)]
        >>> batch = default_collate(rows)
        >>> type(batch).__name__, batch.sample_indices.tolist(), batch.cache_id, tuple(batch.shape)
        ('CachedFeatures', [4, 7], 1, (2, 3))
        >>> type(batch.to(torch.float16)).__name__, type(batch[0]).__name__, type(batch + 1).__name__
        ('CachedFeatures', 'Tensor', 'Tensor')
    """

    sample_indices: torch.Tensor
    cache_id: int

    @staticmethod
    def __new__(cls, features: torch.Tensor, sample_indices: torch.Tensor, cache_id: int) -> CachedFeatures:
        with torch._C.DisableTorchFunctionSubclass():
            out = features.as_subclass(cls)
        out.sample_indices = sample_indices
        out.cache_id = cache_id
        return out

    @property
    def features(self) -> torch.Tensor:
        """The features as a plain tensor (a view, no copy)."""
        with torch._C.DisableTorchFunctionSubclass():
            return self.as_subclass(torch.Tensor)

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        return (
            f"CachedFeatures(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device}, "
            f"sample_indices={self.sample_indices.tolist()}, cache_id={self.cache_id})"
        )

    @classmethod
    def __torch_function__(
        cls,
        func: Callable[..., Any],
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if func in _ROW_PRESERVING and isinstance(args[0], CachedFeatures) and out is not args[0]:
            source = args[0]
            indices = source.sample_indices
            if indices.device != out.device:
                indices = indices.to(out.device)
            if func is torch.Tensor.pin_memory:
                indices = indices.pin_memory()
            return CachedFeatures(out, indices, source.cache_id)
        if func is torch.stack:
            return _stacked(out, args[0])
        return out


_ROW_PRESERVING = frozenset(
    {
        torch.Tensor.to,
        torch.Tensor.cuda,
        torch.Tensor.cpu,
        torch.Tensor.pin_memory,
        torch.Tensor.clone,
        torch.Tensor.detach,
        torch.Tensor.contiguous,
    }
)


def _stacked(out: torch.Tensor, items: Sequence[Any]) -> torch.Tensor:
    """``torch.stack`` of samples of one cache is a batch of that cache; anything else is plain."""
    if not items or not all(isinstance(item, CachedFeatures) for item in items):
        return out
    ids = {item.cache_id for item in items}
    if len(ids) != 1:
        raise ValueError(
            f"CachedFeatures: torch.stack got rows of several feature caches {sorted(ids)}; a batch "
            "holds rows of one cache. Do not mix samples of different data sets in one batch."
        )
    indices = torch.stack([item.sample_indices for item in items])
    return CachedFeatures(out, indices, ids.pop())
