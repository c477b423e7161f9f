"""Turn small grey-scale images into what an ImageNet backbone expects."""

from __future__ import annotations

from typing import Literal

import torch
from torchvision.transforms import v2

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "AugmentPreset", "RepeatChannels", "image_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

AugmentPreset = Literal["none", "light", "trivialaugment", "randaugment", "autoaugment"]


class RepeatChannels(torch.nn.Module):
    """Repeat a 1-channel image to ``channels`` channels (picklable, unlike a lambda).

    Example:
        >>> RepeatChannels(3)(torch.zeros(1, 4, 4)).shape
        torch.Size([3, 4, 4])
    """

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.expand(self.channels, *image.shape[1:])


def image_transform(
    image_size: int = 32,
    channels: int = 3,
    normalize: bool = True,
    augment: AugmentPreset = "none",
    owner: str = "image_transform",
) -> v2.Compose:
    """Per-sample transform: ``uint8 (1, H, W)`` → float ``(channels, S, S)``.

    Args:
        image_size: output side length ``S`` (ImageNet backbones work from about 32 px).
        channels: 1 keeps grey scale, 3 repeats it (for ImageNet backbones).
        normalize: apply the ImageNet mean/std (only with ``channels=3``).
        augment: ``"none"``; ``"light"`` (small random affine); or a torchvision preset
            (``"trivialaugment"``, ``"randaugment"``, ``"autoaugment"``), applied to the
            ``uint8`` image before conversion.
        owner: the name bad arguments are reported under (a DataModule passes its own, so the
            error names the class the user called).

    Example:
        >>> import torch
        >>> transform = image_transform(image_size=40)
        >>> transform(torch.zeros(1, 28, 28, dtype=torch.uint8)).shape
        torch.Size([3, 40, 40])
    """
    if image_size < 8:
        raise ValueError(f"{owner}(image_size={image_size}) must be >= 8.")
    if channels not in (1, 3):
        raise ValueError(f"{owner}(channels={channels}) must be 1 or 3.")
    if normalize and channels != 3:
        raise ValueError(
            f"{owner}(channels={channels}, normalize=True): the ImageNet normalisation needs 3 channels; "
            f"pass normalize=False for {channels}-channel images (e.g. for LeNetBackbone), or channels=3."
        )
    steps: list[torch.nn.Module] = []
    if augment == "light":
        steps.append(v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)))
    elif augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    elif augment == "randaugment":
        steps.append(v2.RandAugment())
    elif augment == "autoaugment":
        steps.append(v2.AutoAugment())
    elif augment != "none":
        raise ValueError(
            f"{owner}(augment={augment!r}) must be one of "
            "'none', 'light', 'trivialaugment', 'randaugment', 'autoaugment'."
        )
    steps += [v2.ToDtype(torch.float32, scale=True)]
    steps.append(v2.Resize((image_size, image_size), antialias=True))
    if channels == 3:
        steps.append(RepeatChannels(3))
    if normalize:
        steps.append(v2.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return v2.Compose(steps)
