"""DomainAdaptationDataModule: labelled source + unlabelled target, evaluated on both domains.

Training batches are ``{"source": (x_s, y_s), "target": [x_t]}`` dictionaries from
Lightning's :class:`~lightning.pytorch.utilities.combined_loader.CombinedLoader`; target
training images carry no labels at all, so they cannot leak into the loss. Validation and
test have two labelled loaders, named by :attr:`DomainAdaptationDataModule.eval_names`
(``val/source/acc``, ``val/target/acc``): the labelled target *validation* split is the
small split to choose hyper-parameters on; the target *test* split is for reporting only.

**When the loaders have different lengths** (``epoch_length``):

* ``"source"`` (default): one epoch = one pass over the source loader, so every source
  sample is seen exactly once per epoch. A shorter target loader is cycled (restarted,
  reshuffled) within the epoch; a longer one is cut off at the source length and starts
  afresh, reshuffled, next epoch. 10 source vs 3 target batches → 10 steps; 3 vs 10 → 3.
* ``"max_size_cycle"``: Lightning's mode: the longer loader defines the epoch, the shorter
  one is cycled (10 vs 3 → 10 steps; 3 vs 10 → 10 steps, source cycled).
* ``"min_size"``: the shorter loader defines the epoch (10 vs 3 → 3; 3 vs 10 → 3).

**Under DDP** Lightning gives each loader its own ``DistributedSampler``: each rank sees
``ceil(N / world_size)`` samples of each domain (padded by repetition), so every rank runs
the same number of steps. ``"source"`` compares the per-rank batch counts, which is what
decides the epoch length there.

**Demo shifts** (no download; see ``docs/data.md``): ``source="mnist", target="mnist_m"``
(MNIST → MNIST-M-style, :mod:`lt_transfer.data.mnist_m`) and ``source="mnist",
target="sklearn_digits"`` (MNIST → scikit-learn's 8×8 digits, upscaled). When both domains
are built from MNIST's training digits (MNIST and MNIST-M), the training split is
shuffled once and halved: the source draws from one half, the target from the other, so
no digit appears in both domains. A domain paired with itself (``"mnist_m" → "mnist_m"``)
gives the train-on-target oracle when trained with ``method="source_only"``.

**Source-free adaptation** (``source_free=True``, for
:class:`~lt_transfer.SourceFreeAdaptationModule`): the training loader yields target batches
only (``[x_t]``); no source training batch is ever built or read. The evaluation loaders stay
as they are (drop the source ones with :meth:`DomainAdaptationDataModule.from_datasets` when
the source data must not be touched at all).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lt_transfer.data.mnist_m import load_mnist_m
from lt_transfer.data.sources import ImageSplit, ImageSplits, load_mnist, load_sklearn_digits
from lt_transfer.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "DomainAdaptationDataModule",
    "DomainName",
    "EpochLength",
    "combined_train_loader",
    "images_to_tensor",
]

DomainName = Literal["mnist", "mnist_m", "sklearn_digits"]
EpochLength = Literal["source", "max_size_cycle", "min_size"]
_MNIST_BASED = ("mnist", "mnist_m")


def images_to_tensor(images: torch.Tensor, image_size: int = 28, normalize: bool = True) -> torch.Tensor:
    """``uint8`` grey ``(N, H, W)`` or colour ``(N, 3, H, W)`` → float ``(N, 3, S, S)``.

    Grey images are repeated to 3 channels so both domains share one network input;
    ``normalize`` applies the ImageNet mean and std (so ImageNet backbones fit too).

    Example:
        >>> images_to_tensor(torch.zeros(2, 28, 28, dtype=torch.uint8), image_size=32).shape
        torch.Size([2, 3, 32, 32])
    """
    x = images.float() / 255.0
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise ValueError(f"images_to_tensor: expected 1 or 3 channels, got shape {tuple(images.shape)}.")
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    if normalize:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x.contiguous()


def _per_rank_batches(dataset_len: int, batch_size: int, world_size: int) -> int:
    per_rank = math.ceil(dataset_len / world_size) if world_size > 1 else dataset_len
    return math.ceil(per_rank / batch_size)


def combined_train_loader(
    source: DataLoader, target: DataLoader, epoch_length: EpochLength = "source", world_size: int = 1
) -> CombinedLoader:
    """Combine a source and a target loader into ``{"source": ..., "target": ...}`` batches.

    See the module docstring for what ``epoch_length`` does when the lengths differ.

    Raises:
        ValueError: when a loader yields no batches (Lightning would otherwise finish
            ``fit`` with zero steps, Lightning #21893), or an unknown ``epoch_length``.

    Example:
        >>> src = DataLoader(TensorDataset(torch.zeros(10, 2), torch.zeros(10)), batch_size=1)
        >>> tgt = DataLoader(TensorDataset(torch.zeros(3, 2)), batch_size=1)
        >>> a, b = iter(combined_train_loader(src, tgt)), iter(combined_train_loader(tgt, src))
        >>> len(a), len(b)  # steps per epoch = source batches
        (10, 3)
    """
    if epoch_length not in ("source", "max_size_cycle", "min_size"):
        raise ValueError(f"epoch_length={epoch_length!r} must be 'source', 'max_size_cycle' or 'min_size'.")
    lengths = {}
    for name, loader in (("source", source), ("target", target)):
        length = len(loader)
        if length == 0:
            raise ValueError(
                f"The {name} training loader yields no batches (dataset of "
                f"{len(loader.dataset)} samples, batch_size={loader.batch_size}, "
                f"drop_last={loader.drop_last}); domain adaptation needs both domains. Check the "
                f"{name} data or lower the batch size."
            )
        lengths[name] = (
            _per_rank_batches(len(loader.dataset), loader.batch_size or 1, world_size)
            if (not loader.drop_last)
            else length
        )
    mode = epoch_length
    if epoch_length == "source":
        mode = "max_size_cycle" if lengths["source"] >= lengths["target"] else "min_size"
    return CombinedLoader({"source": source, "target": target}, mode=mode)


def _load_domain(name: str) -> ImageSplits:
    if name == "mnist":
        return load_mnist()
    if name == "mnist_m":
        return load_mnist_m()
    return load_sklearn_digits()


class DomainAdaptationDataModule(LightningDataModule):
    """Labelled source, unlabelled target, and labelled source/target evaluation splits.

    Args:
        source: source domain (labelled training data).
        target: target domain (unlabelled training images; labelled val and test).
        image_size: side length of the images fed to the network.
        normalize: ImageNet mean/std normalisation of the 3-channel images.
        source_samples: random subset size of the source training split (``None``: all).
        target_samples: random subset size of the target training split (``None``: all).
        val_samples: subset size of the source validation split.
        target_val_samples: subset size of the *labelled* target validation split, the one
            to select hyper-parameters on.
        test_samples: subset size of each test split (``None``: all).
        batch_size: source batch size (and val/test batch size).
        target_batch_size: target batch size (``None``: same as ``batch_size``).
        epoch_length: what one epoch is when the loaders differ in length (module docstring).
        num_workers: DataLoader workers.
        seed: seed of every subset choice.
        source_free: train on target batches only (source-free adaptation, module docstring).

    Raises:
        ValueError: unknown domain names, bad sizes, or an empty target training set.

    Example:
        >>> dm = DomainAdaptationDataModule("mnist", "sklearn_digits", source_samples=100,
        ...                                 target_samples=64, val_samples=50, batch_size=32)
        >>> dm.setup("fit")
        >>> loader = iter(dm.train_dataloader())
        >>> batch, batch_idx, _ = next(loader)
        >>> batch["source"][0].shape, batch["source"][1].shape, batch["target"][0].shape
        (torch.Size([32, 3, 28, 28]), torch.Size([32]), torch.Size([32, 3, 28, 28]))
        >>> len(loader), dm.eval_names  # one pass over the 100 source samples
        (4, ['source', 'target'])
    """

    num_classes = 10
    eval_names = ["source", "target"]

    def __init__(
        self,
        source: DomainName = "mnist",
        target: DomainName = "mnist_m",
        image_size: int = 28,
        normalize: bool = True,
        source_samples: int | None = None,
        target_samples: int | None = None,
        val_samples: int | None = 1000,
        target_val_samples: int | None = 1000,
        test_samples: int | None = None,
        batch_size: int = 64,
        target_batch_size: int | None = None,
        epoch_length: EpochLength = "source",
        num_workers: int = 0,
        seed: int = 0,
        source_free: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for arg, value in (("source", source), ("target", target)):
            if value not in ("mnist", "mnist_m", "sklearn_digits"):
                raise ValueError(
                    f"DomainAdaptationDataModule({arg}={value!r}) must be 'mnist', 'mnist_m' or "
                    "'sklearn_digits'; use DomainAdaptationDataModule.from_datasets for your own data."
                )
        for arg, value in (("batch_size", batch_size), ("target_batch_size", target_batch_size)):
            if value is not None and value < 1:
                raise ValueError(f"DomainAdaptationDataModule({arg}={value}) must be >= 1.")
        if image_size < 8:
            raise ValueError(f"DomainAdaptationDataModule(image_size={image_size}) must be >= 8.")
        if epoch_length not in ("source", "max_size_cycle", "min_size"):
            raise ValueError(
                f"DomainAdaptationDataModule(epoch_length={epoch_length!r}) must be 'source', "
                "'max_size_cycle' or 'min_size'."
            )
        self._custom: dict[str, Any] | None = None
        self.train_source: Dataset | None = None

    @classmethod
    def from_datasets(
        cls,
        source_train: Dataset,
        target_train: Dataset,
        val: Sequence[Dataset] = (),
        test: Sequence[Dataset] = (),
        eval_names: Sequence[str] = ("source", "target"),
        num_classes: int | None = None,
        **kwargs: Any,
    ) -> DomainAdaptationDataModule:
        """Build the data module from your own datasets.

        ``source_train`` yields ``(x, y)``; ``target_train`` yields ``x`` or ``(x, ...)``
        (only ``x`` is used); ``val``/``test`` hold labelled datasets named by
        ``eval_names``. ``kwargs`` are the loader arguments of ``__init__``
        (``batch_size``, ``target_batch_size``, ``epoch_length``, ``num_workers``, ``source_free``).

        Example:
            >>> src = TensorDataset(torch.randn(20, 4), torch.randint(0, 2, (20,)))
            >>> dm = DomainAdaptationDataModule.from_datasets(src, TensorDataset(torch.randn(6, 4)),
            ...                                               batch_size=2)
            >>> dm.setup("fit"); len(iter(dm.train_dataloader()))
            10
        """
        allowed = {"batch_size", "target_batch_size", "epoch_length", "num_workers", "source_free"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise ValueError(
                f"DomainAdaptationDataModule.from_datasets got {sorted(unknown)}; only "
                f"{sorted(allowed)} apply to your own datasets."
            )
        if len(val) > len(eval_names) or len(test) > len(eval_names):
            raise ValueError(
                f"from_datasets: {len(val)} val / {len(test)} test datasets but eval_names="
                f"{list(eval_names)}; give one name per evaluation dataset."
            )
        module = cls(**kwargs)
        module._custom = {
            "source": source_train,
            "target": target_train,
            "val": list(val),
            "test": list(test),
        }
        module.eval_names = list(eval_names)
        if num_classes is not None:
            module.num_classes = num_classes
        return module

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self.train_source is not None:
            return
        if self._custom is not None:
            self.train_source, self.train_target = self._custom["source"], self._custom["target"]
            self.val_sets, self.test_sets = self._custom["val"], self._custom["test"]
        else:
            self._build_digit_shift()
        if len(self.train_target) == 0:
            raise ValueError(
                "DomainAdaptationDataModule: the target training set is empty; domain adaptation "
                "needs unlabelled target images (set target_samples >= 1 or pass a non-empty dataset)."
            )

    def _build_digit_shift(self) -> None:
        hp = self.hparams
        source, target = _load_domain(hp.source), _load_domain(hp.target)
        src_train, tgt_train = source.train, target.train
        if hp.source in _MNIST_BASED and hp.target in _MNIST_BASED and hp.source != hp.target:
            order = torch.randperm(len(src_train), generator=torch.Generator().manual_seed(hp.seed))
            half = len(order) // 2
            first, second = order[:half].sort().values, order[half:].sort().values
            src_train = ImageSplit(src_train.images[first], src_train.labels[first])
            tgt_train = ImageSplit(tgt_train.images[second], tgt_train.labels[second])

        def subset(split: ImageSplit, argument: str, seed: int = hp.seed) -> ImageSplit:
            return split.random_subset(getattr(hp, argument), seed, "DomainAdaptationDataModule", argument)

        src_train = subset(src_train, "source_samples")
        tgt_train = subset(tgt_train, "target_samples", hp.seed + 1)

        def labelled(split: ImageSplit) -> TensorDataset:
            return TensorDataset(images_to_tensor(split.images, hp.image_size, hp.normalize), split.labels)

        self.train_source = labelled(src_train)
        self.train_target = TensorDataset(images_to_tensor(tgt_train.images, hp.image_size, hp.normalize))
        self.val_sets = [
            labelled(subset(source.val, "val_samples")),
            labelled(subset(target.val, "target_val_samples")),
        ]
        self.test_sets = [
            labelled(subset(source.test, "test_samples")),
            labelled(subset(target.test, "test_samples")),
        ]

    # --------------------------------------------------------------- loaders
    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> CombinedLoader | DataLoader:
        """``{"source": (x, y), "target": [x]}`` batches (see the module docstring for lengths), or
        target batches only with ``source_free=True``."""
        hp = self.hparams
        target = self._loader(self.train_target, hp.target_batch_size or hp.batch_size, shuffle=True)
        if hp.source_free:
            return target
        source = self._loader(self.train_source, hp.batch_size, shuffle=True)
        world_size = self.trainer.world_size if self.trainer is not None else 1
        return combined_train_loader(source, target, hp.epoch_length, world_size)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(d, self.hparams.batch_size, shuffle=False) for d in self.val_sets]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(d, self.hparams.batch_size, shuffle=False) for d in self.test_sets]
