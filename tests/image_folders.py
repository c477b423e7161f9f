"""Small image folders like a user's own photos, for the tests that need one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write_photos(folder: Path, classes: tuple[int, ...] = (0, 1, 7), per_class: int = 10) -> Path:
    """Digits as PNG/JPEG files in class folders (one grey, one RGBA), like a user's photos."""
    digits = load_digits()
    for label in classes:
        images = digits.images[digits.target == label][:per_class]
        (folder / f"digit_{label}").mkdir(parents=True)
        for i, image in enumerate(images):
            pixels = (image / 16 * 255).astype(np.uint8).repeat(4, 0).repeat(4, 1)
            picture = Image.fromarray(pixels).convert("L" if i == 0 else "RGBA" if i == 1 else "RGB")
            suffix = ".jpg" if i % 2 and picture.mode == "RGB" else ".png"
            picture.save(folder / f"digit_{label}" / f"{i}{suffix}")
    return folder
