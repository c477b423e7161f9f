"""MNIST-M-style digits: MNIST blended with random colour photo patches, built offline.

Ganin & Lempitsky (ICML 2015, Sec. 5) build MNIST-M by blending every MNIST digit with a
random patch of a colour photo from BSDS500: ``out = |patch - digit|`` per channel. The
photos are not available offline, so this module uses the two RGB photos that ship with
scikit-learn (``load_sample_images()``: a Chinese temple and a flower). The construction
is otherwise the paper's: each digit gets one photo and one 28×28 crop position drawn at
random, and is deterministic given the seed.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from lt_transfer.data.sources import ImageSplit, ImageSplits, load_mnist

__all__ = ["blend_with_photos", "load_mnist_m", "sample_photos"]


@lru_cache(maxsize=1)
def sample_photos() -> torch.Tensor:
    """scikit-learn's two sample photos as ``uint8 (2, 3, 427, 640)``.

    Example:
        >>> tuple(sample_photos().shape)
        (2, 3, 427, 640)
    """
    from sklearn.datasets import load_sample_images

    images = np.stack(load_sample_images().images)  # (2, H, W, 3)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def blend_with_photos(
    digits: torch.Tensor, seed: int = 0, photos: torch.Tensor | None = None
) -> torch.Tensor:
    """Blend grey ``uint8 (N, H, W)`` digits with random colour photo patches.

    For digit ``i`` a photo and a crop position are drawn from a generator seeded with
    ``seed``; the output is ``|patch - digit|`` per channel, ``uint8 (N, 3, H, W)``.

    Args:
        digits: grey digits, white strokes on black (as MNIST).
        seed: seed of the photo and crop choice.
        photos: ``uint8 (P, 3, H_p, W_p)`` photos; default :func:`sample_photos`.

    Example:
        >>> digits = torch.zeros(4, 28, 28, dtype=torch.uint8)
        >>> a, b = blend_with_photos(digits, seed=1), blend_with_photos(digits, seed=1)
        >>> tuple(a.shape), bool(torch.equal(a, b))
        ((4, 3, 28, 28), True)
    """
    if digits.dim() != 3 or digits.dtype != torch.uint8:
        raise ValueError(
            f"blend_with_photos(digits=...) expects uint8 (N, H, W) digits, got {digits.dtype} "
            f"{tuple(digits.shape)}."
        )
    photos = sample_photos() if photos is None else photos
    n, h, w = digits.shape
    num_photos, _, photo_h, photo_w = photos.shape
    if photo_h < h or photo_w < w:
        raise ValueError(
            f"blend_with_photos: photos {photo_h}x{photo_w} are smaller than the digits {h}x{w}."
        )
    generator = torch.Generator().manual_seed(seed)
    which = torch.randint(0, num_photos, (n,), generator=generator)
    top = torch.randint(0, photo_h - h + 1, (n,), generator=generator)
    left = torch.randint(0, photo_w - w + 1, (n,), generator=generator)
    rows = (top[:, None] + torch.arange(h)[None, :])[:, :, None]  # (N, h, 1)
    cols = (left[:, None] + torch.arange(w)[None, :])[:, None, :]  # (N, 1, w)
    out = torch.empty(n, 3, h, w, dtype=torch.uint8)
    chunk = 8192
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        # (3, P, H, W)[:, which, rows, cols] -> (3, n_chunk, h, w)
        patches = photos.permute(1, 0, 2, 3)[:, which[sl, None, None], rows[sl], cols[sl]]
        patches = patches.permute(1, 0, 2, 3).to(torch.int16)
        out[sl] = (patches - digits[sl, None].to(torch.int16)).abs().to(torch.uint8)
    return out


@lru_cache(maxsize=2)
def load_mnist_m(seed: int = 0) -> ImageSplits:
    """MNIST-M-style splits built from MNIST's train / val / test (50k / 10k / 10k).

    Images are ``uint8 (N, 3, 28, 28)``; labels are MNIST's. Each split uses its own
    seed offset, so the three splits draw independent patches. Building all 70k images
    takes about a second and is cached.

    Example:
        >>> splits = load_mnist_m()
        >>> tuple(splits.test.images.shape), splits.test.images.dtype
        ((10000, 3, 28, 28), torch.uint8)
    """
    mnist = load_mnist()
    parts = []
    for offset, split in enumerate((mnist.train, mnist.val, mnist.test)):
        parts.append(ImageSplit(blend_with_photos(split.images, seed=seed * 3 + offset), split.labels))
    return ImageSplits(*parts)
