"""The FeatureCache callback: when to build, serve and drop caches, and the wrapped backbone forward.

The pieces it coordinates live next to it (see the package docstring); this file holds the
decisions: at every training epoch start and validation start, whether each loader serves
cached features; after every change, whether the loader's worker processes must be restarted;
and, at every backbone call, whether the input is cached features that may be used as they are.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import DataLoader
from typing_extensions import override

from lt_transfer._lightning_compat import restart_train_iterator
from lt_transfer.batches import input_to
from lt_transfer.callbacks.feature_cache.batch_layout import InputKey, batch_input, input_location
from lt_transfer.callbacks.feature_cache.build import build_store, shard_indices
from lt_transfer.callbacks.feature_cache.cached_features import CachedFeatures
from lt_transfer.callbacks.feature_cache.dataset_patch import DatasetPatch
from lt_transfer.callbacks.feature_cache.eligibility import (
    augmentation_found,
    loader_problem,
    stochastic_modules,
)
from lt_transfer.callbacks.feature_cache.limits import (
    batch_limit,
    planned_indices,
    training_batches,
    validation_batches,
)
from lt_transfer.callbacks.feature_cache.store import DTYPES, LimitAction, StorageDtype, StorageSpec
from lt_transfer.callbacks.feature_cache.workers import (
    has_persistent_workers,
    restart_workers,
    shut_down_workers,
)

__all__ = ["AugmentationAction", "FeatureCache"]

AugmentationAction = Literal["warn", "error"]

_cache_ids = itertools.count(1)  # ids of stores, unique in this process (several callbacks may coexist)


class FeatureCache(Callback):
    """Cache frozen-backbone features so head-only epochs skip the backbone.

    See :mod:`lt_transfer.callbacks.feature_cache` for the mechanism and for when the cache
    applies. The backbone runs exactly once per sample (per rank: once per sample of its shard)
    while it stays frozen; the first frozen epoch pays that pass, later ones only load features.
    With ``fast_dev_run``, ``limit_*_batches``, ``overfit_batches`` or ``max_steps`` only the
    samples the loop fetches are cached (a one-batch smoke test computes one batch).

    Args:
        backbone: attribute path of the feature extractor on the LightningModule (e.g.
            ``"backbone"``, ``"model.encoder"``). Its forward must map the batch input to
            ``(N, D)`` features, and the module's step must pass the batch input to it
            unchanged.
        input_key: where the input sits in each batch: ``None`` for the batch contract of
            :mod:`lt_transfer.batches` (a tensor batch, position 0 of a tuple, the first of
            ``"x"``, ``"input"``, ``"inputs"``, ``"image"``, ``"images"`` of a dict), or a
            position (tuple/list batches) or key (dict batches) of your own layout.
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
        input_key: int | str | None = None,
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
        if input_key is not None and (isinstance(input_key, bool) or not isinstance(input_key, (int, str))):
            raise ValueError(
                f"FeatureCache(input_key={input_key!r}) must be None (the batch contract), an int "
                "(position in a tuple batch) or a str (key in a dict batch)."
            )
        if dtype not in DTYPES:
            raise ValueError(f"FeatureCache(dtype={dtype!r}) must be one of {sorted(DTYPES)}.")
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
        self.input_key: InputKey = input_key
        self.cache_val = cache_val
        self.dtype = dtype
        self.max_memory_mb = max_memory_mb
        self.on_limit = on_limit
        self.memmap_dir = memmap_dir
        self.build_batch_size = build_batch_size
        self.on_augmentation = on_augmentation
        #: build passes so far (each training or validation loader counts once per build; a
        #: limited loop's cache growing for a reshuffled epoch counts too)
        self.builds = 0
        #: times the caches were dropped because the backbone was unfrozen
        self.invalidations = 0
        #: samples this process ran through the backbone to build caches
        self.computed_samples = 0
        #: the last size estimate in bytes (per rank, per loader)
        self.last_estimate_bytes = 0
        self._trainer: Trainer | None = None
        self._backbone: nn.Module | None = None
        self._device = torch.device("cpu")
        self._original_forward: Callable[..., Any] | None = None
        self._train_patch: DatasetPatch | None = None
        self._val_patches: dict[int, DatasetPatch] = {}
        self._patch_of_cache: dict[int, DatasetPatch] = {}  # every store of this fit, by cache id
        self._rng_state: torch.Tensor | None = None
        self._first_epoch = False
        self._warned: set[str] = set()

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
        return self._train_patch is not None and self._train_patch.served is not None

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
        self._trainer, self._backbone = trainer, backbone
        self._original_forward = backbone.forward
        backbone.forward = self._forward

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._device = pl_module.device
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
        self._train_patch = self._install(loader, "train")
        # This fit's first epoch iterator (and its workers) already exists: Lightning created it
        # before any hook, so the data set had no cache yet (see on_train_epoch_start).
        self._first_epoch = True

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        patch = self._train_patch
        loader = trainer.train_dataloader
        if patch is not None and isinstance(loader, DataLoader):
            patch = self._train_patch = self._follow(patch, loader, "train")
        if patch is not None:
            self._prepare(patch, "train", self._planned_train(trainer, patch))
            if self._first_epoch and patch.loader.num_workers > 0:
                self._restart_first_epoch(trainer, patch)
            else:
                self._sync_workers(patch)
        self._first_epoch = False
        for val_patch in self._val_patches.values():
            self._sync_workers(val_patch)

    def _planned_train(self, trainer: Trainer, patch: DatasetPatch) -> list[int] | None:
        """The training samples the coming epoch fetches when a limit cuts it short, else ``None``."""
        limit = batch_limit(training_batches(trainer), patch.loader)
        if limit is None:
            return None
        if self._first_epoch:
            # the epoch's iterator exists: its sampler has yet to run, unless workers make
            # `_restart_first_epoch` create it again from the recorded random state
            fresh = patch.loader.num_workers > 0
            return planned_indices(patch.loader, limit, fresh, self._rng_state if fresh else None)
        # a new iterator per epoch; persistent workers keep one and only restart its sampler
        return planned_indices(patch.loader, limit, not has_persistent_workers(patch.loader))

    def _restart_first_epoch(self, trainer: Trainer, patch: DatasetPatch) -> None:
        """Recreate the running epoch's iterator so that its workers see the cache.

        It is recreated from the random state it was first created with, so the sample order
        (and every later random draw) is the one it would have been without the cache.
        """
        assert self._rng_state is not None, "on_fit_start records the random state"
        if patch.served is not None:
            shut_down_workers(patch.loader)
            torch.set_rng_state(self._rng_state)
            restart_train_iterator(trainer)
        patch.worker_cache_id = patch.served

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._backbone is None:
            return
        for index, loader in enumerate(_val_loaders(trainer)):
            patch = self._val_patches.get(index)
            if patch is not None and isinstance(loader, DataLoader):
                patch = self._follow(patch, loader, f"val[{index}]")
                if patch is None:
                    del self._val_patches[index]
                else:
                    self._val_patches[index] = patch
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
            limit = batch_limit(validation_batches(trainer, index), patch.loader)
            # this run's iterator exists already; its sampler has yet to run
            planned = None if limit is None else planned_indices(patch.loader, limit, fresh_iterator=False)
            self._prepare(patch, f"val[{index}]", planned)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # This run's iterator started before on_validation_epoch_start decided what to serve:
        # workers that kept an outdated copy are restarted for the next run.
        for patch in self._val_patches.values():
            self._sync_workers(patch)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._cleanup()  # Lightning skips `teardown` on exceptions: unpatch the data sets and backbone

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._cleanup()

    def _cleanup(self) -> None:
        built = list(self._patch_of_cache.values())
        for patch in [self._train_patch, *self._val_patches.values()]:
            if patch is not None:
                if any(patch is b for b in built):
                    shut_down_workers(patch.loader)  # their copy of the data set may still serve a cache
                patch.remove()
        self._train_patch, self._val_patches, self._patch_of_cache = None, {}, {}
        if self._backbone is not None and vars(self._backbone).get("forward") == self._forward:
            del self._backbone.forward
        self._backbone = self._original_forward = self._trainer = None

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
    def _install(self, loader: DataLoader, name: str) -> DatasetPatch | None:
        reason = loader_problem(loader)
        if reason is None:
            try:
                return DatasetPatch(loader)
            except (AttributeError, TypeError) as error:
                reason = f"its __getitems__ cannot be set ({error})"
        self._warn_once(f"install-{name}", f"FeatureCache: not caching the {name} data: {reason}.")
        return None

    def _follow(self, patch: DatasetPatch, loader: DataLoader, name: str) -> DatasetPatch | None:
        """The patch for ``loader`` after Lightning reloaded its loaders (same patch if unchanged)."""
        if loader is patch.loader:
            return patch
        if loader.dataset is not patch.dataset:
            patch.remove()
            return self._install(loader, name)
        # A new loader on the same data set: its workers started with the data set as it is now.
        patch.follow(loader)
        return patch

    def _sync_workers(self, patch: DatasetPatch) -> None:
        """Restart the loader's persistent workers if their copy serves something else."""
        if patch.worker_cache_id != patch.served:
            restart_workers(patch.loader)
            patch.worker_cache_id = patch.served

    def _prepare(self, patch: DatasetPatch, name: str, planned: list[int] | None) -> None:
        """Decide whether ``patch`` serves cached features for the coming epoch/run.

        ``planned``: the samples the epoch/run fetches when a limit cuts it short (the cache
        holds those only, and grows when a later epoch needs others), ``None`` for all.
        """
        assert self._backbone is not None
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
            training = stochastic_modules(self._backbone)
            if training:
                self._warn_once(
                    "stochastic",
                    f"FeatureCache: frozen backbone modules {training[:3]} are in training mode "
                    "(BatchNorm using batch statistics or dropout), so features change every pass; "
                    "not caching. Put frozen layers in eval mode (TransferClassifier does unless "
                    "frozen_mode='train'; BackboneFinetuning needs train_bn=False).",
                )
                patch.serving = False
                return
        if planned is not None and not planned:  # the loop fetches nothing (max_steps reached)
            patch.serving = False
            return
        if patch.store is None or (planned is not None and patch.store.missing(planned)):
            patch.serving = False
            if not self._build(patch, name, planned):
                patch.eligible = False
                return
        patch.serving = True

    def _build(self, patch: DatasetPatch, name: str, planned: list[int] | None) -> bool:
        """Build the cache of ``patch`` (all its samples, or grow it by the ``planned`` ones it lacks)."""
        trainer = self._trainer
        assert trainer is not None and self._original_forward is not None
        keep = patch.store
        if planned is None:
            indices, gather = shard_indices(trainer, patch.loader)
        else:
            # this rank's own batches (its sampler's shard), so nothing to gather
            indices = planned if keep is None else keep.missing(planned)
            indices, gather = list(dict.fromkeys(indices)), False
            rank_zero_info(
                f"FeatureCache: the loop fetches only part of the {name} loader (fast_dev_run, "
                f"limit_*_batches, overfit_batches or max_steps): caching the {len(indices)} "
                f"{'more ' if keep is not None else ''}samples it uses of {len(patch.dataset)}."
            )
        found = [] if keep is not None else augmentation_found(patch.dataset, patch.raw, indices)
        if found:
            message = (
                f"FeatureCache: the {name} data set is randomly augmented ({', '.join(found[:3])}); "
                "cached features would freeze one random view, so it is not cached. Use a "
                "deterministic transform for linear probing (e.g. DigitsDataModule(augment='none'))."
            )
            if self.on_augmentation == "error":
                raise ValueError(
                    message + " Set FeatureCache(on_augmentation='warn') to train uncached instead."
                )
            self._warn_once(f"augment-{name}", message)
            return False
        result = build_store(
            trainer,
            self._original_forward,
            self._device,
            patch,
            patch.loader,
            indices,
            gather,
            self.input_key,
            StorageSpec(self.dtype, self.max_memory_mb, self.on_limit, self.memmap_dir),
            next(_cache_ids),
            name,
            self.build_batch_size,
            keep,
        )
        self.computed_samples += result.computed_samples
        self.last_estimate_bytes = result.estimate_bytes or self.last_estimate_bytes
        if result.problem is not None:
            self._warn_once(f"build-{name}", result.problem)
        if result.store is None:
            return False
        if keep is not None:
            keep.release()  # its rows are in the new store; batches still holding its id reload
        patch.store = result.store
        self._patch_of_cache[result.store.cache_id] = patch
        self.builds += 1
        return True

    def _invalidate(self, reason: str) -> None:
        patches = [p for p in [self._train_patch, *self._val_patches.values()] if p is not None]
        had_cache = any(p.store is not None for p in patches)
        for patch in patches:
            patch.release()
        if had_cache:
            self.invalidations += 1
            rank_zero_info(f"FeatureCache: cache dropped ({reason}); batches are images again.")

    def _forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """The backbone's forward: cached features pass through, anything else runs the backbone."""
        assert self._original_forward is not None
        if not isinstance(x, CachedFeatures):
            return self._original_forward(x, *args, **kwargs)
        patch = self._patch_of_cache.get(x.cache_id)
        if patch is None:
            raise RuntimeError(
                f"FeatureCache(backbone={self.backbone_attr!r}) got cached features of a cache it did not "
                f"build (cache id {x.cache_id}); each FeatureCache serves its own backbone's loaders only."
            )
        frozen = self.backbone_frozen()
        if frozen and patch.served == x.cache_id and not args and not kwargs:
            assert patch.store is not None
            return x.features.to(patch.store.out_dtype)
        if not frozen:
            self._invalidate("a backbone parameter requires grad")
        # Rows of a cache that no longer serves (unfrozen after the batch was fetched, or rebuilt
        # since the loader's workers started): load those samples again and run the backbone.
        batch = patch.raw_batch(x.sample_indices.tolist())
        inputs = batch_input(batch, input_location(batch, self.input_key))
        return self._original_forward(input_to(inputs, x.device), *args, **kwargs)


def _val_loaders(trainer: Trainer) -> list[Any]:
    loaders = trainer.val_dataloaders
    if loaders is None:
        return []
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
