"""FeatureCache: train on cached frozen-backbone features; invalidated the moment it unfreezes.

While every backbone parameter is frozen (``requires_grad=False``), the backbone is a fixed
function of each sample, so recomputing it every epoch (as ``BackboneFinetuning``, fastai and
finetuning-scheduler do) wastes almost the whole cost of a head-only epoch. ``FeatureCache``
computes each sample's features *once*, in a deterministic pass over the data set, and then
serves ``(features, label)`` batches through the very same ``DataLoader`` (same sampler,
shuffling, ``drop_last`` and ``DistributedSampler`` shard, same random-number stream), so the
head trains on exactly the batches it would have seen without the cache.

Why a callback and not an option of :class:`~lt_transfer.TransferClassifier`: the frozen
phase of *any* module (a user's own LightningModule, a progressive-unfreezing schedule) has the
same waste, and the cache needs nothing from the module but the name of its backbone
attribute. A callback composes with ``ProgressiveUnfreezing``/``BackboneFinetuning`` without
either knowing about the other: the cache checks ``requires_grad`` itself.

How it works:

* The backbone sub-module's ``forward`` is wrapped for the duration of ``fit``. A cached batch
  carries, in the input slot, a ``float32`` tensor ``(B, D + 1)``: the ``D`` cached features
  and the sample index in the last column. The wrapped forward recognises such a tensor,
  returns the features, and runs the real backbone on everything else.
* The data set instance gets a ``__getitems__`` (the batched-fetch hook ``DataLoader`` calls)
  that returns cached samples while the cache serves and the original samples otherwise;
  nothing else about the loader changes. It is removed in ``teardown``.
* Before a frozen epoch the cache is built if missing: one pass over the data set (the
  loader's own collate function and workers, its own transform, a private random generator so
  the global RNG stream is untouched), the backbone in its current mode under ``no_grad`` and
  the trainer's precision context. Under DDP each rank computes only its shard; when the
  training sampler reshuffles shards every epoch (``DistributedSampler(shuffle=True)``, the
  Lightning default) the shards are all-gathered because every rank will need every sample;
  a fixed shard (``shuffle=False``, validation) is never gathered.
* The moment any backbone parameter has ``requires_grad=True`` (checked at every epoch start
  and at every backbone call), the cache is dropped and batches are images again; a cached
  batch that was already fetched is reloaded from the data set by its indices, so an
  unfreeze in the middle of an epoch is handled too. Re-freezing later rebuilds it.

When the cache does *not* apply (a warning says why, training continues uncached): random
training augmentation (found by scanning the data set's ``transform`` for random ops and by
loading a few samples twice), BatchNorm or dropout in training mode inside the frozen
backbone (features would depend on the batch), an ``IterableDataset``, several training
loaders, ``persistent_workers=True`` (workers would keep a stale copy of the data set), a
backbone output that is not ``(N, D)``, more than 2**24 samples.

With ``num_workers > 0`` the loaders' workers hold a copy of the data set taken when each
epoch's iterator starts: the first training epoch's iterator is recreated after the build
(from the same random state, so the sample order is unchanged), but the first validation run
after a build still runs the backbone once more (its iterator starts before any hook).

Nothing is stored in checkpoints but counters: a resumed run rebuilds the cache, and since
the features are a deterministic function of the frozen weights, results do not change.
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset
from typing_extensions import override

__all__ = ["FeatureCache", "FeatureCacheMemoryError"]

log = logging.getLogger(__name__)

StorageDtype = Literal["float32", "float16", "bfloat16"]
LimitAction = Literal["error", "memmap"]
AugmentationAction = Literal["warn", "error"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_MAX_INDEX = 2**24  # largest integer range float32 represents exactly (index column)
_RANDOM_TRANSFORM_NAMES = (
    "AutoAugment",
    "RandAugment",
    "TrivialAugmentWide",
    "AugMix",
    "ColorJitter",
    "ElasticTransform",
    "GaussianNoise",
)
_STOCHASTIC_MODULES = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.Dropout)


class FeatureCacheMemoryError(MemoryError):
    """The estimated cache size exceeds ``max_memory_mb`` and ``on_limit="error"``.

    Example:
        >>> issubclass(FeatureCacheMemoryError, MemoryError)
        True
    """


class _Store:
    """Cached features (compact rows) plus the non-input fields of every cached sample."""

    def __init__(self, num_samples: int) -> None:
        self.row_of = torch.full((num_samples,), -1, dtype=torch.long)
        self.features: torch.Tensor | None = None
        self.fields: list[Any] = []  # per non-input field: tensor (rows, ...)
        self.keys: list[Any] = []  # field keys (positions or dict keys), input key included
        self.input_key: int | str = 0
        self.sample_type: type = tuple
        self.path: str | None = None

    def samples(self, indices: Sequence[int]) -> list[Any]:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        rows = self.row_of[index]
        if bool((rows < 0).any()):
            missing = index[rows < 0][:5].tolist()
            raise RuntimeError(f"FeatureCache: samples {missing} are not in the cache of this rank.")
        assert self.features is not None
        x = torch.cat([self.features[rows].float(), index.float().unsqueeze(1)], dim=1)
        columns = [x.unbind(0)] + [field[rows].unbind(0) for field in self.fields]
        if self.sample_type is torch.Tensor:
            return list(columns[0])
        keys = [self.input_key] + [k for k in self.keys if k != self.input_key]
        position = {key: i for i, key in enumerate(keys)}
        ordered = [columns[position[key]] for key in self.keys]  # the data set's own field order
        if issubclass(self.sample_type, Mapping):
            return [dict(zip(self.keys, values, strict=True)) for values in zip(*ordered, strict=True)]
        if self.sample_type is list:
            return [list(values) for values in zip(*ordered, strict=True)]
        return list(zip(*ordered, strict=True))

    def release(self) -> None:
        self.features = None
        self.fields = []
        if self.path is not None and os.path.exists(self.path):
            os.remove(self.path)
        self.path = None


class _DatasetPatch:
    """The ``__getitems__`` installed on one data set instance (removable)."""

    def __init__(self, dataset: Any, collate_fn: Callable[[list[Any]], Any]) -> None:
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.store: _Store | None = None
        self.serving = False
        self.eligible = True
        self._instance_attr = vars(dataset).get("__getitems__")
        dataset.__getitems__ = self

    def __call__(self, indices: Sequence[int]) -> list[Any]:
        if self.serving and self.store is not None:
            return self.store.samples(indices)
        return self.raw(indices)

    def raw(self, indices: Sequence[int]) -> list[Any]:
        """The data set's own samples for ``indices`` (its transform applied)."""
        if self._instance_attr is not None:
            return self._instance_attr(indices)
        class_getitems = getattr(type(self.dataset), "__getitems__", None)
        if class_getitems is not None:
            return class_getitems(self.dataset, indices)
        return [self.dataset[i] for i in indices]

    def release(self) -> None:
        self.serving = False
        if self.store is not None:
            self.store.release()
        self.store = None

    def remove(self) -> None:
        self.release()
        if vars(self.dataset).get("__getitems__") is self:
            if self._instance_attr is not None:
                self.dataset.__getitems__ = self._instance_attr
            else:
                del self.dataset.__getitems__


class FeatureCache(Callback):
    """Cache frozen-backbone features so head-only epochs skip the backbone.

    See the module docstring for the mechanism and for when the cache applies. The backbone
    runs exactly once per sample (per rank: once per sample of its shard) while it stays
    frozen; the first frozen epoch pays that pass, later ones only load features.

    Args:
        backbone: attribute path of the feature extractor on the LightningModule (e.g.
            ``"backbone"``, ``"model.encoder"``). Its forward must map the batch input to
            ``(N, D)`` features, and the module's step must pass the batch input to it
            unchanged.
        input_key: where the input sits in each batch: a position for tuple/list batches,
            a key for dict batches (ignored for plain-tensor batches).
        cache_val: also cache the validation loaders' features (separate caches).
        dtype: storage dtype; ``"float16"``/``"bfloat16"`` halve the memory (features are
            served as ``float32``, so the head sees the rounded values).
        max_memory_mb: limit for one cache (per rank, per loader) in MiB; ``None``: none.
        on_limit: above the limit, ``"error"`` raises :class:`FeatureCacheMemoryError`
            before building, ``"memmap"`` stores the features in a memory-mapped file.
        memmap_dir: folder for those files (default: the system temp folder); they are
            deleted when the cache is dropped and in ``teardown``.
        build_batch_size: batch size of the build pass (default: the loader's).
        on_augmentation: random training transforms: ``"warn"`` and train uncached, or
            ``"error"``.

    Raises:
        ValueError: on invalid arguments (named in the message).

    Example:
        >>> import lightning.pytorch as pl
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from lt_transfer import FeatureCache, TransferClassifier
        >>> from lt_transfer.backbones import Backbone
        >>> trunk = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8))
        >>> model = TransferClassifier(Backbone(trunk, num_features=8), num_classes=2,
        ...                            finetune="frozen")
        >>> data = DataLoader(TensorDataset(torch.randn(32, 1, 4, 4), torch.arange(32) % 2),
        ...                   batch_size=8, shuffle=True)
        >>> cache = FeatureCache(backbone="backbone")
        >>> trainer = pl.Trainer(max_epochs=2, callbacks=[cache], logger=False,
        ...                      enable_checkpointing=False, enable_progress_bar=False,
        ...                      enable_model_summary=False)
        >>> trainer.fit(model, data)
        >>> cache.builds, cache.computed_samples
        (1, 32)
    """

    def __init__(
        self,
        backbone: str = "backbone",
        input_key: int | str = 0,
        cache_val: bool = True,
        dtype: StorageDtype = "float32",
        max_memory_mb: float | None = 4096.0,
        on_limit: LimitAction = "error",
        memmap_dir: str | None = None,
        build_batch_size: int | None = None,
        on_augmentation: AugmentationAction = "warn",
    ) -> None:
        if not isinstance(backbone, str) or not backbone:
            raise ValueError(
                f"FeatureCache(backbone={backbone!r}) must be the attribute path of the backbone "
                "on your LightningModule, e.g. 'backbone' or 'model.encoder'."
            )
        if isinstance(input_key, bool) or not isinstance(input_key, (int, str)):
            raise ValueError(
                f"FeatureCache(input_key={input_key!r}) must be an int (position in a tuple batch) "
                "or a str (key in a dict batch)."
            )
        if dtype not in _DTYPES:
            raise ValueError(f"FeatureCache(dtype={dtype!r}) must be one of {sorted(_DTYPES)}.")
        if max_memory_mb is not None and not max_memory_mb > 0:
            raise ValueError(
                f"FeatureCache(max_memory_mb={max_memory_mb!r}) must be positive, or None for no limit."
            )
        if on_limit not in ("error", "memmap"):
            raise ValueError(f"FeatureCache(on_limit={on_limit!r}) must be 'error' or 'memmap'.")
        if memmap_dir is not None and not os.path.isdir(memmap_dir):
            raise ValueError(
                f"FeatureCache(memmap_dir={memmap_dir!r}) is not an existing folder; create it or "
                "pass None for the system temp folder."
            )
        if build_batch_size is not None and build_batch_size < 1:
            raise ValueError(f"FeatureCache(build_batch_size={build_batch_size}) must be >= 1 or None.")
        if on_augmentation not in ("warn", "error"):
            raise ValueError(f"FeatureCache(on_augmentation={on_augmentation!r}) must be 'warn' or 'error'.")
        self.backbone_attr = backbone
        self.input_key = input_key
        self.cache_val = cache_val
        self.dtype = dtype
        self.max_memory_mb = max_memory_mb
        self.on_limit = on_limit
        self.memmap_dir = memmap_dir
        self.build_batch_size = build_batch_size
        self.on_augmentation = on_augmentation
        #: caches built so far (each training or validation loader counts once per build)
        self.builds = 0
        #: times the caches were dropped because the backbone was unfrozen
        self.invalidations = 0
        #: samples this process ran through the backbone to build caches
        self.computed_samples = 0
        #: the last size estimate in bytes (per rank, per loader)
        self.last_estimate_bytes = 0
        self._module: LightningModule | None = None
        self._trainer: Trainer | None = None
        self._backbone: nn.Module | None = None
        self._original_forward: Callable[..., Any] | None = None
        self._num_features: int | None = None
        self._out_dtype: torch.dtype = torch.float32
        self._train_patch: _DatasetPatch | None = None
        self._val_patches: dict[int, _DatasetPatch] = {}
        self._current: _DatasetPatch | None = None
        self._rng_state: torch.Tensor | None = None
        self._warned: set[str] = set()
        self._stale_epoch = False
        self._reiter_pending = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(backbone=self.backbone_attr, input_key=self.input_key)

    # ------------------------------------------------------------------ status
    def backbone_frozen(self) -> bool:
        """Whether every backbone parameter has ``requires_grad=False`` right now."""
        assert self._backbone is not None
        return not any(p.requires_grad for p in self._backbone.parameters())

    @property
    def active(self) -> bool:
        """Whether a training cache exists and serves batches now."""
        patch = self._train_patch
        return bool(patch is not None and patch.serving and patch.store is not None)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=2)

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        try:
            backbone = pl_module.get_submodule(self.backbone_attr)
        except AttributeError as error:
            children = [name for name, _ in pl_module.named_children()]
            raise ValueError(
                f"FeatureCache(backbone={self.backbone_attr!r}): {type(pl_module).__name__} has no such "
                f"sub-module; its children are {children}. Pass the attribute path of the backbone."
            ) from error
        self._trainer, self._module, self._backbone = trainer, pl_module, backbone
        self._original_forward = backbone.forward
        backbone.forward = self._forward

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rng_state = torch.get_rng_state()

    @override
    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rng_state = torch.get_rng_state()

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loader = trainer.train_dataloader
        if not isinstance(loader, DataLoader):
            self._warn_once(
                "loaders",
                "FeatureCache supports a single training DataLoader; got "
                f"{type(loader).__name__}. Training continues without the cache.",
            )
            return
        patch = self._install(loader, "train")
        if patch is None:
            return
        self._train_patch = patch
        # The first epoch's iterator (and its forked workers) was created in the fit loop's
        # setup, before the patch existed; with workers it must be recreated (see below).
        self._reiter_pending = loader.num_workers > 0

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        patch = self._train_patch
        if patch is None:
            return
        self._stale_epoch = False  # this epoch's iterator starts after this hook: fresh state
        loader = trainer.train_dataloader
        if isinstance(loader, DataLoader) and loader.dataset is not patch.dataset:  # reloaded loaders
            patch.remove()
            self._train_patch = patch = self._install(loader, "train")
            if patch is None:
                return
        self._prepare(patch, loader, "train")
        if self._reiter_pending:
            self._reiter_pending = False
            if patch.serving and self._rng_state is not None:
                # Recreate the iterator from the random state it was first created with, so its
                # workers see the cache and the sample order is the one it would have been.
                torch.set_rng_state(self._rng_state)
                iter(trainer.fit_loop._data_fetcher)

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._backbone is None:
            return
        loaders = trainer.val_dataloaders
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        for index, loader in enumerate(loaders):
            patch = self._val_patches.get(index)
            if patch is not None and isinstance(loader, DataLoader) and loader.dataset is not patch.dataset:
                patch.remove()  # the loaders were reloaded
                del self._val_patches[index]
                patch = None
            if trainer.sanity_checking or not self.cache_val:
                if patch is not None:
                    patch.serving = False
                continue
            if patch is None:
                if not isinstance(loader, DataLoader):
                    continue
                if self._train_patch is not None and loader.dataset is self._train_patch.dataset:
                    self._warn_once(
                        "shared",
                        "FeatureCache: the validation set is the training data set "
                        "object; it is not cached separately.",
                    )
                    continue
                patch = self._install(loader, f"val[{index}]")
                if patch is None:
                    continue
                self._val_patches[index] = patch
            self._prepare(patch, loader, f"val[{index}]")

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._current = self._train_patch

    @override
    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._current = self._val_patches.get(dataloader_idx)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._cleanup()  # Lightning skips `teardown` on exceptions: unpatch the data sets and backbone

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._cleanup()

    def _cleanup(self) -> None:
        for patch in [self._train_patch, *self._val_patches.values()]:
            if patch is not None:
                patch.remove()
        self._train_patch, self._val_patches, self._current = None, {}, None
        if self._backbone is not None and vars(self._backbone).get("forward") == self._forward:
            del self._backbone.forward
        self._backbone = self._original_forward = self._module = None

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "builds": self.builds,
            "invalidations": self.invalidations,
            "computed_samples": self.computed_samples,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.builds = int(state_dict.get("builds", 0))
        self.invalidations = int(state_dict.get("invalidations", 0))
        self.computed_samples = int(state_dict.get("computed_samples", 0))

    # ------------------------------------------------------------- machinery
    def _install(self, loader: DataLoader, name: str) -> _DatasetPatch | None:
        dataset = loader.dataset
        reason = None
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            reason = "it is an IterableDataset (no sample index)"
        elif loader.persistent_workers and loader.num_workers > 0:
            reason = "persistent_workers=True keeps a stale copy of the data set in the workers"
        elif len(dataset) >= _MAX_INDEX:
            reason = f"it has {len(dataset)} >= 2**24 samples"
        elif loader.batch_sampler is None:
            reason = "the loader has batch_size=None (no batched fetch)"
        if reason is None:
            try:
                return _DatasetPatch(dataset, loader.collate_fn)
            except (AttributeError, TypeError) as error:
                reason = f"its __getitems__ cannot be set ({error})"
        self._warn_once(f"install-{name}", f"FeatureCache: not caching the {name} data: {reason}.")
        return None

    def _prepare(self, patch: _DatasetPatch, loader: DataLoader, name: str) -> None:
        """Decide whether ``patch`` serves cached features for the coming epoch/run."""
        if not self.backbone_frozen():
            self._invalidate(f"a backbone parameter requires grad at the start of the {name} epoch")
            if name == "train" and self.builds == 0 and "trainable" not in self._warned:
                self._warned.add("trainable")
                trainable = [n for n, p in self._backbone.named_parameters() if p.requires_grad]
                rank_zero_info(
                    f"FeatureCache: not caching while backbone parameters train ({len(trainable)}, e.g. "
                    f"{trainable[:3]}). Note: BackboneFinetuning's frozen phase trains BatchNorm "
                    "unless its freeze gets train_bn=False."
                )
            return
        if not patch.eligible:
            patch.serving = False
            return
        if name == "train":
            training = [
                n
                for n, m in self._backbone.named_modules()
                if isinstance(m, _STOCHASTIC_MODULES) and m.training
            ]
            if training:
                self._warn_once(
                    "stochastic",
                    f"FeatureCache: frozen backbone modules {training[:3]} are in training mode "
                    "(BatchNorm using batch statistics or dropout), so features change every pass; "
                    "not caching. Put frozen layers in eval mode (TransferClassifier does unless "
                    "train_bn=True; BackboneFinetuning needs train_bn=False).",
                )
                patch.serving = False
                return
        if patch.store is None:
            patch.serving = False
            if not self._build(patch, loader, name):
                patch.eligible = False
                return
        patch.serving = True

    def _invalidate(self, reason: str) -> None:
        patches = [p for p in [self._train_patch, *self._val_patches.values()] if p is not None]
        had_cache = any(p.store is not None for p in patches)
        self._stale_epoch = self._stale_epoch or any(p.serving for p in patches)
        for patch in patches:
            patch.release()
        if had_cache:
            self.invalidations += 1
            rank_zero_info(f"FeatureCache: cache dropped ({reason}); batches are images again.")

    def _forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        assert self._original_forward is not None
        if args or kwargs or not self._is_cached_input(x):
            return self._original_forward(x, *args, **kwargs)
        index = x[:, -1].round().long()
        if self.backbone_frozen():
            return x[:, :-1].to(self._out_dtype)
        # Unfrozen after this batch was fetched: reload the images by index and run for real.
        self._invalidate("a backbone parameter requires grad")
        patch = self._current
        if patch is None:
            raise RuntimeError(
                "FeatureCache: got a cached batch outside a training/validation batch after the "
                "backbone was unfrozen; this is a bug, please report it."
            )
        batch = patch.collate_fn(patch.raw(index.tolist()))
        return self._original_forward(_get_input(batch, self.input_key).to(x.device), *args, **kwargs)

    def _is_cached_input(self, x: Any) -> bool:
        if self._num_features is None or not isinstance(x, torch.Tensor):
            return False
        if x.ndim != 2 or x.dtype != torch.float32 or x.shape[1] != self._num_features + 1 or not len(x):
            return False
        column = x[:, -1]
        if not bool(torch.equal(column, column.round()) and column.min() >= 0):
            return False
        # Structure alone could match a tabular input; confirm against the cache itself, or
        # accept only in an epoch whose loader may still serve cached batches after a drop.
        patch = self._current
        if patch is None or patch.store is None or patch.store.features is None:
            return self._stale_epoch
        index = int(column[0])
        if index >= len(patch.store.row_of) or int(patch.store.row_of[index]) < 0:
            return False
        row = patch.store.features[int(patch.store.row_of[index])].float()
        return bool(torch.equal(x[0, :-1].cpu(), row))

    def _shard(self, loader: DataLoader, name: str) -> tuple[list[int], bool]:
        """Indices this rank caches and whether all ranks' shards must be gathered."""
        trainer = self._trainer
        assert trainer is not None
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

    def _check_augmentation(self, patch: _DatasetPatch, indices: list[int], name: str) -> bool:
        found = _random_transforms(patch.dataset)
        if not found and indices:
            probe = indices[:4]
            with _preserved_rng():
                first, second = patch.raw(probe), patch.raw(probe)
            for a, b in zip(first, second, strict=True):
                xa, xb = _sample_input(a, self.input_key), _sample_input(b, self.input_key)
                if isinstance(xa, torch.Tensor) and not torch.equal(xa, xb):
                    found = ["(two loads of the same sample differ)"]
                    break
        if not found:
            return True
        message = (
            f"FeatureCache: the {name} data set is randomly augmented ({', '.join(found[:3])}); "
            "cached features would freeze one random view, so it is not cached. Use a deterministic "
            "transform for linear probing (e.g. DigitsDataModule(augment='none'))."
        )
        if self.on_augmentation == "error":
            raise ValueError(message + " Set FeatureCache(on_augmentation='warn') to train uncached instead.")
        self._warn_once(f"augment-{name}", message)
        return False

    def _build(self, patch: _DatasetPatch, loader: DataLoader, name: str) -> bool:
        trainer, module = self._trainer, self._module
        assert trainer is not None and module is not None and self._original_forward is not None
        indices, gather = self._shard(loader, name)
        if not self._check_augmentation(patch, indices, name):
            return False
        unique = sorted(set(indices))
        store = _Store(len(loader.dataset))
        store.row_of[torch.tensor(unique, dtype=torch.long)] = torch.arange(len(unique))
        local_rows = store.row_of[torch.tensor(indices, dtype=torch.long)]
        store.sample_type = _sample_type(patch.raw(indices[:1])[0]) if indices else tuple
        build_loader = DataLoader(
            loader.dataset,
            batch_size=self.build_batch_size or loader.batch_size or 1,
            sampler=indices,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            generator=torch.Generator().manual_seed(0),
        )
        local_features: list[torch.Tensor] = []
        local_fields: list[list[torch.Tensor]] = []
        storage = _DTYPES[self.dtype]
        capacity = len(unique) if not gather else len(loader.dataset)
        precision = trainer.strategy.precision_plugin.forward_context()
        patch.serving = False
        position = 0
        with torch.no_grad(), precision:
            for batch in build_loader:
                x = _get_input(batch, self.input_key)
                out = self._original_forward(x.to(module.device))
                if not isinstance(out, torch.Tensor) or out.ndim != 2 or len(out) != len(x):
                    self._warn_once(
                        f"shape-{name}",
                        f"FeatureCache: the backbone returned {type(out).__name__} "
                        f"{tuple(getattr(out, 'shape', ()))} for {len(x)} samples; the cache needs "
                        "(N, D) features. Not caching.",
                    )
                    store.release()
                    return False
                try:
                    fields = _other_fields(batch, self.input_key, name)
                except ValueError as error:
                    self._warn_once(f"fields-{name}", f"{error} Not caching.")
                    store.release()
                    return False
                if store.features is None:
                    store.input_key = _normalized_key(batch, self.input_key)
                    self._num_features, self._out_dtype = int(out.shape[1]), out.dtype
                    store.keys = _field_keys(batch, self.input_key)
                    store.features = self._allocate(capacity, out.shape[1], storage, name, store)
                    store.fields = [torch.empty((capacity, *f.shape[1:]), dtype=f.dtype) for f in fields]
                rows = local_rows[position : position + len(x)]
                position += len(x)
                if gather:
                    local_features.append(out.float())
                    local_fields.append(fields)
                else:
                    store.features[rows] = out.to(device="cpu", dtype=storage)
                    for target, field in zip(store.fields, fields, strict=True):
                        target[rows] = field.cpu()
                self.computed_samples += len(x)
        if store.features is None:
            return False
        if gather:
            self._gather(store, indices, local_features, local_fields, storage)
        patch.store = store
        self.builds += 1
        return True

    def _gather(
        self,
        store: _Store,
        indices: list[int],
        features: list[torch.Tensor],
        fields: list[list[torch.Tensor]],
        storage: torch.dtype,
    ) -> None:
        trainer, module = self._trainer, self._module
        assert trainer is not None and module is not None and store.features is not None
        device = module.device
        all_indices = trainer.strategy.all_gather(torch.tensor(indices, device=device)).reshape(-1).cpu()
        all_features = trainer.strategy.all_gather(torch.cat(features).to(device))
        store.features[all_indices] = all_features.reshape(-1, all_features.shape[-1]).to("cpu", storage)
        for k, target in enumerate(store.fields):
            local = torch.cat([f[k] for f in fields]).to(device)
            gathered = trainer.strategy.all_gather(local)
            target[all_indices] = gathered.reshape(-1, *local.shape[1:]).cpu()
        store.row_of = torch.arange(len(store.row_of))

    def _allocate(self, rows: int, width: int, dtype: torch.dtype, name: str, store: _Store) -> torch.Tensor:
        itemsize = torch.empty((), dtype=dtype).element_size()
        estimate = rows * width * itemsize
        self.last_estimate_bytes = estimate
        megabytes = estimate / 2**20
        rank_zero_info(
            f"FeatureCache: caching {rows} {name} samples x {width} features as {self.dtype}: "
            f"{megabytes:.1f} MiB per rank."
        )
        if self.max_memory_mb is None or megabytes <= self.max_memory_mb:
            return torch.empty((rows, width), dtype=dtype)
        if self.on_limit == "error":
            raise FeatureCacheMemoryError(
                f"FeatureCache: the {name} cache needs {megabytes:.1f} MiB ({rows} samples x {width} "
                f"features x {itemsize} bytes) > max_memory_mb={self.max_memory_mb}. Raise "
                "max_memory_mb, use dtype='float16' or 'bfloat16', or on_limit='memmap' to store "
                "it in a memory-mapped file."
            )
        folder = self.memmap_dir or tempfile.gettempdir()
        handle, path = tempfile.mkstemp(prefix="feature_cache_", suffix=".bin", dir=folder)
        os.close(handle)
        with open(path, "wb") as file:
            file.truncate(max(estimate, 1))
        store.path = path
        rank_zero_info(f"FeatureCache: above max_memory_mb={self.max_memory_mb}; memory-mapped at {path}.")
        return torch.from_file(path, shared=True, size=rows * width, dtype=dtype).view(rows, width)


# ------------------------------------------------------------------ helpers
def _get_input(batch: Any, key: int | str) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        if key not in batch:
            raise ValueError(f"FeatureCache(input_key={key!r}): the batch has keys {list(batch)}.")
        return batch[key]
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        if not isinstance(key, int) or not -len(batch) <= key < len(batch):
            raise ValueError(
                f"FeatureCache(input_key={key!r}): batches are sequences of {len(batch)} fields; "
                "pass the position of the input."
            )
        return batch[key]
    raise ValueError(f"FeatureCache cannot find the input in a batch of type {type(batch).__name__}.")


def _normalized_key(batch: Any, key: int | str) -> int | str:
    if isinstance(key, int) and isinstance(batch, Sequence) and not isinstance(batch, torch.Tensor):
        return key % len(batch)
    return key


def _field_keys(batch: Any, key: int | str) -> list[Any]:
    if isinstance(batch, torch.Tensor):
        return [key]
    if isinstance(batch, Mapping):
        return list(batch)
    return list(range(len(batch)))


def _other_fields(batch: Any, key: int | str, name: str) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return []
    if isinstance(batch, Mapping):
        items = [(k, v) for k, v in batch.items() if k != key]
    else:
        position = key % len(batch) if isinstance(key, int) else key
        items = [(k, v) for k, v in enumerate(batch) if k != position]
    for field_key, value in items:
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"FeatureCache: field {field_key!r} of the {name} batches is a {type(value).__name__}, "
                "not a tensor; only tensor fields (labels, weights, ...) can be cached; return "
                "tensors from the data set to use the cache."
            )
    return [value for _, value in items]


def _sample_type(sample: Any) -> type:
    if isinstance(sample, torch.Tensor):
        return torch.Tensor
    if isinstance(sample, Mapping):
        return dict
    return list if isinstance(sample, list) else tuple


def _sample_input(sample: Any, key: int | str) -> Any:
    if isinstance(sample, torch.Tensor):
        return sample
    return sample[key]


def _random_transforms(dataset: Any, depth: int = 0) -> list[str]:
    """Names of random transform objects reachable from the data set's ``transform``."""
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
    for _ in range(4):  # follow Subset-style wrappers
        visit(getattr(current, "transform", None), 0)
        visit(getattr(current, "transforms", None), 0)
        current = getattr(current, "dataset", None)
        if current is None:
            break
    return found


@contextmanager
def _preserved_rng() -> Iterator[None]:
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)
