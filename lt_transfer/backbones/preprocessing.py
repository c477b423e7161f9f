"""Preprocessing: the input a backbone's weights expect (size, crop, mean/std, interpolation).

A :class:`Preprocessing` is plain data. Builders set it on every image
:class:`~lt_transfer.backbones.base.Backbone` (``backbone.preprocessing``) and
:func:`~lt_transfer.backbones.build.resolve_preprocessing` gives it for a spec string without
building the model; :class:`~lt_transfer.data.ImageFolderDataModule` turns it into transforms.
Where it comes from:

* torchvision weights names (``"DEFAULT"``, ``"IMAGENET1K_V1"``): the weights' own
  ``transforms()`` (resize, centre crop, mean/std, interpolation);
* timm models: timm's data config (``timm.data.resolve_data_config``) of the model and tag;
* anything else (torchvision without weights or with a weights file, plain modules): the
  ImageNet defaults (:meth:`Preprocessing.imagenet`: resize 256, crop 224, bilinear,
  ImageNet mean/std).

Weight files shipped in packages whose training used another normalisation than their
architecture's default are listed in :data:`SHIPPED_WEIGHTS_NORMALIZATION` (the
EfficientNet-Lite files, trained on inputs scaled to [-1, 1]) and applied by
:func:`with_weights_normalization`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

from lt_transfer.resources import (
    EFFICIENTNET_LITE0_IMAGENET,
    EFFICIENTNET_LITE1_IMAGENET,
    EFFICIENTNET_LITE2_IMAGENET,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHIPPED_WEIGHTS_NORMALIZATION",
    "Interpolation",
    "Preprocessing",
    "with_weights_normalization",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Resampling used when resizing images.
Interpolation = Literal["bilinear", "bicubic", "nearest"]

#: ``(mean, std)`` of shipped weight files (by file name) that differ from their
#: architecture's default: the EfficientNet-Lite files (TensorFlow's Lite training scales
#: pixels to [-1, 1]).
SHIPPED_WEIGHTS_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    PurePosixPath(uri).name: ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    for uri in (EFFICIENTNET_LITE0_IMAGENET, EFFICIENTNET_LITE1_IMAGENET, EFFICIENTNET_LITE2_IMAGENET)
}


@dataclass(frozen=True)
class Preprocessing:
    """How images are prepared for a backbone: resize, centre crop, normalise.

    Evaluation images are resized (shorter side to ``resize_size``, ``interpolation``),
    centre-cropped to ``image_size`` × ``image_size``, scaled to [0, 1] and normalised with
    ``mean``/``std``. Training augmentation crops to ``image_size`` as well.

    Attributes:
        image_size: side of the square input.
        resize_size: shorter side after resizing, before the centre crop (``>= image_size``).
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by.
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
        channels: input channels (3 for RGB, 1 for grey).

    Raises:
        ValueError: sizes that are not positive, ``resize_size < image_size``, ``mean``/``std``
            lengths that differ from ``channels``, a non-positive ``std``, an unknown
            interpolation.

    Example:
        >>> p = Preprocessing.imagenet()
        >>> p.image_size, p.resize_size, p.crop_pct, p.interpolation
        (224, 256, 0.875, 'bilinear')
        >>> p.resized(160).resize_size
        182
    """

    image_size: int = 224
    resize_size: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: Interpolation = "bilinear"
    channels: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.image_size < 1 or self.resize_size < self.image_size:
            raise ValueError(
                f"Preprocessing(image_size={self.image_size}, resize_size={self.resize_size}): "
                "image_size must be >= 1 and resize_size >= image_size."
            )
        if self.channels not in (1, 3):
            raise ValueError(f"Preprocessing(channels={self.channels}) must be 1 or 3.")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"Preprocessing(mean={self.mean}, std={self.std}) needs one value per channel "
                f"(channels={self.channels})."
            )
        if any(v <= 0 for v in self.std):
            raise ValueError(f"Preprocessing(std={self.std}) must be positive.")
        if self.interpolation not in get_args(Interpolation):
            raise ValueError(
                f"Preprocessing(interpolation={self.interpolation!r}) must be one of "
                f"{list(get_args(Interpolation))}."
            )

    @property
    def crop_pct(self) -> float:
        """``image_size / resize_size``: the fraction of the resized image the crop keeps."""
        return self.image_size / self.resize_size

    def resized(self, image_size: int) -> Preprocessing:
        """The same preprocessing for another input size, keeping :attr:`crop_pct`.

        Example:
            >>> Preprocessing.imagenet().resized(32).resize_size
            36
        """
        return replace(self, image_size=image_size, resize_size=math.floor(image_size / self.crop_pct))

    def with_channels(self, channels: int) -> Preprocessing:
        """The same preprocessing for 1 or 3 channels (grey mean/std: the channel averages).

        Example:
            >>> Preprocessing.imagenet().with_channels(1).mean
            (0.449,)
        """
        if channels == self.channels:
            return self
        if channels == 1:
            mean, std = (
                (round(sum(self.mean) / len(self.mean), 6),),
                (round(sum(self.std) / len(self.std), 6),),
            )
        else:
            mean, std = self.mean * channels, self.std * channels
        return replace(self, mean=mean, std=std, channels=channels)

    @classmethod
    def imagenet(cls) -> Preprocessing:
        """The ImageNet defaults: resize 256, centre crop 224, bilinear, ImageNet mean/std."""
        return cls()

    @classmethod
    def from_timm(cls, config: Mapping[str, Any]) -> Preprocessing:
        """From a timm data config (``timm.data.resolve_data_config(...)``).

        ``input_size`` is ``(channels, height, width)``; the side is the height. The resize
        side is ``floor(side / crop_pct)``, as timm's own eval transform computes it.

        Example:
            >>> Preprocessing.from_timm({"input_size": (3, 224, 224), "interpolation": "bicubic",
            ...                          "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 0.9})
            Preprocessing(image_size=224, resize_size=248, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), \
interpolation='bicubic', channels=3)
        """
        channels, side = int(config["input_size"][0]), int(config["input_size"][1])
        crop_pct = float(config.get("crop_pct") or 0.875)
        interpolation = str(config.get("interpolation", "bicubic"))
        return cls(
            image_size=side,
            resize_size=max(side, math.floor(side / crop_pct)),
            mean=tuple(config.get("mean", IMAGENET_MEAN)),
            std=tuple(config.get("std", IMAGENET_STD)),
            interpolation=interpolation if interpolation in get_args(Interpolation) else "bicubic",
            channels=channels,
        )

    @classmethod
    def from_torchvision(cls, transforms: Any) -> Preprocessing:
        """From a torchvision weights' ``transforms()`` (an ``ImageClassification`` preset).

        Example:
            >>> from torchvision.models import ResNet50_Weights
            >>> Preprocessing.from_torchvision(ResNet50_Weights.IMAGENET1K_V2.transforms())
            Preprocessing(image_size=224, resize_size=232, mean=(0.485, 0.456, 0.406), \
std=(0.229, 0.224, 0.225), interpolation='bilinear', channels=3)
        """
        interpolation = getattr(transforms.interpolation, "value", str(transforms.interpolation))
        return cls(
            image_size=_first(transforms.crop_size),
            resize_size=_first(transforms.resize_size),
            mean=tuple(transforms.mean),
            std=tuple(transforms.std),
            interpolation=interpolation if interpolation in get_args(Interpolation) else "bilinear",
        )


def _first(size: int | Sequence[int]) -> int:
    return int(size if isinstance(size, int) else size[0])


def with_weights_normalization(
    preprocessing: Preprocessing, file: str | os.PathLike[str] | None
) -> Preprocessing:
    """Apply the normalisation a shipped weights ``file`` was trained with (if listed).

    Args:
        preprocessing: the architecture's preprocessing.
        file: the resolved weights file, or ``None``.

    Example:
        >>> from lt_transfer.resources import resolve_package_uri
        >>> path = resolve_package_uri(EFFICIENTNET_LITE0_IMAGENET)
        >>> with_weights_normalization(Preprocessing.imagenet(), path).mean
        (0.5, 0.5, 0.5)
        >>> with_weights_normalization(Preprocessing.imagenet(), None).mean
        (0.485, 0.456, 0.406)
    """
    if file is None:
        return preprocessing
    normalization = SHIPPED_WEIGHTS_NORMALIZATION.get(Path(file).name)
    if normalization is None:
        return preprocessing
    mean, std = normalization
    return replace(preprocessing, mean=mean, std=std, channels=len(mean))
