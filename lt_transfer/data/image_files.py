"""Finding labelled image files: folder layouts, CSV manifests, stratified splits, few-label subsets.

Layouts (:func:`find_labelled_images`):

* ``root/train/<class>/*.jpg`` with optional ``root/val/`` (or ``valid/``, ``validation/``)
  and ``root/test/`` folders of the same classes;
* ``root/<class>/*.jpg``: one folder, split by :func:`stratified_split`;
* a CSV manifest with a header holding ``path`` and ``label`` columns and an optional
  ``split`` column (``train``/``val``/``test``); relative paths are relative to the
  manifest's folder.

Images are found recursively below each class folder by their suffix
(:data:`IMAGE_SUFFIXES`, any case); hidden files and other files are ignored. Class names are
sorted (numerically when they are all integers, so that folder ``"2"`` is class 2).
:func:`write_class_folders` writes the ``root/<class>/`` layout, for examples and tests.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "SPLIT_FOLDERS",
    "LabelledImages",
    "find_labelled_images",
    "list_images",
    "per_class_subset",
    "sort_class_names",
    "stratified_split",
    "write_class_folders",
]

#: File suffixes read as images (compared in lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Folder names of each split in the ``root/train/...`` layout.
SPLIT_FOLDERS: Mapping[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "valid", "validation"),
    "test": ("test",),
}


@dataclass(frozen=True)
class LabelledImages:
    """Image files and their class names (strings; indices are assigned later).

    Example:
        >>> part = LabelledImages((Path("a.png"), Path("b.png")), ("cat", "dog"))
        >>> len(part), part.select([1]).labels
        (2, ('dog',))
    """

    paths: tuple[Path, ...]
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError(f"LabelledImages: {len(self.paths)} paths but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, indices: Sequence[int]) -> LabelledImages:
        """The files at ``indices``, in that order."""
        return LabelledImages(tuple(self.paths[i] for i in indices), tuple(self.labels[i] for i in indices))


def sort_class_names(names: set[str] | Sequence[str]) -> list[str]:
    """Sorted class names; numerically when every name is an integer.

    Example:
        >>> sort_class_names({"10", "2", "1"}), sort_class_names({"dog", "cat"})
        (['1', '2', '10'], ['cat', 'dog'])
    """
    unique = set(names)
    if unique and all(name.lstrip("-").isdigit() for name in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files below ``folder`` (recursively, sorted, hidden files and folders skipped).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("b.PNG", "a.jpg", "notes.txt", ".hidden.png"):
        ...     _ = (folder / name).write_bytes(b"")
        >>> [p.name for p in list_images(folder)]
        ['a.jpg', 'b.PNG']
    """
    found = []
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        found += [
            Path(directory, name)
            for name in files
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)
        ]
    return sorted(found)


def write_class_folders(
    root: str | os.PathLike[str],
    classes: Sequence[str] = ("cat", "dog"),
    per_class: int = 5,
    size: tuple[int, int] = (4, 4),
    suffix: str = ".png",
) -> Path:
    """Write ``per_class`` blank RGB images of ``size`` (width, height) in ``root/<class>/``; return ``root``.

    Example:
        >>> import tempfile
        >>> root = write_class_folders(tempfile.mkdtemp(), per_class=2, suffix=".jpg")
        >>> [f"{p.parent.name}/{p.name}" for p in list_images(root)]
        ['cat/0.jpg', 'cat/1.jpg', 'dog/0.jpg', 'dog/1.jpg']
    """
    from PIL import Image

    root = Path(root)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", size).save(root / name / f"{i}{suffix}")
    return root


def _class_folders(folder: Path, what: str) -> LabelledImages:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: {folder} is not a folder.")
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = "it holds images directly" if list_images(folder) else "it holds no images"
        raise ValueError(
            f"{what}: {folder} has no class sub-folders ({loose}). Sort the images into one sub-folder "
            "per class (<folder>/<class>/<image>), or list them in a CSV manifest (manifest=)."
        )
    paths: list[Path] = []
    labels: list[str] = []
    for class_folder in classes:
        images = list_images(class_folder)
        if not images:
            raise ValueError(
                f"{what}: the class folder {class_folder} has no images (suffixes {list(IMAGE_SUFFIXES)}). "
                "Add images or remove the folder."
            )
        paths += images
        labels += [class_folder.name] * len(images)
    return LabelledImages(tuple(paths), tuple(labels))


def _read_manifest(manifest: Path, what: str) -> dict[str, LabelledImages]:
    if not manifest.is_file():
        raise FileNotFoundError(f"{what}: the manifest {manifest} does not exist.")
    with open(manifest, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "path" not in columns or "label" not in columns:
            raise ValueError(
                f"{what}: the manifest {manifest} needs a header with 'path' and 'label' columns "
                f"(and optionally 'split'); it has {columns}."
            )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    parts: dict[str, tuple[list[Path], list[str]]] = {}
    for line, row in enumerate(rows, start=2):
        split = row.get("split") or "train"
        if split not in SPLIT_FOLDERS:
            raise ValueError(
                f"{what}: {manifest} line {line}: split {split!r} must be 'train', 'val' or 'test'."
            )
        if not row["path"] or not row["label"]:
            raise ValueError(f"{what}: {manifest} line {line} has an empty path or label.")
        path = Path(row["path"]).expanduser()
        path = path if path.is_absolute() else manifest.parent / path
        if not path.is_file():
            raise FileNotFoundError(f"{what}: {manifest} line {line}: the image {path} does not exist.")
        paths, labels = parts.setdefault(split, ([], []))
        paths.append(path)
        labels.append(row["label"])
    if "train" not in parts:
        raise ValueError(f"{what}: the manifest {manifest} lists no training images.")
    return {split: LabelledImages(tuple(p), tuple(labels)) for split, (p, labels) in parts.items()}


def _split_folder(root: Path, split: str) -> Path | None:
    return next((root / name for name in SPLIT_FOLDERS[split] if (root / name).is_dir()), None)


def stratified_split(labels: Sequence[str], fractions: Sequence[float], seed: int = 0) -> list[list[int]]:
    """Split sample indices per class: part ``k`` gets ``fractions[k]`` of each class, the rest first.

    Each class's indices are shuffled with ``seed``; part ``k`` takes ``round(n * fractions[k])``
    of its ``n`` samples, but every class keeps at least one sample in the first part (train).

    Returns:
        ``len(fractions) + 1`` lists of indices (each sorted): the rest, then one per fraction.

    Raises:
        ValueError: fractions that are negative or sum to 1 or more.

    Example:
        >>> train, val = stratified_split(["a"] * 10 + ["b"] * 5, [0.2], seed=0)
        >>> len(train), len(val)
        (12, 3)
    """
    if any(f < 0 for f in fractions) or sum(fractions) >= 1:
        raise ValueError(f"split fractions {list(fractions)} must be >= 0 and sum to less than 1.")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for name in sort_class_names(set(labels)):
        indices = [i for i, label in enumerate(labels) if label == name]
        order = [indices[j] for j in rng.permutation(len(indices))]
        counts = [math.floor(len(order) * f + 0.5) for f in fractions]
        while sum(counts) > len(order) - 1 and any(counts):
            largest = max(range(len(counts)), key=lambda k: counts[k])
            counts[largest] -= 1
        start = len(order) - sum(counts)
        parts[0] += order[:start]
        for k, count in enumerate(counts):
            parts[k + 1] += order[start : start + count]
            start += count
    return [sorted(part) for part in parts]


def per_class_subset(
    labels: Sequence[str], per_class: int, seed: int = 0, what: str = "labels_per_class"
) -> list[int]:
    """Indices of ``per_class`` random samples of every class (seeded, sorted).

    Raises:
        ValueError: ``per_class < 1`` or a class with fewer samples (named).

    Example:
        >>> per_class_subset(["a", "b", "a", "b", "a"], 2, seed=0)
        [0, 1, 3, 4]
    """
    if per_class < 1:
        raise ValueError(f"{what}={per_class} must be >= 1 (or None for all).")
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for name in sort_class_names(set(labels)):
        indices = [i for i, label in enumerate(labels) if label == name]
        if len(indices) < per_class:
            raise ValueError(
                f"{what}={per_class}, but class {name!r} has only {len(indices)} training images; "
                "lower it or add images."
            )
        keep += [indices[j] for j in rng.permutation(len(indices))[:per_class]]
    return sorted(keep)


def find_labelled_images(
    root: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
    what: str = "find_labelled_images",
) -> dict[str, LabelledImages]:
    """Find the labelled images of each split (``"train"`` and, when there are any, ``"val"``/``"test"``).

    Args:
        root: a folder in one of the layouts of the module docstring (ignored with a manifest).
        manifest: a CSV manifest (``path,label[,split]``); takes precedence over ``root``.
        val_fraction: carve a stratified validation split of this fraction out of the training
            images when the data has no validation split of its own (with one, it warns and keeps it).
        test_fraction: the same for the test split.
        seed: seed of the carving.
        what: the caller, for messages.

    Raises:
        ValueError: no images, an empty class folder, a fraction given for a split that
            exists, a class in val/test that is not in train.
        FileNotFoundError: a missing folder, manifest or listed file.

    Example:
        >>> import tempfile
        >>> root = write_class_folders(tempfile.mkdtemp(), ("cat", "dog"), per_class=5)
        >>> splits = find_labelled_images(root, val_fraction=0.2)
        >>> {split: len(files) for split, files in splits.items()}
        {'train': 8, 'val': 2}
    """
    if manifest is not None:
        splits = _read_manifest(Path(manifest).expanduser(), what)
    elif root is not None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{what}: root={str(root)!r} is not a folder.")
        train_folder = _split_folder(root, "train")
        if train_folder is None:
            splits = {"train": _class_folders(root, f"{what} (root {root})")}
        else:
            splits = {"train": _class_folders(train_folder, what)}
            for split in ("val", "test"):
                folder = _split_folder(root, split)
                if folder is not None:
                    splits[split] = _class_folders(folder, what)
    else:
        raise ValueError(f"{what}: pass root=<image folder> or manifest=<CSV file>.")
    fractions = {"val": val_fraction, "test": test_fraction}
    carve = {}
    for split, fraction in fractions.items():
        if fraction is not None and split in splits:
            warnings.warn(
                f"{what}: the data has its own {split} split ({len(splits[split])} images), so "
                f"{split}_fraction={fraction} is not used; pass {split}_fraction=None to silence this.",
                UserWarning,
                stacklevel=3,
            )
        elif fraction is not None:
            carve[split] = fraction
    if carve:
        train = splits["train"]
        parts = stratified_split(train.labels, list(carve.values()), seed)
        splits["train"] = train.select(parts[0])
        for split, indices in zip(carve, parts[1:], strict=True):
            splits[split] = train.select(indices)
    known = set(splits["train"].labels)
    for split in ("val", "test"):
        unknown = sorted(set(splits.get(split, LabelledImages((), ())).labels) - known)
        if unknown:
            raise ValueError(
                f"{what}: the {split} split has classes {unknown} that the training split does not have; "
                "a model cannot learn them. Add training images of these classes or remove them."
            )
    return {
        split: splits[split] for split in ("train", "val", "test") if split in splits and len(splits[split])
    }
