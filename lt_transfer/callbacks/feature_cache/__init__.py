"""FeatureCache: train on cached frozen-backbone features; invalidated the moment it unfreezes.

While every backbone parameter is frozen (``requires_grad=False``), the backbone is a fixed
function of each sample, so recomputing it every epoch (as ``BackboneFinetuning``, fastai and
finetuning-scheduler do) wastes almost the whole cost of a head-only epoch. ``FeatureCache``
computes each sample's features *once*, in a deterministic pass over the data set, and then
serves batches of features through the very same ``DataLoader`` (same sampler, shuffling,
``drop_last`` and ``DistributedSampler`` shard, same random-number stream), so the head trains
on exactly the batches it would have seen without the cache.

Why a callback and not an option of :class:`~lt_transfer.TransferClassifier`: the frozen
phase of *any* module (a user's own LightningModule, a progressive-unfreezing schedule) has the
same waste, and the cache needs nothing from the module but the name of its backbone
attribute. A callback composes with ``ProgressiveUnfreezing``/``BackboneFinetuning`` without
either knowing about the other: the cache checks ``requires_grad`` itself.

How it works, one file per job:

* ``cached_features.py``: a cached batch carries, in the input slot, a
  :class:`CachedFeatures`: a tensor subclass holding the ``(N, D)`` features with the rows'
  sample indices and the id of the cache that served them. The backbone's ``forward`` is
  wrapped for the duration of ``fit`` (``callback.py``): it returns the features of a
  ``CachedFeatures`` of the cache serving now and runs the real backbone on everything else.
  Recognition is by type alone: a plain tensor, whatever its shape or values, always runs the
  backbone.
* ``dataset_patch.py``: the data set instance gets a ``__getitems__`` (the batched-fetch hook
  ``DataLoader`` calls) that returns cached samples while the cache serves and the original
  samples otherwise; nothing else about the loader changes. It is removed in ``teardown``.
* ``build.py``: before a frozen epoch the cache is built if missing: one pass over the data
  set (the loader's own collate function, workers and transform), under DDP each rank its own
  shard, all-gathered only when the training sampler reshuffles shards every epoch; with a
  batch limit, over the samples the limited loop fetches (``limits.py``).
  ``store.py`` holds the result (in memory, or memory-mapped above ``max_memory_mb``);
  ``batch_layout.py`` finds the input in a batch and rebuilds samples around the features.
* ``callback.py``: the moment any backbone parameter has ``requires_grad=True`` (checked at
  every epoch start and at every backbone call), the caches are dropped and batches are
  images again; a cached batch that was already fetched (an unfreeze in the middle of an
  epoch), or one from a cache rebuilt since, is reloaded from the data set by its sample
  indices. Re-freezing later rebuilds it.
* ``workers.py``: loader workers hold a copy of the data set taken when they start. Whenever a
  loader starts or stops serving cached features, workers that kept another copy are
  restarted: the first training epoch's iterator is recreated after the build (from the same
  random state, so the sample order is unchanged), ``persistent_workers`` are restarted between
  epochs and between validation runs without touching any random stream. The first validation
  run after a build still runs the backbone once more (its iterator starts before any hook).
* ``limits.py``: when ``fast_dev_run``, ``limit_train_batches``/``limit_val_batches``,
  ``overfit_batches`` or ``max_steps`` make an epoch (or validation run) fetch only its first
  batches, the build covers only the samples of those batches, in the order the loader's
  sampler will yield them (forecast without consuming random numbers). A later epoch that
  reshuffles adds the samples it lacks to the cache before it starts; a batch holding a sample
  the cache lacks anyway (a forecast that missed) is loaded from the data set and runs the
  backbone: it costs time, never correctness.
* ``eligibility.py``: when the cache does *not* apply (a warning says why, training continues
  uncached): random training augmentation (found by scanning the data set's ``transform`` for
  random ops and by loading a few samples twice), BatchNorm or dropout in training mode inside
  the frozen backbone (features would depend on the batch), an ``IterableDataset``, several
  training loaders, a backbone output that is not ``(N, D)``, an input that is not one tensor
  (a tokenizer dict), a non-tensor batch field.

Nothing is stored in checkpoints but counters: a resumed run rebuilds the cache, and since
the features are a deterministic function of the frozen weights, results do not change.
"""

from lt_transfer.callbacks.feature_cache.cached_features import CachedFeatures
from lt_transfer.callbacks.feature_cache.callback import FeatureCache
from lt_transfer.callbacks.feature_cache.store import FeatureCacheMemoryError

__all__ = ["CachedFeatures", "FeatureCache", "FeatureCacheMemoryError"]
