"""The ``__getitems__`` the cache installs on one data set instance, and removes again.

``DataLoader`` fetches a batch with ``dataset.__getitems__(indices)`` when the data set has
one, then applies its collate function. Installing a callable object under that name on the
*instance* changes nothing else about the loader (sampler, shuffling, shard, workers, collate
function): while the cache serves, the call returns cached samples, otherwise the data set's
own samples (its own ``__getitems__`` or ``__getitem__``, transform included). A cache may hold
only some samples (the batches a limited loop fetches, see ``limits.py``): a batch with any
sample outside it is served as the data set's own samples, so the backbone computes it.

Loader worker processes hold a copy of the data set taken when they start, this object
included: :attr:`DatasetPatch.worker_cache_id` remembers what the loader's persistent workers
serve, so the callback knows when they must be restarted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.utils.data import DataLoader

from lt_transfer.callbacks.feature_cache.store import FeatureStore

__all__ = ["DatasetPatch"]


class DatasetPatch:
    """The ``__getitems__`` installed on ``loader.dataset`` (removable with :meth:`remove`).

    Args:
        loader: the loader whose data set is patched; its collate function is kept to
            rebuild batches of raw samples.

    Raises:
        AttributeError, TypeError: the data set does not accept a new attribute.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> loader = DataLoader(TensorDataset(torch.arange(4.0)), batch_size=2)
        >>> patch = DatasetPatch(loader)
        >>> [float(x) for (x,) in loader.dataset.__getitems__([1, 2])], patch.served
        ([1.0, 2.0], None)
        >>> patch.remove(); "__getitems__" in vars(loader.dataset)
        False
    """

    def __init__(self, loader: DataLoader) -> None:
        #: The loader served (Lightning may replace it by another one on the same data set).
        self.loader = loader
        self.dataset = loader.dataset
        self.collate_fn = loader.collate_fn
        self.store: FeatureStore | None = None
        self.serving = False
        #: False once caching failed for this data set (it is not tried again).
        self.eligible = True
        #: The cache id the loader's persistent workers serve (``None``: raw samples).
        self.worker_cache_id: int | None = None
        self._instance_attr = vars(self.dataset).get("__getitems__")
        self.dataset.__getitems__ = self

    @property
    def served(self) -> int | None:
        """The id of the store served now, ``None`` while raw samples are served."""
        return self.store.cache_id if self.serving and self.store is not None else None

    def follow(self, loader: DataLoader) -> None:
        """Serve ``loader``, a new loader on the same data set (Lightning reloaded the loaders).

        Its workers, if it started any, copied the data set as it is now.
        """
        self.loader, self.collate_fn = loader, loader.collate_fn
        self.worker_cache_id = self.served

    def __call__(self, indices: Sequence[int]) -> list[Any]:
        if self.serving and self.store is not None and self.store.holds(indices):
            return self.store.samples(indices)
        return self.raw(indices)  # a batch with a sample the cache lacks is loaded as it is

    def raw(self, indices: Sequence[int]) -> list[Any]:
        """The data set's own samples for ``indices`` (its transform applied)."""
        if self._instance_attr is not None:
            return self._instance_attr(indices)
        class_getitems = getattr(type(self.dataset), "__getitems__", None)
        if class_getitems is not None:
            return class_getitems(self.dataset, indices)
        return [self.dataset[i] for i in indices]

    def raw_batch(self, indices: Sequence[int]) -> Any:
        """The batch the loader would have made of raw samples ``indices``."""
        return self.collate_fn(self.raw(indices))

    def release(self) -> None:
        """Stop serving and free the store."""
        self.serving = False
        if self.store is not None:
            self.store.release()
        self.store = None

    def remove(self) -> None:
        """Release the store and restore the data set's own ``__getitems__``."""
        self.release()
        if vars(self.dataset).get("__getitems__") is self:
            if self._instance_attr is not None:
                self.dataset.__getitems__ = self._instance_attr
            else:
                del self.dataset.__getitems__
