"""Which samples the loop will fetch: Lightning's batch limits and the sampler's order.

``fast_dev_run``, ``limit_train_batches``/``limit_val_batches`` (int or float),
``overfit_batches`` and ``max_steps`` make the loop fetch only the first batches of a loader.
A build pass over the whole data set would then cost far more than the run itself (a
one-batch ``fast_dev_run`` of a recipe paid for every image), so the cache holds only the
samples of those batches:

* :func:`training_batches` / :func:`validation_batches`: how many batches of a loader the
  coming training epoch (or validation run) fetches, as the trainer computed them;
* :func:`batch_limit`: that number, or ``None`` when it is the whole loader (no limit);
* :func:`planned_indices`: the data-set indices of those batches in the order the loader's
  sampler will yield them (shuffling, ``DistributedSampler`` shard and epoch included),
  found by running the loader's own batch sampler from the random state the real iterator
  starts from, and leaving every random stream as it was.

The order is a forecast, never trusted for correctness: a batch with a sample outside the
cache is loaded from the data set and runs the backbone (see ``dataset_patch.py``), so a
forecast that misses (another callback drawing random numbers first, a stateful custom batch
sampler) costs backbone time, never wrong features.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, Dataset

from lt_transfer.callbacks.feature_cache.random_state import loader_generators, preserved_rng

__all__ = ["batch_limit", "planned_indices", "training_batches", "validation_batches"]


def training_batches(trainer: Trainer) -> int | float:
    """Batches of the training loader the coming epoch fetches (``inf``: unknown/unbounded).

    ``trainer.num_training_batches`` (``limit_train_batches``, ``overfit_batches``,
    ``fast_dev_run``), cut to the optimizer steps ``max_steps`` leaves when Lightning
    optimizes automatically.

    Example:
        >>> training_batches(Trainer(fast_dev_run=True, logger=False))  # max_steps=1
        1
    """
    batches = trainer.num_training_batches
    automatic = getattr(trainer.lightning_module, "automatic_optimization", True)
    if trainer.max_steps >= 0 and automatic:
        steps_left = max(trainer.max_steps - trainer.global_step, 0)
        batches = min(batches, steps_left * trainer.accumulate_grad_batches)
    return batches


def validation_batches(trainer: Trainer, index: int) -> int | float:
    """Batches of validation loader ``index`` the coming validation run fetches.

    ``trainer.num_val_batches`` (``limit_val_batches``, ``overfit_batches``, ``fast_dev_run``),
    known once the validation run has set up its loaders (``inf`` before).

    Example:
        >>> validation_batches(Trainer(limit_val_batches=2, logger=False), 0)  # before any run
        inf
    """
    counts = trainer.num_val_batches
    return counts[index] if index < len(counts) else float("inf")


def batch_limit(batches: int | float, loader: DataLoader) -> int | None:
    """``batches`` when the loop fetches fewer batches than ``loader`` has, else ``None``.

    Example:
        >>> loader = DataLoader(list(range(10)), batch_size=4)
        >>> batch_limit(1, loader), batch_limit(3, loader), batch_limit(float("inf"), loader)
        (1, None, None)
    """
    if batches == float("inf") or batches >= len(loader):
        return None
    return int(batches)


class _Positions(Dataset):
    """A data set whose sample ``i`` is ``i``: a loader over it yields the indices it fetches."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


def planned_indices(
    loader: DataLoader,
    num_batches: int,
    fresh_iterator: bool,
    rng_state: torch.Tensor | None = None,
) -> list[int]:
    """Data-set indices of the first ``num_batches`` batches the loader's next iteration yields.

    No random number is consumed (global streams and the loader's generators are restored).

    Args:
        loader: the loader the loop iterates.
        num_batches: how many batches it fetches.
        fresh_iterator: ``True`` when the loop will create a new iterator (``iter(loader)``
            draws its base seed before the sampler draws the order); ``False`` when the
            iterator exists already and only its sampler has yet to run (the first epoch of a
            fit, persistent workers).
        rng_state: the global torch random state the iterator starts from (default: now).

    Example:
        >>> loader = DataLoader(list(range(10)), batch_size=4, shuffle=True)
        >>> _ = torch.manual_seed(0)
        >>> planned = planned_indices(loader, 2, fresh_iterator=True)
        >>> [int(i) for batch in itertools.islice(loader, 2) for i in batch] == planned
        True
    """
    with preserved_rng(loader_generators(loader)):
        if rng_state is not None:
            torch.set_rng_state(rng_state)
        if fresh_iterator:
            batches: Any = iter(
                DataLoader(
                    _Positions(len(loader.dataset)),
                    batch_sampler=loader.batch_sampler,
                    collate_fn=_as_list,
                    generator=loader.generator,
                )
            )
        else:
            batches = iter(loader.batch_sampler)
        return [int(i) for batch in itertools.islice(batches, num_batches) for i in batch]
