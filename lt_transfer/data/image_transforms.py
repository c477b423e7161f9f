"""Photo transforms built from a backbone's :class:`~lt_transfer.backbones.Preprocessing`.

* :func:`eval_transform`: resize the shorter side to ``resize_size``, centre-crop
  ``image_size``, scale to [0, 1], normalise (the weights' own evaluation transform);
* :func:`train_transform`: the same, or one of the augmentation presets of
  :data:`PhotoAugment`: ``"flip_crop"`` (``RandomResizedCrop`` + horizontal flip),
  ``"trivial"`` (``flip_crop`` + ``TrivialAugmentWide``), ``"randaugment"``
  (``flip_crop`` + ``RandAugment``).

Both take a PIL image already in the backbone's mode (``"RGB"`` or ``"L"``, see
:func:`lt_transfer.data.image_dataset.load_image`) and return a plain ``float32`` tensor
``(channels, image_size, image_size)``.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torchvision.transforms import InterpolationMode, v2

from lt_transfer.backbones.preprocessing import Preprocessing

__all__ = ["PhotoAugment", "eval_transform", "train_transform"]

#: Training augmentation presets of :func:`train_transform`.
PhotoAugment = Literal["none", "flip_crop", "trivial", "randaugment"]


def _to_normalized_tensor(preprocessing: Preprocessing) -> list[torch.nn.Module]:
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(preprocessing.mean), list(preprocessing.std)),
        v2.ToPureTensor(),
    ]


def eval_transform(preprocessing: Preprocessing) -> v2.Compose:
    """Resize, centre crop, scale and normalise: the evaluation transform of ``preprocessing``.

    Example:
        >>> from PIL import Image
        >>> transform = eval_transform(Preprocessing.imagenet().resized(32))
        >>> transform(Image.new("RGB", (50, 40))).shape
        torch.Size([3, 32, 32])
    """
    interpolation = InterpolationMode(preprocessing.interpolation)
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(preprocessing.resize_size, interpolation=interpolation, antialias=True),
            v2.CenterCrop(preprocessing.image_size),
            *_to_normalized_tensor(preprocessing),
        ]
    )


def train_transform(preprocessing: Preprocessing, augment: PhotoAugment = "none") -> v2.Compose:
    """The training transform: :func:`eval_transform` for ``"none"``, else an augmentation preset.

    Args:
        preprocessing: sizes, interpolation and normalisation.
        augment: ``"none"``, ``"flip_crop"``, ``"trivial"`` or ``"randaugment"`` (see the
            module docstring); the random ops work on the ``uint8`` image.

    Raises:
        ValueError: an unknown preset.

    Example:
        >>> from PIL import Image
        >>> transform = train_transform(Preprocessing.imagenet().resized(32), "trivial")
        >>> [type(t).__name__ for t in transform.transforms][1:4]
        ['RandomResizedCrop', 'RandomHorizontalFlip', 'TrivialAugmentWide']
        >>> transform(Image.new("RGB", (50, 40))).dtype
        torch.float32
    """
    if augment not in get_args(PhotoAugment):
        raise ValueError(f"augment={augment!r} must be one of {list(get_args(PhotoAugment))}.")
    if augment == "none":
        return eval_transform(preprocessing)
    interpolation = InterpolationMode(preprocessing.interpolation)
    steps: list[torch.nn.Module] = [
        v2.ToImage(),
        v2.RandomResizedCrop(preprocessing.image_size, interpolation=interpolation, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if augment == "trivial":
        steps.append(v2.TrivialAugmentWide(interpolation=interpolation))
    elif augment == "randaugment":
        steps.append(v2.RandAugment(interpolation=interpolation))
    return v2.Compose(steps + _to_normalized_tensor(preprocessing))
