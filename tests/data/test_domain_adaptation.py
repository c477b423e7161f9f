"""DomainAdaptationDataModule: MNIST-M-style construction, uneven loaders, empty target, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer.data.domain_adaptation import DomainAdaptationDataModule, combined_train_loader
from lt_transfer.data.mnist_m import blend_with_photos, load_mnist_m
from lt_transfer.modules.domain_adaptation import DomainAdaptationModule
from tests.conftest import make_tiny_backbone


def _dm(n_source: int, n_target: int, batch_size: int = 4, **kwargs: object) -> DomainAdaptationDataModule:
    g = torch.Generator().manual_seed(0)
    source = TensorDataset(
        torch.randn(n_source, 3, 8, 8, generator=g), torch.randint(0, 3, (n_source,), generator=g)
    )
    target = TensorDataset(torch.randn(n_target, 3, 8, 8, generator=g) + 1)
    val = TensorDataset(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g))
    return DomainAdaptationDataModule.from_datasets(
        source, target, val=[val, val], num_classes=3, batch_size=batch_size, **kwargs
    )


def _model(**kwargs: object) -> DomainAdaptationModule:
    torch.manual_seed(0)
    return DomainAdaptationModule(make_tiny_backbone(), num_classes=3, **kwargs)


def _trainer(**kwargs: object) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def test_blend_is_abs_difference_and_deterministic() -> None:
    photos = torch.full((1, 3, 40, 40), 200, dtype=torch.uint8)
    photos[0, 1] = 10
    digits = torch.zeros(2, 28, 28, dtype=torch.uint8)
    digits[0, 5, 5] = 255
    out = blend_with_photos(digits, seed=0, photos=photos)
    assert out[0, :, 5, 5].tolist() == [55, 245, 55]  # |200-255|, |10-255|, |200-255|
    assert out[1, :, 0, 0].tolist() == [200, 10, 200]  # background: the photo itself
    real = torch.randint(0, 256, (16, 28, 28), dtype=torch.uint8)
    assert torch.equal(blend_with_photos(real, seed=3), blend_with_photos(real, seed=3))
    assert not torch.equal(blend_with_photos(real, seed=3), blend_with_photos(real, seed=4))


def test_mnist_m_style_splits_sizes_and_unlabelled_target() -> None:
    splits = load_mnist_m()
    assert tuple(splits.train.images.shape) == (50000, 3, 28, 28)
    dm = DomainAdaptationDataModule(
        "mnist", "mnist_m", source_samples=300, target_samples=200, test_samples=50
    )
    dm.setup("fit")
    assert len(dm.train_source) == 300 and len(dm.train_target) == 200
    assert len(dm.train_target.tensors) == 1  # target training images carry no labels
    assert [len(d) for d in dm.test_sets] == [50, 50]


def _rows(images: torch.Tensor) -> dict[bytes, int]:
    """Each image's bytes -> its index (every MNIST training digit is distinct, so is each blend)."""
    rows = {bytes(image.numpy()): index for index, image in enumerate(images)}
    assert len(rows) == len(images)
    return rows


def test_source_and_target_training_digits_are_disjoint_in_the_datamodule() -> None:
    """The DataModule's actual training subsets, traced back to MNIST's training digits: each
    source image is found among MNIST's digits and each target image among the MNIST-M-style
    blends (blend i is digit i on a photo patch); no digit index is in both domains. Exact
    (no tolerance); with both domains drawn from the same half (tried) 2,000-digit subsets
    share about 2000 * 2000 / 25000 = 160 digits."""
    from lt_transfer.data.sources import load_mnist

    dm = DomainAdaptationDataModule(
        "mnist", "mnist_m", source_samples=2000, target_samples=2000, normalize=False,
        val_samples=10, target_val_samples=10, test_samples=10,
    )  # fmt: skip
    dm.setup("fit")
    digits, blends = _rows(load_mnist().train.images), _rows(load_mnist_m().train.images)

    def as_uint8(x: torch.Tensor) -> torch.Tensor:  # back from images_to_tensor (no resize or norm)
        return (x * 255).round().to(torch.uint8)

    source = [digits[bytes(as_uint8(x[0]).numpy())] for x, _ in dm.train_source]
    target = [blends[bytes(as_uint8(x).numpy())] for (x,) in dm.train_target]
    assert len(set(source)) == len(source) == 2000 and len(set(target)) == len(target) == 2000
    assert not set(source) & set(target)


@pytest.mark.parametrize(
    ("epoch_length", "n_source", "n_target", "steps"),
    [
        ("source", 40, 12, 10),  # 10 vs 3 batches: every source sample once, target cycled
        ("source", 12, 40, 3),  # 3 vs 10 batches: source defines the epoch, target cut
        ("max_size_cycle", 12, 40, 10),
        ("min_size", 40, 12, 3),
    ],
)
def test_uneven_loaders_documented_step_count(
    epoch_length: str, n_source: int, n_target: int, steps: int
) -> None:
    seen_source: list[int] = []

    class Count(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            seen_source.append(len(batch["source"][0]))

    trainer = _trainer(max_epochs=1, callbacks=[Count()])
    trainer.fit(_model(method="coral"), _dm(n_source, n_target, epoch_length=epoch_length))
    assert trainer.global_step == steps
    if epoch_length == "source":
        assert sum(seen_source) == n_source


def test_empty_target_raises() -> None:
    with pytest.raises(ValueError, match="target training set is empty"):
        _dm(8, 0).setup("fit")
    src = DataLoader(TensorDataset(torch.zeros(8, 2), torch.zeros(8)), batch_size=4)
    tgt = DataLoader(TensorDataset(torch.zeros(3, 2)), batch_size=4, drop_last=True)
    with pytest.raises(ValueError, match="target training loader yields no batches"):
        combined_train_loader(src, tgt)


class _RecordSteps(Callback):
    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        payload = {"global_step": trainer.global_step, "batches": trainer.num_training_batches}
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(payload))


def test_ddp_spawn_two_ranks_equal_step_counts(tmp_path: Path) -> None:
    """Exact step and batch counts on both ranks (no tolerance)."""
    # 40 source / 12 target samples, batch 4: per rank 20 source (5 batches) and 6 target
    # (2 batches) -> 5 steps per rank with the target cycled.
    trainer = _trainer(max_epochs=1, strategy="ddp_spawn", devices=2, callbacks=[_RecordSteps(str(tmp_path))])
    trainer.fit(_model(method="dann"), _dm(40, 12))
    records = [json.loads(Path(tmp_path, f"rank{r}.json").read_text()) for r in range(2)]
    assert records[0] == records[1] == {"global_step": 5, "batches": 5}


def test_source_free_yields_target_batches_only() -> None:
    source = TensorDataset(torch.randn(12, 3, 8, 8), torch.randint(0, 3, (12,)))
    target = TensorDataset(torch.randn(6, 3, 8, 8))
    dm = DomainAdaptationDataModule.from_datasets(source, target, batch_size=4, source_free=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, DataLoader) and loader.dataset is target
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [4, 2]
    digits = DomainAdaptationDataModule("mnist", "sklearn_digits", source_samples=10, target_samples=8,
                                        val_samples=4, target_val_samples=4, test_samples=4, source_free=True)
    digits.setup("fit")
    assert len(digits.train_dataloader().dataset) == 8 and len(digits.val_dataloader()) == 2
