"""Loading image files: :func:`load_image` (any mode to RGB or grey) and :class:`ImageFileDataset`.

Every image is decoded in full when loaded, so an unreadable or truncated file raises
:class:`BadImageError` naming the file (never a silently half-grey image).
:func:`find_bad_images` decodes a list of files once, in threads, for data modules that skip
bad files instead.

Modes are converted to what the backbone expects: grey, palette, CMYK and 16-bit images to
``"RGB"`` (or ``"L"`` for 1-channel backbones); images with transparency are composited over
white first; 16-bit images are scaled to 8 bits.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["BadImageError", "ImageFileDataset", "find_bad_images", "load_image"]

_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class BadImageError(ValueError):
    """An image file that cannot be read or decoded in full (named in the message).

    Example:
        >>> issubclass(BadImageError, ValueError)
        True
    """


def _to_eight_bit(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or 255 < values.max() <= 65535:
        values = values / 257.0
    elif values.max() > 65535:
        values = (values - values.min()) / max(values.max() - values.min(), 1e-12) * 255.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def _convert(image: Image.Image, channels: int) -> Image.Image:
    if image.mode in _HIGH_BIT_MODES:
        image = _to_eight_bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _ALPHA_MODES:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    target = "RGB" if channels == 3 else "L"
    return image if image.mode == target else image.convert(target)


def load_image(path: str | os.PathLike[str], channels: int = 3) -> Image.Image:
    """Decode an image file in full and convert it to ``"RGB"`` (``channels=3``) or ``"L"`` (1).

    Args:
        path: the file.
        channels: 3 or 1.

    Raises:
        BadImageError: the file is missing, not an image, truncated or corrupt.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "a.png"
        >>> Image.new("RGBA", (4, 3), (0, 0, 0, 0)).save(path)
        >>> image = load_image(path)
        >>> image.mode, image.size, image.getpixel((0, 0))
        ('RGB', (4, 3), (255, 255, 255))
    """
    try:
        with Image.open(path) as image:
            image.load()
            return _convert(image, channels)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise BadImageError(
            f"cannot read the image file {os.fspath(path)!r} ({type(error).__name__}: {error}). Fix or "
            "remove the file, or pass on_bad_image='skip' to the data module."
        ) from error


def _problem(path: Path) -> str | None:
    try:
        load_image(path)
    except BadImageError as error:
        return str(error.__cause__)
    return None


def find_bad_images(paths: Sequence[Path], threads: int | None = None) -> list[tuple[Path, str]]:
    """Decode every file once (in threads) and return the ``(path, problem)`` of those that fail.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> Image.new("RGB", (4, 4)).save(folder / "good.png")
        >>> _ = (folder / "bad.jpg").write_bytes(b"not an image")
        >>> [path.name for path, _ in find_bad_images([folder / "good.png", folder / "bad.jpg"])]
        ['bad.jpg']
    """
    if not paths:
        return []
    workers = threads or min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 4)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = list(pool.map(_problem, paths))
    return [(path, problem) for path, problem in zip(paths, problems, strict=True) if problem is not None]


class ImageFileDataset(Dataset):
    """Image files, decoded and transformed on access: ``(image, label)`` or a dict with the path.

    Args:
        paths: the image files.
        labels: a class index per file, or ``None`` (unlabelled).
        transform: PIL image → tensor (e.g. :func:`lt_transfer.data.image_transforms.eval_transform`).
        channels: 3 (RGB) or 1 (grey): the mode images are converted to first.
        with_paths: return ``{"image": x, "path": str, "label": y}`` dicts (``"label"`` only when
            labelled; a prediction writer reads the path) instead of ``(x, y)`` tuples.

    Unlabelled data sets always return dicts (there is no label for a tuple).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> Image.new("L", (6, 5)).save(folder / "grey.png")
        >>> from torchvision.transforms import v2
        >>> to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        >>> x, y = ImageFileDataset([folder / "grey.png"], [2], to_tensor)[0]
        >>> tuple(x.shape), int(y)
        ((3, 5, 6), 2)
        >>> ImageFileDataset([folder / "grey.png"], None, to_tensor)[0]["path"].endswith("grey.png")
        True
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        labels: Sequence[int] | None,
        transform: Callable[[Image.Image], torch.Tensor],
        channels: int = 3,
        with_paths: bool = False,
    ) -> None:
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"ImageFileDataset: {len(paths)} paths but {len(labels)} labels.")
        if channels not in (1, 3):
            raise ValueError(f"ImageFileDataset(channels={channels}) must be 1 or 3.")
        self.paths = [Path(p) for p in paths]
        self.labels = None if labels is None else [int(label) for label in labels]
        self.transform = transform
        self.channels = channels
        self.with_paths = with_paths or labels is None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        path = self.paths[index]
        image = self.transform(load_image(path, self.channels))
        label = None if self.labels is None else torch.tensor(self.labels[index], dtype=torch.long)
        if not self.with_paths:
            return image, label
        sample: dict[str, Any] = {"image": image, "path": str(path)}
        if label is not None:
            sample["label"] = label
        return sample
