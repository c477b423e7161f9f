"""FeatureCache: same results as uncached training, one backbone pass per sample, invalidation."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from lt_transfer import FeatureCache, TransferClassifier
from lt_transfer.callbacks import FeatureCacheMemoryError
from lt_transfer.callbacks.feature_cache import CachedFeatures
from lt_transfer.data import ImageSplit, TransformedImages, image_transform
from tests.conftest import make_tiny_backbone
from tests.ddp import ddp_trainer, run_two_ranks


class Probe(pl.LightningModule):
    """Any LightningModule with a ``backbone`` attribute (not ours): counts backbone samples."""

    def __init__(self, frozen: bool = True, lr: float = 0.1, num_classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = make_tiny_backbone()
        self.head = nn.Linear(8, num_classes)
        self.lr = lr
        self.backbone.requires_grad_(not frozen)
        self.backbone.eval()  # frozen BatchNorm: running statistics, no batch dependence
        self.backbone_samples = 0
        self.backbone.model.register_forward_hook(self._count)

    def _count(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.backbone_samples += len(inputs[0])

    def train(self, mode: bool = True) -> Probe:
        super().train(mode)
        if not any(p.requires_grad for p in self.backbone.parameters()):
            self.backbone.eval()
        return self

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.head(self.backbone(x)), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.head(self.backbone(x)), y))

    def on_train_epoch_end(self) -> None:
        self.log("backbone_samples", float(self.backbone_samples), reduce_fx="sum", sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loaders(n: int = 40, val: int = 16, drop_last: bool = True) -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n + val, 3, 8, 8, generator=generator)
    y = torch.randint(0, 3, (n + val,), generator=generator)
    train = DataLoader(TensorDataset(x[:n], y[:n]), batch_size=8, shuffle=True, drop_last=drop_last)
    return train, DataLoader(TensorDataset(x[n:], y[n:]), batch_size=8)


def fit(model: pl.LightningModule, callbacks: list[Callback], epochs: int = 3, **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = dict(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def run(cache: FeatureCache | None, epochs: int = 3, extra: list[Callback] | None = None) -> Probe:
    pl.seed_everything(0, verbose=False)
    model = Probe()
    train, val = loaders()
    callbacks = ([cache] if cache else []) + (extra or [])
    fit(model, callbacks, epochs).fit(model, train, val)
    return model


def test_same_head_as_uncached_and_one_backbone_pass_per_sample() -> None:
    plain = run(None)
    cache = FeatureCache()
    cached = run(cache)
    torch.testing.assert_close(cached.head.weight, plain.head.weight, rtol=1e-5, atol=1e-6)
    # uncached: 3 epochs x 40 samples (drop_last keeps 5 x 8) + 3 validation runs x 16
    assert plain.backbone_samples == 3 * 40 + 3 * 16
    # cached: each training and validation sample exactly once, whatever the epochs and shuffling
    assert cached.backbone_samples == 40 + 16 == cache.computed_samples
    assert cache.builds == 2 and cache.invalidations == 0
    assert "forward" not in vars(cached.backbone)  # the wrapped forward is removed after fit


def test_bf16_mixed_precision_matches_uncached() -> None:
    heads = []
    for cache in (None, FeatureCache(dtype="bfloat16")):
        pl.seed_everything(0, verbose=False)
        model = Probe()
        train, val = loaders()
        fit(model, [cache] if cache else [], epochs=2, precision="bf16-mixed").fit(model, train, val)
        heads.append(model.head.weight.detach().clone())
    # bf16 backbone outputs are stored exactly in bf16 and served back unchanged
    torch.testing.assert_close(heads[0], heads[1], rtol=0, atol=0)


def test_transfer_classifier_on_images_matches_uncached() -> None:
    """TransferClassifier(finetune='frozen') + image data set with a deterministic transform."""
    generator = torch.Generator().manual_seed(0)
    split = ImageSplit(
        torch.randint(0, 255, (24, 28, 28), dtype=torch.uint8, generator=generator), torch.arange(24) % 3
    )
    weights = []
    for callbacks in ([], [FeatureCache(dtype="float32")]):
        pl.seed_everything(0, verbose=False)
        torch.manual_seed(0)
        model = TransferClassifier(make_tiny_backbone(), num_classes=3, finetune="frozen")
        data = DataLoader(TransformedImages(split, image_transform(16)), batch_size=6, shuffle=True)
        fit(model, callbacks, epochs=2).fit(model, data)
        weights.append(model.head.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)


class Unfreeze(Callback):
    """Unfreezes the backbone at the start of ``epoch`` (or at batch ``batch`` of it)."""

    def __init__(self, epoch: int, batch: int | None = None) -> None:
        self.epoch, self.batch = epoch, batch

    def _go(self, pl_module: pl.LightningModule) -> None:
        pl_module.backbone.requires_grad_(True)
        pl_module.backbone.train()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.batch is None and trainer.current_epoch == self.epoch:
            self._go(pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.batch == batch_idx and trainer.current_epoch == self.epoch:
            self._go(pl_module)


@pytest.mark.parametrize("batch", [None, 2], ids=["at-epoch-start", "mid-epoch"])
def test_unfreezing_drops_the_cache_and_the_backbone_trains(batch: int | None) -> None:
    before = make_tiny_backbone().state_dict()
    plain = run(None, extra=[Unfreeze(epoch=1, batch=batch)])
    cache = FeatureCache()
    # the unfreezer runs *after* the cache's epoch-start check: the worst order
    cached = run(cache, extra=[Unfreeze(epoch=1, batch=batch)])
    assert cache.invalidations == 1
    changed = [k for k, v in cached.backbone.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.endswith("weight") for k in changed), "the backbone did not train after unfreezing"
    for a, b in zip(cached.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # one build pass (40 train + 16 val), then normal passes from the unfreeze on
    unfrozen_train = 2 * 40 - (batch or 0) * 8
    assert cached.backbone_samples == 40 + 16 + unfrozen_train + 2 * 16


class NoisyImages(Dataset):
    """Random augmentation with no ``transform`` attribute: found by loading twice."""

    def __init__(self, n: int = 16) -> None:
        self.x, self.y = torch.randn(n, 3, 8, 8), torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i] + 0.1 * torch.randn_like(self.x[i]), self.y[i]


def test_random_augmentation_warns_and_trains_uncached() -> None:
    split = ImageSplit(torch.zeros(16, 28, 28, dtype=torch.uint8), torch.arange(16) % 3)
    for dataset, pattern in [
        (TransformedImages(split, image_transform(16, augment="light")), "RandomAffine"),
        (NoisyImages(), "two loads"),
    ]:
        cache = FeatureCache(cache_val=False)
        model = Probe()
        with pytest.warns(UserWarning, match=pattern):
            fit(model, [cache], epochs=2).fit(model, DataLoader(dataset, batch_size=8, shuffle=True))
        assert cache.builds == 0 and model.backbone_samples == 2 * 16
    model = Probe()
    with pytest.raises(ValueError, match="randomly augmented"):
        fit(model, [FeatureCache(on_augmentation="error")]).fit(
            model, DataLoader(NoisyImages(), batch_size=8)
        )


class RoundFeatures(Callback):
    """Rounds the backbone's output to a storage dtype and back (what a half-precision cache serves)."""

    def __init__(self, dtype: str) -> None:
        self.dtype = getattr(torch, dtype)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.backbone.register_forward_hook(lambda m, i, out: out.to(self.dtype).float())


def test_memory_limit_errors_or_spills_to_a_memory_mapped_file(tmp_path: Any) -> None:
    train, _ = loaders()
    model = Probe()
    with pytest.raises(FeatureCacheMemoryError, match="max_memory_mb=1e-06"):
        fit(model, [FeatureCache(max_memory_mb=1e-6)]).fit(model, train)
    # the failed fit leaves neither the data set nor the backbone patched
    assert "__getitems__" not in vars(train.dataset) and "forward" not in vars(model.backbone)

    seen: list[str] = []

    class Look(Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            seen.extend(os.listdir(tmp_path))

    cache = FeatureCache(max_memory_mb=1e-6, on_limit="memmap", memmap_dir=str(tmp_path), dtype="bfloat16")
    cached = run(cache, extra=[Look()])
    assert cache.last_estimate_bytes == 16 * 8 * 2  # the last build: 16 validation samples x 8 x bf16
    assert any(name.startswith("feature_cache_") for name in seen)
    assert os.listdir(tmp_path) == []  # removed in teardown
    # The independent computation: uncached training whose backbone output is rounded to
    # bfloat16, which is what the bf16 store serves. Measured difference 0 (same operations on
    # the same numbers); tolerance rtol=1e-5, atol=1e-6. A head trained one epoch less differs by
    # about 1e-2 (asserted > 1e-3 below): the tolerance cannot hide a wrong number of epochs or
    # features served from the wrong rows of the file.
    rounded = run(None, extra=[RoundFeatures("bfloat16")])
    torch.testing.assert_close(cached.head.weight, rounded.head.weight, rtol=1e-5, atol=1e-6)
    shorter = run(None, epochs=2, extra=[RoundFeatures("bfloat16")])
    assert (shorter.head.weight - rounded.head.weight).abs().max() > 1e-3


def test_resume_rebuilds_the_cache_with_the_same_results(tmp_path: Any) -> None:
    results = []
    for cache in (None, FeatureCache()):
        pl.seed_everything(0, verbose=False)
        model = Probe()
        train, val = loaders()
        checkpoint = ModelCheckpoint(dirpath=tmp_path / str(bool(cache)), save_last=True)
        callbacks = ([cache] if cache else []) + [checkpoint]
        fit(model, callbacks, epochs=2, enable_checkpointing=True).fit(model, train, val)
        resumed = Probe()
        fresh = FeatureCache() if cache else None
        trainer = fit(resumed, ([fresh] if fresh else []), epochs=4)
        trainer.fit(resumed, train, val, ckpt_path=checkpoint.last_model_path)
        results.append(resumed.head.weight.detach().clone())
        if fresh is not None:
            assert fresh.builds == 2 + 2  # restored counter + rebuilt train and val caches
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_ddp_spawn_each_rank_builds_its_shard_once() -> None:
    """Exact sample counts (no tolerance); which features go with which sample is checked by
    test_ddp_cached_features_pair_with_their_own_samples."""
    pl.seed_everything(0, verbose=False)
    model = Probe()
    train, val = loaders(n=40, val=16, drop_last=False)
    trainer = fit(model, [FeatureCache()], epochs=2, strategy="ddp_spawn", devices=2)
    trainer.fit(model, train, val)
    # 40 training samples split over 2 ranks (then gathered: shards reshuffle every epoch),
    # 16 validation samples as fixed shards: each computed once in all, whatever the epochs
    assert int(trainer.callback_metrics["backbone_samples"]) == 40 + 16
    assert trainer.callback_metrics["val_loss"].isfinite()


class PairingProbe(Probe):
    """A Probe that checks every cached batch against the real backbone run on the rows it names.

    The independent computation: the backbone's own module (not the cache's wrapped forward) on
    the data-set rows ``sample_indices`` of the batch, and the data set's labels of those rows.
    """

    def __init__(self, train: TensorDataset, val: TensorDataset) -> None:
        super().__init__()
        self.data = {"train": train.tensors, "val": val.tensors}
        self.checked_rows = 0
        self.max_error = 0.0
        self.label_errors = 0

    def _check(self, x: torch.Tensor, y: torch.Tensor, split: str) -> None:
        if not isinstance(x, CachedFeatures):
            return
        inputs, labels = self.data[split]
        index = x.sample_indices.cpu()
        with torch.no_grad():
            want = self.backbone.model(inputs[index])
        self.max_error = max(self.max_error, float((x.features - want).abs().max()))
        self.label_errors += int((y.cpu() != labels[index]).sum())
        self.checked_rows += len(index)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self._check(*batch, "train")
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._check(*batch, "val")
        super().validation_step(batch, batch_idx)


def _pairing_worker(rank: int, out: str) -> None:
    results = {}
    for cached in (False, True):
        pl.seed_everything(0, verbose=False)
        train, val = loaders(n=40, val=16, drop_last=False)
        model = PairingProbe(train.dataset, val.dataset)
        cache = FeatureCache() if cached else None
        ddp_trainer(max_epochs=3, callbacks=[cache] if cache else []).fit(model, train, val)
        results[cached] = {
            "head": model.head.weight.detach().clone(),
            "checked_rows": model.checked_rows,
            "max_error": model.max_error,
            "label_errors": model.label_errors,
            "computed": cache.computed_samples if cache else 0,
        }
    torch.save(results, Path(out) / f"rank{rank}.pt")


def test_ddp_cached_features_pair_with_their_own_samples(tmp_path: Path) -> None:
    """Under DDP (2 processes, training shards reshuffled every epoch, so the shards are gathered;
    validation shards fixed) every cached row holds the features and label of the sample it names,
    and the heads equal uncached DDP training.

    Tolerances: features within 1e-5 of the backbone rerun on those rows (measured difference
    0); heads rtol=1e-5, atol=1e-6 (measured 0). Gathered rows paired with the wrong samples
    differ by about 3e-2 (tried: the gathered indices taken in the other order).
    """
    run_two_ranks(_pairing_worker, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    for rank in ranks:
        cached, plain = rank[True], rank[False]
        # each rank: 3 epochs x 20 training rows + 3 validation runs x 8 rows, all served cached
        assert cached["checked_rows"] == 3 * 20 + 3 * 8 and plain["checked_rows"] == 0
        assert cached["max_error"] <= 1e-5 and cached["label_errors"] == 0
        assert cached["computed"] == 20 + 8  # its own shards only: the training shard was gathered
        torch.testing.assert_close(cached["head"], plain["head"], rtol=1e-5, atol=1e-6)
    assert torch.equal(ranks[0][True]["head"], ranks[1][True]["head"])


class TrainModeProbe(Probe):
    """A Probe whose frozen backbone follows the module's mode: BatchNorm (and ``dropout``) train."""

    def __init__(self, dropout: bool = False) -> None:
        super().__init__()
        if dropout:
            self.backbone.model.add_module("dropout", nn.Dropout(0.2))
        self.backbone.train()

    def train(self, mode: bool = True) -> TrainModeProbe:
        pl.LightningModule.train(self, mode)
        return self


@pytest.mark.parametrize("dropout", [False, True], ids=["batchnorm", "dropout"])
def test_frozen_backbone_in_train_mode_is_never_cached(dropout: bool) -> None:
    """Frozen parameters but BatchNorm/dropout in train mode: the features change every pass, so
    the training cache warns, builds nothing and training is exactly the uncached one (validation
    runs in eval mode, so its cache applies)."""

    def run_train_mode(cache: FeatureCache | None) -> TrainModeProbe:
        pl.seed_everything(0, verbose=False)
        model = TrainModeProbe(dropout)
        train, val = loaders()
        fit(model, [cache] if cache else [], epochs=2).fit(model, train, val)
        return model

    plain = run_train_mode(None)
    cache = FeatureCache()
    with pytest.warns(UserWarning, match="in training mode"):
        cached = run_train_mode(cache)
    assert cache.builds == 1 and cache.computed_samples == 16  # the validation set only
    assert plain.backbone_samples == 2 * 40 + 2 * 16 and cached.backbone_samples == 2 * 40 + 16
    for a, b in zip(cached.state_dict().values(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # weights and BatchNorm running statistics, bit for bit


def test_transfer_classifier_frozen_mode_train_is_not_cached() -> None:
    """``TransferClassifier(finetune="frozen", frozen_mode="train")``: BatchNorm of the frozen
    backbone trains, so the cache must stay out (README: the cache applies only in eval mode)."""
    split = ImageSplit(torch.randint(0, 255, (24, 28, 28), dtype=torch.uint8), torch.arange(24) % 3)
    cache = FeatureCache(cache_val=False)
    model = TransferClassifier(make_tiny_backbone(), num_classes=3, finetune="frozen", frozen_mode="train")
    data = DataLoader(TransformedImages(split, image_transform(16)), batch_size=6, shuffle=True)
    with pytest.warns(UserWarning, match="in training mode"):
        fit(model, [cache], epochs=2).fit(model, data)
    assert cache.builds == 0
    assert int(model.backbone.model.stem[1].num_batches_tracked) == 2 * 4  # BatchNorm saw every batch


class Stream(IterableDataset):
    """The training samples as a stream: no sample index to cache by."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __iter__(self) -> Any:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class TwoLoaderProbe(Probe):
    """Trains on two training loaders at once (a dict of loaders: Lightning's CombinedLoader)."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return sum(super(TwoLoaderProbe, self).training_step(batch[k], batch_idx) for k in ("a", "b"))


class TokenRows(Dataset):
    """Tokenizer-dict samples ``{"input_ids", "attention_mask", "labels"}``."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.arange(6) * (i + 1) % 20
        mask = torch.ones(6, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(i % 3)}


class TokenProbe(pl.LightningModule):
    """A frozen embedding-bag "encoder" on tokenizer dicts; counts the samples it encodes."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.EmbeddingBag(20, 8).requires_grad_(False)
        self.head = nn.Linear(8, 3)
        self.backbone_samples = 0

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.backbone_samples += len(batch["input_ids"])
        return self.backbone(batch["input_ids"])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return F.cross_entropy(self.head(self.encode(inputs)), batch["labels"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.head.parameters(), lr=0.1)


def test_loaders_the_cache_cannot_serve_warn_and_train_uncached() -> None:
    """README: a map-style data set (sample indices), one training loader and a tensor input are
    needed; otherwise the cache warns why and training runs uncached, exactly as without it."""
    train, _ = loaders()
    for make, data, match, samples in [
        (Probe, DataLoader(Stream(train.dataset), batch_size=8), "IterableDataset", 2 * 40),
        (TwoLoaderProbe, {"a": train, "b": train}, "single training DataLoader", 2 * 2 * 40),
        (TokenProbe, DataLoader(TokenRows(), batch_size=8), "not one tensor", 2 * 16),
    ]:
        heads = []
        for cache in (None, FeatureCache(cache_val=False)):
            pl.seed_everything(0, verbose=False)
            model = make()
            if cache is None:
                fit(model, [], epochs=2).fit(model, data)
            else:
                with pytest.warns(UserWarning, match=match):
                    fit(model, [cache], epochs=2).fit(model, data)
                assert cache.builds == 0 and model.backbone_samples >= samples
            heads.append(model.head.weight.detach().clone())
        assert torch.equal(heads[0], heads[1]), make.__name__


def test_the_cache_size_is_logged_before_it_is_filled() -> None:
    """README: the cache size is logged before the cache is filled: once the first build batch
    gave the feature width, before the other batches run."""
    import logging

    events: list[str] = []
    model = Probe()
    model.backbone.model.register_forward_hook(lambda m, i, o: events.append("backbone"))

    class Mark(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "FeatureCache: caching" in record.getMessage():
                events.append(record.getMessage())

    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # where rank_zero_info logs
    handler, level = Mark(level=logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        fit(model, [FeatureCache(cache_val=False)], epochs=1).fit(model, loaders()[0])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    # the build pass: 5 batches of 8, then every training batch is served from the cache
    assert events[0] == "backbone" and events[2:] == ["backbone"] * 4
    assert events[1].startswith("FeatureCache: caching 40 train samples x 8 features as float32")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(backbone=""), "backbone=''"),
        (dict(input_key=1.5), "input_key=1.5"),
        (dict(dtype="int8"), "dtype='int8'"),
        (dict(max_memory_mb=0), "max_memory_mb=0"),
        (dict(on_limit="spill"), "on_limit='spill'"),
        (dict(memmap_dir="/no/such/dir"), "memmap_dir='/no/such/dir'"),
        (dict(build_batch_size=0), "build_batch_size=0"),
        (dict(on_augmentation="ignore"), "on_augmentation='ignore'"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=re.escape(match)):
        FeatureCache(**kwargs)


def test_unknown_backbone_attribute_lists_the_children() -> None:
    model = Probe()
    train, _ = loaders()
    with pytest.raises(ValueError, match=r"children are \['backbone', 'head'\]"):
        fit(model, [FeatureCache(backbone="encoder")]).fit(model, train)


def test_dataloader_workers_keep_order_and_single_pass() -> None:
    def run_workers(cache: FeatureCache | None) -> Probe:
        pl.seed_everything(0, verbose=False)
        model = Probe()
        train, val = loaders()
        train = DataLoader(train.dataset, batch_size=8, shuffle=True, drop_last=True, num_workers=2)
        val = DataLoader(val.dataset, batch_size=8, num_workers=1)
        fit(model, [cache] if cache else [], epochs=2).fit(model, train, val)
        return model

    plain, cached = run_workers(None), run_workers(FeatureCache())
    torch.testing.assert_close(cached.head.weight, plain.head.weight, rtol=1e-5, atol=1e-6)
    # training samples once; validation: the first run's workers started before the cache
    # existed, so it runs the backbone once more than the build pass
    assert cached.backbone_samples == 40 + 16 + 16


@pytest.mark.parametrize("cache_first", [True, False])
def test_composes_with_progressive_unfreezing(cache_first: bool) -> None:
    unfreezing = pytest.importorskip("lt_transfer.callbacks.progressive_unfreezing")

    def run_schedule(cache: FeatureCache | None) -> tuple[TransferClassifier, list[int]]:
        pl.seed_everything(0, verbose=False)
        torch.manual_seed(0)
        # the callback decides what trains: the model must be finetune="full" (it freezes all at setup)
        model = TransferClassifier(make_tiny_backbone(), num_classes=3, finetune="full")
        count = [0]
        model.backbone.model.register_forward_hook(lambda m, i, o: count.__setitem__(0, count[0] + len(i[0])))
        schedule = unfreezing.ProgressiveUnfreezing(unfreeze_at_epoch=[2, 3], groups_per_step=2)
        callbacks: list[Callback] = [schedule] if cache is None else [cache, schedule]
        train, _ = loaders(n=48, drop_last=False)
        fit(model, callbacks if cache_first else callbacks[::-1], epochs=4).fit(model, train)
        return model, count

    plain, plain_count = run_schedule(None)
    cache = FeatureCache()
    cached, cached_count = run_schedule(cache)
    for a, b in zip(cached.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert plain_count[0] == 4 * 48 and cached_count[0] == 48 + 2 * 48  # once, then unfrozen epochs
    assert cache.builds == 1 and cache.invalidations == 1


class DictImages(Dataset):
    """Dict samples: ``{"label", "image", "name"?}`` (a string field cannot be cached)."""

    def __init__(self, with_name: bool) -> None:
        generator = torch.Generator().manual_seed(2)
        self.x, self.y = torch.randn(24, 3, 8, 8, generator=generator), torch.arange(24) % 3
        self.with_name = with_name

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample: dict[str, Any] = {"label": self.y[i], "image": self.x[i]}
        if self.with_name:
            sample["name"] = f"img{i}"
        return sample


class DictProbe(Probe):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self.head(self.backbone(batch["image"])), batch["label"])


def test_dict_batches_with_input_key() -> None:
    heads = []
    for cache in (None, FeatureCache(input_key="image")):
        pl.seed_everything(0, verbose=False)
        model = DictProbe()
        fit(model, [cache] if cache else [], epochs=2).fit(
            model, DataLoader(DictImages(False), batch_size=8, shuffle=True)
        )
        heads.append(model.head.weight.detach().clone())
    torch.testing.assert_close(heads[0], heads[1], rtol=1e-5, atol=1e-6)
    assert model.backbone_samples == 24
    model, cache = DictProbe(), FeatureCache(input_key="image")
    with pytest.warns(UserWarning, match="field 'name'.*is a list, not a tensor"):
        fit(model, [cache], epochs=2).fit(model, DataLoader(DictImages(True), batch_size=8))
    assert cache.builds == 0 and model.backbone_samples == 8 + 2 * 24  # one build batch, then uncached


def test_dict_batches_keyed_image_follow_the_batch_contract() -> None:
    """input_key=None (the default) finds the input of an ``image``-keyed dict batch."""
    heads = []
    for cache in (None, FeatureCache()):
        pl.seed_everything(0, verbose=False)
        model = DictProbe()
        fit(model, [cache] if cache else [], epochs=2).fit(
            model, DataLoader(DictImages(False), batch_size=8, shuffle=True)
        )
        heads.append(model.head.weight.detach().clone())
    torch.testing.assert_close(heads[0], heads[1], rtol=1e-5, atol=1e-6)
    assert model.backbone_samples == 24 and cache is not None and cache.builds == 1


# ------------------------------------------------------------------ typed cached batches
class IndexedRows(Dataset):
    """Tabular rows ``(x, y, index)``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i], torch.tensor(i)


class TabularProbe(pl.LightningModule):
    """A frozen ``Linear(5, 4)`` backbone on 5-column rows, so a cached batch of 4 features plus
    an index column (the old disguised form) has the very shape of an input batch. Each step
    also passes the backbone such a plain tensor, made of the cached rows' features and indices."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Linear(5, 4).requires_grad_(False)
        self.head = nn.Linear(4, 2)
        self.register_buffer("table", self.backbone(x).detach())  # every row's features
        self.checks: list[bool] = []
        self.cached_inputs = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, index = batch
        self.cached_inputs += int(type(x).__name__ == "CachedFeatures")
        lookalike = torch.cat([self.table[index], index[:, None].float()], dim=1)
        out = self.backbone(lookalike)
        self.checks.append(torch.equal(out, F.linear(lookalike, self.backbone.weight, self.backbone.bias)))
        return F.cross_entropy(self.head(self.backbone(x)), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.head.parameters(), lr=0.1)


def test_a_plain_tensor_shaped_like_a_cached_batch_is_never_taken_for_one() -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 5, generator=generator), torch.randint(0, 2, (24,), generator=generator)
    model, cache = TabularProbe(x), FeatureCache()
    fit(model, [cache], epochs=3).fit(model, DataLoader(IndexedRows(x, y), batch_size=6, shuffle=True))
    assert len(model.checks) == 3 * 4 and all(model.checks)  # the backbone ran on every plain tensor
    assert cache.builds == 1 and model.cached_inputs == 3 * 4  # every batch was served from the cache


def test_cached_features_survive_collate_workers_pickling_and_moves() -> None:
    import pickle

    from lt_transfer.callbacks.feature_cache import CachedFeatures

    class Rows(Dataset):
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int) -> tuple[CachedFeatures, torch.Tensor]:
            features = CachedFeatures(torch.full((3,), float(i)), torch.tensor(i), cache_id=7)
            return features, torch.tensor(i % 2)

    for workers in (0, 2):
        loader = DataLoader(Rows(), batch_size=4, shuffle=True, num_workers=workers, pin_memory=False)
        for x, _ in loader:
            assert isinstance(x, CachedFeatures) and x.cache_id == 7
            assert x.sample_indices.tolist() == x[:, 0].long().tolist()
    x = pickle.loads(pickle.dumps(x))
    assert isinstance(x, CachedFeatures) and x.sample_indices.tolist() == x[:, 0].long().tolist()
    half = x.to(torch.bfloat16)
    assert isinstance(half, CachedFeatures) and half.dtype == torch.bfloat16
    assert half.sample_indices.dtype == torch.long  # a dtype move leaves the indices alone
    from lightning.fabric.utilities.apply_func import move_data_to_device

    moved = move_data_to_device({"image": x.detach().clone()}, torch.device("cpu"))
    assert isinstance(moved["image"], CachedFeatures)
    if torch.cuda.is_available():
        from torch.utils.data._utils.pin_memory import pin_memory

        pinned = pin_memory([x])[0]
        assert isinstance(pinned, CachedFeatures) and pinned.is_pinned() and pinned.sample_indices.is_pinned()
        on_gpu = move_data_to_device(pinned, torch.device("cuda"))
        assert isinstance(on_gpu, CachedFeatures) and on_gpu.sample_indices.is_cuda
    # anything computed from cached features is a plain tensor
    for derived in (x[:1], x * 1, x.sum(1), torch.cat([x, x]), x.features):
        assert type(derived) is torch.Tensor


# ------------------------------------------------------------------ persistent workers
def test_persistent_workers_of_our_datamodule_build_once_and_serve() -> None:
    """DigitsDataModule sets persistent_workers=True with num_workers > 0: the cache still applies."""
    from lt_transfer.data import DigitsDataModule

    class Count(Callback):
        def __init__(self) -> None:
            self.per_epoch: list[int] = []

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
            self.per_epoch.append(pl_module.backbone_samples)

    def run_digits(cache: FeatureCache | None) -> tuple[Probe, Count]:
        pl.seed_everything(0, verbose=False)
        model, count = Probe(num_classes=10), Count()
        data = DigitsDataModule(
            "sklearn_digits", image_size=8, labels_per_class=2, val_samples=10, batch_size=5, num_workers=2
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="FeatureCache")  # e.g. "not caching the train data"
            fit(model, ([cache] if cache else []) + [count], epochs=3).fit(model, datamodule=data)
        return model, count

    plain, _ = run_digits(None)
    cache = FeatureCache()
    cached, count = run_digits(cache)
    torch.testing.assert_close(cached.head.weight, plain.head.weight, rtol=1e-5, atol=1e-6)
    assert plain.backbone_samples == 3 * 20 + 3 * 10
    # build passes (20 train + 10 val) and the first validation run (its workers predate the
    # cache); nothing in later epochs
    assert count.per_epoch == [20 + 10 + 10] * 3
    assert cache.builds == 2 and cache.invalidations == 0


class Schedule(Callback):
    """Unfreezes the backbone at epoch ``unfreeze`` and freezes it again at epoch ``refreeze``."""

    def __init__(self, unfreeze: int, refreeze: int) -> None:
        self.unfreeze, self.refreeze = unfreeze, refreeze

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.current_epoch == self.unfreeze:
            pl_module.backbone.requires_grad_(True)
            pl_module.backbone.train()
        if trainer.current_epoch == self.refreeze:
            pl_module.backbone.requires_grad_(False)
            pl_module.backbone.eval()


@pytest.mark.parametrize("cache_first", [True, False])
def test_persistent_workers_follow_unfreeze_and_rebuild(cache_first: bool) -> None:
    def run_schedule(cache: FeatureCache | None) -> Probe:
        pl.seed_everything(0, verbose=False)
        model = Probe()
        train, val = loaders(n=24, val=8)
        train = DataLoader(train.dataset, batch_size=8, shuffle=True, num_workers=2, persistent_workers=True)
        val = DataLoader(val.dataset, batch_size=8, num_workers=1, persistent_workers=True)
        callbacks: list[Callback] = [Schedule(unfreeze=1, refreeze=2)]
        if cache is not None:
            callbacks = [cache, *callbacks] if cache_first else [*callbacks, cache]
        fit(model, callbacks, epochs=4).fit(model, train, val)
        return model

    plain = run_schedule(None)
    cache = FeatureCache()
    cached = run_schedule(cache)
    for a, b in zip(cached.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert cache.invalidations == 1 and cache.builds == 4  # train + val, before and after the unfreeze


# ------------------------------------------------------------------ loop limits
class IndexedProbe(Probe):
    """A Probe on ``(x, y, index)`` batches that records the training samples each epoch used."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, index = batch
        self.seen += index.tolist()
        return F.cross_entropy(self.head(self.backbone(x)), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, _ = batch
        self.log("val_loss", F.cross_entropy(self.head(self.backbone(x)), y))


def indexed_loaders(n: int = 40, val: int = 16, **train_kwargs: Any) -> tuple[DataLoader, DataLoader]:
    """40 training samples in batches of 8 (5 batches), 16 validation samples (2 batches)."""
    train, held_out = loaders(n, val)
    (x, y), (vx, vy) = train.dataset.tensors, held_out.dataset.tensors
    options: dict[str, Any] = {"batch_size": 8, "shuffle": True, **train_kwargs}
    return (
        DataLoader(TensorDataset(x, y, torch.arange(n)), **options),
        DataLoader(TensorDataset(vx, vy, torch.arange(val)), batch_size=8),
    )


def run_limited(
    cache: FeatureCache | None,
    epochs: int = 1,
    extra: list[Callback] | None = None,
    train_kwargs: dict[str, Any] | None = None,
    **trainer_kwargs: Any,
) -> IndexedProbe:
    pl.seed_everything(0, verbose=False)
    model = IndexedProbe()
    train, val = indexed_loaders(**(train_kwargs or {}))
    callbacks = ([cache] if cache else []) + (extra or [])
    fit(model, callbacks, epochs, **trainer_kwargs).fit(model, train, val)
    return model


def test_fast_dev_run_caches_only_the_one_batch_it_uses() -> None:
    cache = FeatureCache()
    model = run_limited(cache, fast_dev_run=True)
    # one training batch and one validation batch of 8, not 40 + 16 samples
    assert cache.computed_samples == 8 + 8 and cache.builds == 2
    assert model.backbone_samples == 16  # both batches were then served from the cache
    assert len(model.seen) == 8


@pytest.mark.parametrize(
    ("limits", "train_batches", "val_batches"),
    [
        (dict(limit_train_batches=2, limit_val_batches=1), 2, 1),
        (dict(limit_train_batches=0.5, limit_val_batches=0.5), 2, 1),  # int(5 x 0.5), int(2 x 0.5)
    ],
    ids=["int", "float"],
)
def test_batch_limits_cache_the_batches_the_loop_fetches(
    limits: dict[str, Any], train_batches: int, val_batches: int
) -> None:
    plain = run_limited(None, **limits)
    cache = FeatureCache()
    cached = run_limited(cache, **limits)
    torch.testing.assert_close(cached.head.weight, plain.head.weight, rtol=1e-5, atol=1e-6)
    assert cached.seen == plain.seen and len(cached.seen) == train_batches * 8  # the same shuffled batches
    assert cache.computed_samples == train_batches * 8 + val_batches * 8
    assert cached.backbone_samples == cache.computed_samples  # every batch served from the cache


@pytest.mark.parametrize(
    "train_kwargs",
    [{}, dict(num_workers=2), dict(num_workers=2, persistent_workers=True)],
    ids=["main-process", "workers", "persistent-workers"],
)
def test_reshuffled_epochs_grow_the_cache_by_the_samples_they_add(train_kwargs: dict[str, Any]) -> None:
    limits = dict(limit_train_batches=2, limit_val_batches=1)
    plain = run_limited(None, epochs=3, train_kwargs=train_kwargs, **limits)
    cache = FeatureCache()
    cached = run_limited(cache, epochs=3, train_kwargs=train_kwargs, **limits)
    torch.testing.assert_close(cached.head.weight, plain.head.weight, rtol=1e-5, atol=1e-6)
    assert cached.seen == plain.seen
    used = len(set(cached.seen))
    assert 16 < used < 40  # later epochs reshuffle: new samples, never the whole data set
    # each used sample computed once (epoch 0 builds, later epochs add what they lack) and
    # every batch served from the cache
    assert cache.computed_samples == used + 8 == cached.backbone_samples


def test_overfit_batches_caches_the_repeated_batches() -> None:
    cache = FeatureCache()
    with pytest.warns(UserWarning, match="shuffling"):
        model = run_limited(cache, epochs=3, overfit_batches=2)
    assert model.seen == list(range(16)) * 3  # Lightning makes the order sequential
    # 2 training batches and both validation batches (overfit_batches limits validation too)
    assert cache.computed_samples == 16 + 16 == model.backbone_samples and cache.builds == 2


class DrawRandom(Callback):
    """Draws a random number after the cache planned the epoch: its forecast of the order misses."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.rand(1)


def test_batches_outside_the_cache_run_the_backbone_never_wrong_features() -> None:
    limits = dict(limit_train_batches=2, limit_val_batches=1)
    plain = run_limited(None, epochs=2, extra=[DrawRandom()], **limits)
    cache = FeatureCache()
    cached = run_limited(cache, epochs=2, extra=[DrawRandom()], **limits)
    assert cached.seen == plain.seen
    torch.testing.assert_close(cached.head.weight, plain.head.weight, rtol=1e-5, atol=1e-6)
    assert cached.backbone_samples > cache.computed_samples  # the missed batches were computed


def test_planned_indices_follow_the_distributed_shard_and_epoch() -> None:
    from torch.utils.data import DistributedSampler

    from lt_transfer.callbacks.feature_cache.limits import planned_indices

    dataset = TensorDataset(torch.arange(20))
    sampler = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=3)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    sampler.set_epoch(2)
    state = torch.get_rng_state()
    planned = planned_indices(loader, 2, fresh_iterator=True)
    assert torch.equal(torch.get_rng_state(), state)  # no random number consumed
    assert planned == [int(i) for (batch,) in list(loader)[:2] for i in batch]
