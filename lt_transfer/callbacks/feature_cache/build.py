"""The build pass: run the frozen backbone once over the samples one rank caches.

One deterministic pass over the data set through the loader's own collate function, workers
and transform (a private random generator, so the global random stream is untouched), the
backbone under ``no_grad`` and the trainer's precision context. Under DDP each rank computes
only its shard (:func:`shard_indices`); when the training sampler reshuffles shards every
epoch (``DistributedSampler(shuffle=True)``, the Lightning default) every rank needs every
sample, so the shards are all-gathered; a fixed shard (``shuffle=False``, validation) never is.
When a batch limit cuts the epoch short, the callback passes the samples the limited loop
fetches instead (this rank's own, nothing gathered) and, when a later epoch needs more, the
current store to ``keep``: the new store holds its rows and the new ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, DistributedSampler

from lt_transfer.batches import input_to
from lt_transfer.callbacks.feature_cache.batch_layout import (
    InputKey,
    SampleLayout,
    UncacheableBatchError,
    batch_input,
)
from lt_transfer.callbacks.feature_cache.dataset_patch import DatasetPatch
from lt_transfer.callbacks.feature_cache.store import FeatureStore, StorageSpec

__all__ = ["BuildResult", "build_store", "shard_indices"]


def shard_indices(trainer: Trainer, loader: DataLoader) -> tuple[list[int], bool]:
    """The data-set indices this rank caches, and whether all ranks' shards must be gathered.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
        >>> shard_indices(trainer, DataLoader(list(range(5))))
        ([0, 1, 2, 3, 4], False)
    """
    size = len(loader.dataset)
    world, rank = trainer.world_size, trainer.global_rank
    if world <= 1:
        return list(range(size)), False
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler) and not sampler.shuffle:
        return sorted(set(iter(sampler))), False  # a fixed shard: never needs other ranks' data
    total = math.ceil(size / world) * world
    padded = list(range(size)) + list(range(total - size))
    return padded[rank:total:world], True


@dataclass
class BuildResult:
    """What a build pass produced.

    Attributes:
        store: the filled store, or ``None`` when the data cannot be cached.
        computed_samples: samples this process ran through the backbone.
        estimate_bytes: the size of the feature matrix (0 before allocation).
        problem: why there is no store (for a warning), or ``None``.
    """

    store: FeatureStore | None
    computed_samples: int = 0
    estimate_bytes: int = 0
    problem: str | None = None


def build_store(
    trainer: Trainer,
    forward: Callable[..., Any],
    device: torch.device,
    patch: DatasetPatch,
    loader: DataLoader,
    indices: list[int],
    gather: bool,
    input_key: InputKey,
    storage: StorageSpec,
    cache_id: int,
    name: str,
    batch_size: int | None = None,
    keep: FeatureStore | None = None,
) -> BuildResult:
    """Run ``forward`` (the real backbone) over ``indices`` of ``loader.dataset`` and store the features.

    Args:
        trainer: the running trainer (world size, precision, all-gather).
        forward: the backbone's own forward.
        device: where the backbone runs.
        patch: the data set's patch (its raw samples are loaded).
        loader: the loader to cache (collate function, workers, batch size).
        indices: the data-set indices this rank caches (:func:`shard_indices`).
        gather: all-gather the ranks' features (:func:`shard_indices`).
        input_key: where the input sits in a batch (see :mod:`.batch_layout`).
        storage: how the feature matrix is allocated.
        cache_id: the new store's id.
        name: the loader's name in messages (``"train"``, ``"val[0]"``).
        batch_size: batch size of the pass (default: the loader's).
        keep: a store of the same data set whose rows the new store takes over (the cache grows:
            ``indices`` are then only the samples it lacks).

    Raises:
        FeatureCacheMemoryError: the store exceeds the memory limit (``on_limit="error"``).
    """
    size = batch_size or loader.batch_size or 1
    build_loader = DataLoader(
        loader.dataset,
        batch_size=size,
        sampler=indices,
        # starting worker processes costs more than loading a single batch
        num_workers=loader.num_workers if len(indices) > size else 0,
        collate_fn=loader.collate_fn,
        generator=torch.Generator().manual_seed(0),
    )
    result = BuildResult(None)
    store: FeatureStore | None = None
    layout: SampleLayout | None = None
    local: list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]] = []
    position = 0
    patch.serving = False
    with torch.no_grad(), trainer.strategy.precision_plugin.forward_context():
        for batch in build_loader:
            if layout is None:
                try:
                    layout = SampleLayout.of(patch.raw(indices[:1])[0], batch, input_key)
                except UncacheableBatchError as error:
                    return BuildResult(None, problem=f"{error} Not caching.")
            x = batch_input(batch, layout.input_key)
            out = forward(input_to(x, device))
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or len(out) != len(x):
                _release(store)
                return BuildResult(
                    None,
                    result.computed_samples,
                    result.estimate_bytes,
                    f"FeatureCache: the backbone returned {type(out).__name__} "
                    f"{tuple(getattr(out, 'shape', ()))} for {len(x)} samples; the cache needs (N, D) "
                    "features. Not caching.",
                )
            try:
                fields = layout.other_fields(batch, name)
            except UncacheableBatchError as error:
                _release(store)
                return BuildResult(
                    None, result.computed_samples, result.estimate_bytes, f"{error} Not caching."
                )
            rows = torch.tensor(indices[position : position + len(x)], dtype=torch.long)
            position += len(x)
            if store is None:
                cached: Any = range(len(loader.dataset)) if gather else indices
                if keep is not None:
                    cached = [*keep.held_indices().tolist(), *cached]
                store = FeatureStore(len(loader.dataset), cached, layout, cache_id, out.dtype)
                features, path, result.estimate_bytes = storage.allocate(store.num_rows, out.shape[1], name)
                store.attach(features, path, fields)
                if keep is not None:
                    store.copy_rows(keep)
            if gather:
                local.append((rows, out.float(), fields))
            else:
                store.fill(rows, out, fields)
            result.computed_samples += len(x)
    if store is None:
        return result
    if gather:
        _gather(trainer, device, store, local)
    result.store = store
    return result


def _release(store: FeatureStore | None) -> None:
    if store is not None:
        store.release()


def _gather(
    trainer: Trainer,
    device: torch.device,
    store: FeatureStore,
    local: list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]],
) -> None:
    """Fill ``store`` with every rank's rows (each rank computed its own shard)."""
    strategy = trainer.strategy
    indices = strategy.all_gather(torch.cat([rows for rows, _, _ in local]).to(device)).reshape(-1)
    features = strategy.all_gather(torch.cat([out for _, out, _ in local]).to(device))
    fields = []
    for k in range(len(store.fields)):
        mine = torch.cat([f[k] for _, _, f in local]).to(device)
        fields.append(strategy.all_gather(mine).reshape(-1, *mine.shape[1:]))
    store.fill(indices, features.reshape(-1, features.shape[-1]), fields)
