"""Restarting a loader's persistent worker processes (the cache's one use of DataLoader internals).

A worker process holds a copy of the data set taken when it starts, the cache's
``__getitems__`` and store included. Without ``persistent_workers`` every epoch's iterator
starts new workers, which see the data set as it is then. With ``persistent_workers=True`` the
loader keeps one iterator and its workers for its whole life, and torch has no public way to
replace them. So, when the cache starts or stops serving a loader, the loader's persistent
iterator (``DataLoader._iterator``) is shut down (``_shutdown_workers``) and dropped here, and
the next ``iter(loader)`` starts new workers. Both internals are checked by
:func:`can_restart_workers`; on a torch release without them the cache does not serve such a
loader (it warns) rather than let old workers serve stale samples.
"""

from __future__ import annotations

from torch.utils.data import DataLoader

from lt_transfer.callbacks.feature_cache.random_state import loader_generators, preserved_rng

__all__ = ["can_restart_workers", "has_persistent_workers", "restart_workers", "shut_down_workers"]


def has_persistent_workers(loader: DataLoader) -> bool:
    """Whether ``loader`` keeps its worker processes from one iteration to the next.

    Example:
        >>> has_persistent_workers(DataLoader([1, 2], num_workers=1, persistent_workers=True))
        True
    """
    return bool(loader.persistent_workers and loader.num_workers > 0)


def can_restart_workers(loader: DataLoader) -> bool:
    """Whether this torch release lets the cache restart the persistent workers of ``loader``.

    Example:
        >>> can_restart_workers(DataLoader([1, 2], num_workers=1, persistent_workers=True))
        True
    """
    from torch.utils.data import dataloader

    iterator_class = getattr(dataloader, "_MultiProcessingDataLoaderIter", None)
    return "_iterator" in vars(loader) and callable(getattr(iterator_class, "_shutdown_workers", None))


def shut_down_workers(loader: DataLoader) -> bool:
    """Stop the persistent workers of ``loader``; its next ``iter()`` starts new ones.

    Returns whether there were workers to stop. Call it only while nothing iterates the loader.

    Example:
        >>> loader = DataLoader([1, 2], num_workers=1, persistent_workers=True)
        >>> _ = list(loader)
        >>> shut_down_workers(loader), shut_down_workers(loader)
        (True, False)
    """
    if not has_persistent_workers(loader):
        return False
    iterator = vars(loader).get("_iterator")
    if iterator is None:
        return False
    loader._iterator = None
    iterator._shutdown_workers()
    return True


def restart_workers(loader: DataLoader) -> bool:
    """Replace the persistent workers of ``loader`` by new ones, started now.

    The new iterator is created without consuming random numbers (global or the loader's
    generators), so the run's random streams, and thus its shuffling, are those it would have
    had with the old workers; the loader's next ``iter()`` resets it, as it would have reset the
    old one. Returns whether workers were restarted.

    Example:
        >>> loader = DataLoader(list(range(4)), num_workers=1, persistent_workers=True)
        >>> first = iter(loader)
        >>> restart_workers(loader), iter(loader) is first
        (True, False)
    """
    if not shut_down_workers(loader):
        return False
    with preserved_rng(loader_generators(loader)):
        iter(loader)
    return True
