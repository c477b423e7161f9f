"""Random-number state the cache must not disturb.

The cache promises the batches the run would have seen without it, so whatever it does on the
side (loading samples twice to detect augmentation, restarting loader workers) must leave the
random streams as it found them: the global ``random``, NumPy and torch (CPU) states and the
``torch.Generator`` objects a loader draws from (its own, its sampler's).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import DataLoader

__all__ = ["loader_generators", "preserved_rng"]


def loader_generators(loader: DataLoader) -> list[torch.Generator]:
    """The generators ``loader`` draws from: its ``generator`` and its samplers' (no repeats).

    Example:
        >>> g = torch.Generator()
        >>> loader = DataLoader(list(range(4)), shuffle=True, generator=g)
        >>> [x is g for x in loader_generators(loader)]
        [True]
    """
    found: list[torch.Generator] = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (loader, loader.sampler, getattr(batch_sampler, "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


@contextmanager
def preserved_rng(generators: tuple[torch.Generator, ...] | list[torch.Generator] = ()) -> Iterator[None]:
    """Restore the global random states (and those of ``generators``) on exit.

    Example:
        >>> _ = torch.manual_seed(0); before = torch.rand(1)
        >>> _ = torch.manual_seed(0)
        >>> with preserved_rng():
        ...     _ = torch.rand(5), random.random(), np.random.rand()
        >>> bool(torch.rand(1) == before)
        True
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    states = [g.get_state() for g in generators]
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        for generator, state in zip(generators, states, strict=True):
            generator.set_state(state)
