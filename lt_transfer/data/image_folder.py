"""ImageFolderDataModule: your own images (class folders or a CSV manifest), ready for a backbone."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, WeightedRandomSampler

from lt_transfer.backbones.build import resolve_preprocessing
from lt_transfer.backbones.preprocessing import Preprocessing
from lt_transfer.data._split_loaders import SplitLoaders
from lt_transfer.data.image_dataset import ImageFileDataset, find_bad_images
from lt_transfer.data.image_files import (
    LabelledImages,
    find_labelled_images,
    list_images,
    per_class_subset,
    sort_class_names,
)
from lt_transfer.data.image_transforms import PhotoAugment, eval_transform, train_transform

__all__ = ["ImageFolderDataModule"]

BadImageAction = Literal["error", "skip"]
_LISTED = 10  # bad files named in the warning


def _default_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(4, cpus)


class ImageFolderDataModule(SplitLoaders, LightningDataModule):
    """Labelled images from folders or a CSV manifest, preprocessed as the backbone's weights expect.

    Where the images are (see :mod:`lt_transfer.data.image_files`):

    * ``root/train/<class>/...`` with optional ``root/val/`` and ``root/test/``;
    * ``root/<class>/...`` plus ``val_fraction``/``test_fraction`` (seeded, stratified);
    * ``manifest="labels.csv"`` with ``path,label[,split]`` columns.

    Class names are the sorted class folders or labels (numerically when all are integers);
    :attr:`class_names` and :attr:`num_classes` are known right after construction (the CLI
    links ``data.num_classes`` to the model) and the
    :class:`~lt_transfer.callbacks.PredictionWriter` names predictions with them.

    Preprocessing: resize/crop/normalise from ``backbone`` (a spec string such as
    ``"timm/efficientnet_lite0"`` with its ``weights``: torchvision's ``transforms()``, timm's
    data config) or a :class:`~lt_transfer.backbones.Preprocessing` (``backbone.preprocessing``
    of a built backbone), else the ImageNet defaults (224 px); ``image_size``, ``mean``,
    ``std`` and ``channels`` override it. Every image is converted to ``channels`` (grey and
    RGBA to RGB, transparency over white). Augmentation presets for training (``augment``):
    ``"none"``, ``"flip_crop"`` (RandomResizedCrop + flip), ``"trivial"`` (+ TrivialAugmentWide),
    ``"randaugment"`` (+ RandAugment). Evaluation and prediction always use the plain
    resize + centre crop.

    Batches: ``(image, label)`` for train/val/test (map-style data sets of tensors, so
    :class:`~lt_transfer.callbacks.FeatureCache` applies, with workers too, as long as
    ``persistent_workers`` stays ``False`` and ``augment="none"``); for ``predict`` a dict
    ``{"image": ..., "path": [...]}`` (plus ``"label"`` when predicting a labelled split).

    Args:
        root: the image folder (see above).
        manifest: a CSV manifest instead of class folders (relative paths are relative to it).
        val_fraction: carve a validation split of this fraction from the training images
            (only when there is no validation split; ``None``: none is carved).
        test_fraction: the same for the test split.
        backbone: spec string whose weights' preprocessing to use, e.g.
            ``"torchvision/resnet18"`` or ``"timm/efficientnet_lite0"``.
        weights: the ``weights=`` given to the backbone (a torchvision weights name selects its
            transform; a shipped file may set its normalisation). Only with ``backbone``.
        preprocessing: a ready :class:`~lt_transfer.backbones.Preprocessing` instead of
            ``backbone``.
        image_size: override the input side (the resize side keeps the crop fraction).
        mean: override the normalisation mean (one value per channel).
        std: override the normalisation standard deviation.
        channels: override the channels (3: RGB, 1: grey).
        augment: training augmentation preset (see above).
        labels_per_class: keep this many random training images per class (few-label
            experiments; seeded; ``None``: all).
        balanced: draw training batches class-balanced (a ``WeightedRandomSampler`` with
            replacement, one epoch = as many draws as training images) for imbalanced folders.
        on_bad_image: ``"error"``: an unreadable or truncated file raises when it is loaded,
            naming it; ``"skip"``: every file is decoded once at ``setup`` and bad ones are
            left out, with one warning that counts and lists them.
        predict_root: a folder of images (any layout, searched recursively, unlabelled) for
            ``trainer.predict``.
        predict_files: image files for ``trainer.predict`` (instead of ``predict_root``).
            Without either, ``predict`` runs on the test split (else the validation split).
        batch_size: batch size of every loader.
        num_workers: DataLoader workers; ``None``: ``min(4, available CPUs)``.
        persistent_workers: keep workers between epochs (faster epochs; ``FeatureCache`` does
            not cache with it).
        seed: seed of the split carving and of ``labels_per_class``.

    Raises:
        ValueError: inconsistent arguments, or data problems (no images, an empty class
            folder, a class in val/test but not in train ...), named in the message.

    Example:
        >>> import tempfile
        >>> from lt_transfer.data.image_files import write_class_folders
        >>> root = write_class_folders(tempfile.mkdtemp(), ("cat", "dog"), per_class=5, size=(40, 30))
        >>> dm = ImageFolderDataModule(root, val_fraction=0.2, backbone="torchvision/resnet18",
        ...                            image_size=32, batch_size=4, num_workers=0)
        >>> dm.class_names, dm.num_classes
        (['cat', 'dog'], 2)
        >>> dm.setup("fit")
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> tuple(x.shape), len(dm.val_set)
        ((4, 3, 32, 32), 2)
    """

    def __init__(
        self,
        root: str | None = None,
        manifest: str | None = None,
        val_fraction: float | None = None,
        test_fraction: float | None = None,
        backbone: str | None = None,
        weights: str | None = None,
        preprocessing: Preprocessing | None = None,
        image_size: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        channels: Literal[1, 3] | None = None,
        augment: PhotoAugment = "none",
        labels_per_class: int | None = None,
        balanced: bool = False,
        on_bad_image: BadImageAction = "error",
        predict_root: str | None = None,
        predict_files: list[str] | None = None,
        batch_size: int = 32,
        num_workers: int | None = None,
        persistent_workers: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        # The Preprocessing object stays out of hparams (checkpoints load with weights_only=True).
        self.save_hyperparameters(ignore=["preprocessing"])
        name = "ImageFolderDataModule"
        if root is None and manifest is None and predict_root is None and predict_files is None:
            raise ValueError(
                f"{name}: pass root=<image folder>, manifest=<CSV file>, or, to predict only, "
                "predict_root=/predict_files=."
            )
        for argument, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if value is not None and not 0 < value < 1:
                raise ValueError(f"{name}({argument}={value}) must be between 0 and 1 (exclusive), or None.")
        if (val_fraction or 0) + (test_fraction or 0) >= 1:
            raise ValueError(
                f"{name}(val_fraction={val_fraction}, test_fraction={test_fraction}) must sum to less than 1."
            )
        if predict_root is not None and predict_files is not None:
            raise ValueError(f"{name}: pass predict_root or predict_files, not both.")
        if batch_size < 1:
            raise ValueError(f"{name}(batch_size={batch_size}) must be >= 1.")
        if labels_per_class is not None and labels_per_class < 1:
            raise ValueError(f"{name}(labels_per_class={labels_per_class}) must be >= 1 or None.")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"{name}(num_workers={num_workers}) must be >= 0 or None.")
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"{name}(on_bad_image={on_bad_image!r}) must be 'error' or 'skip'.")
        self.preprocessing = self._resolve_preprocessing(backbone, weights, preprocessing)
        # Build the transforms now so that bad arguments fail at construction.
        self.train_transform = train_transform(self.preprocessing, augment)
        self.eval_transform = eval_transform(self.preprocessing)
        self.num_workers = _default_workers() if num_workers is None else num_workers
        self._splits: dict[str, LabelledImages] | None = None
        self._class_names: list[str] | None = None
        self._bad: set[Path] | None = None
        self.train_set: ImageFileDataset | None = None
        self.val_set: ImageFileDataset | None = None
        self.test_set: ImageFileDataset | None = None
        self.predict_set: ImageFileDataset | None = None

    # ---------------------------------------------------------- preprocessing
    def _resolve_preprocessing(
        self, backbone: str | None, weights: str | None, preprocessing: Preprocessing | None
    ) -> Preprocessing:
        hp = self.hparams
        name = "ImageFolderDataModule"
        if backbone is not None and preprocessing is not None:
            raise ValueError(f"{name}: pass backbone=<spec> or preprocessing=<Preprocessing>, not both.")
        if weights is not None and backbone is None:
            raise ValueError(f"{name}(weights={weights!r}) only applies with backbone=<spec string>.")
        if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
            raise TypeError(
                f"{name}(preprocessing=...) must be a Preprocessing (e.g. backbone.preprocessing), got "
                f"{type(preprocessing).__name__}."
            )
        if backbone is not None:
            preprocessing = resolve_preprocessing(backbone, weights)
            if preprocessing is None:
                raise ValueError(f"{name}(backbone={backbone!r}) is not an image backbone.")
        result = preprocessing or Preprocessing.imagenet()
        if hp.image_size is not None:
            result = result.resized(hp.image_size)
        if hp.channels is not None:
            result = result.with_channels(hp.channels)
        if hp.mean is not None or hp.std is not None:
            try:
                result = Preprocessing(
                    result.image_size,
                    result.resize_size,
                    tuple(hp.mean) if hp.mean is not None else result.mean,
                    tuple(hp.std) if hp.std is not None else result.std,
                    result.interpolation,
                    result.channels,
                )
            except ValueError as error:
                raise ValueError(f"{name}(mean={hp.mean}, std={hp.std}): {error}") from error
        return result

    # ------------------------------------------------------------------ data
    def _labelled(self) -> dict[str, LabelledImages]:
        if self._splits is None:
            hp = self.hparams
            if hp.root is None and hp.manifest is None:
                self._splits = {}
            else:
                self._splits = find_labelled_images(
                    hp.root, hp.manifest, hp.val_fraction, hp.test_fraction, hp.seed, "ImageFolderDataModule"
                )
            train = self._splits.get("train")
            self._class_names = sort_class_names(set(train.labels)) if train is not None else None
        return self._splits

    @property
    def class_names(self) -> list[str] | None:
        """Class names in label order (``None`` when only predicting unlabelled images)."""
        self._labelled()
        return None if self._class_names is None else list(self._class_names)

    @property
    def num_classes(self) -> int | None:
        """Number of classes (``None`` when only predicting unlabelled images)."""
        names = self.class_names
        return None if names is None else len(names)

    def _predict_paths(self) -> list[Path] | None:
        hp = self.hparams
        if hp.predict_files is not None:
            paths = [Path(p).expanduser() for p in hp.predict_files]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"ImageFolderDataModule(predict_files=...): no such files {missing[:5]}."
                )
            return paths
        if hp.predict_root is not None:
            if not Path(hp.predict_root).is_dir():
                raise FileNotFoundError(
                    f"ImageFolderDataModule(predict_root={hp.predict_root!r}) is not a folder."
                )
            paths = list_images(hp.predict_root)
            if not paths:
                raise ValueError(f"ImageFolderDataModule(predict_root={hp.predict_root!r}) holds no images.")
            return paths
        return None

    def _skip_bad(self, paths: Sequence[Path], what: str) -> set[Path]:
        bad = find_bad_images(list(paths))
        if bad:
            listed = [f"{path} ({problem})" for path, problem in bad[:_LISTED]]
            more = f" and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
            warnings.warn(
                f"ImageFolderDataModule(on_bad_image='skip'): skipped {len(bad)} unreadable image files of "
                f"{what}: {listed}{more}.",
                stacklevel=2,
            )
        return {path for path, _ in bad}

    def _dataset(self, files: LabelledImages, train: bool) -> ImageFileDataset:
        assert self._class_names is not None
        if self._bad:
            files = files.select([i for i, p in enumerate(files.paths) if p not in self._bad])
        index = {name: i for i, name in enumerate(self._class_names)}
        transform = self.train_transform if train else self.eval_transform
        labels = [index[label] for label in files.labels]
        return ImageFileDataset(files.paths, labels, transform, self.preprocessing.channels)

    def setup(self, stage: str | None = None) -> None:
        """Find the images and build the data sets of ``stage`` (all labelled ones for ``None``)."""
        hp = self.hparams
        splits = self._labelled()
        if self._bad is None:
            self._bad = set()
            if hp.on_bad_image == "skip" and splits:
                self._bad = self._skip_bad(
                    [p for s in splits.values() for p in s.paths], "the labelled splits"
                )
        if "train" in splits:
            train = splits["train"]
            if self._bad:
                train = train.select([i for i, p in enumerate(train.paths) if p not in self._bad])
            if hp.labels_per_class is not None:
                train = train.select(per_class_subset(train.labels, hp.labels_per_class, hp.seed))
            if stage in (None, "fit"):
                self.train_set = self._dataset(train, train=True)
            if stage in (None, "fit", "validate") and "val" in splits:
                self.val_set = self._dataset(splits["val"], train=False)
            if stage in (None, "test") and "test" in splits:
                self.test_set = self._dataset(splits["test"], train=False)
        if stage in (None, "predict"):
            self.predict_set = self._build_predict_set()

    def _build_predict_set(self) -> ImageFileDataset | None:
        paths = self._predict_paths()
        channels = self.preprocessing.channels
        if paths is not None:
            if self.hparams.on_bad_image == "skip":
                bad = self._skip_bad(paths, "the prediction images")
                paths = [p for p in paths if p not in bad]
            return ImageFileDataset(paths, None, self.eval_transform, channels, with_paths=True)
        labelled = self.test_set or self.val_set
        if labelled is None:
            splits = self._labelled()
            split = "test" if "test" in splits else "val" if "val" in splits else None
            if split is None:
                return None
            labelled = self._dataset(splits[split], train=False)
        return ImageFileDataset(
            labelled.paths, labelled.labels, self.eval_transform, channels, with_paths=True
        )

    # ---------------------------------------------------------------- loaders
    def loader_options(self) -> dict[str, Any]:
        return {
            "batch_size": self.hparams.batch_size,
            "num_workers": self.num_workers,
            "persistent_workers": self.hparams.persistent_workers and self.num_workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }

    def missing_split(self, split: str) -> str:
        what, fix = {
            "train": ("training", "pass root=/manifest= with training images and call setup('fit')."),
            "val": ("validation", "add a val/ folder or pass val_fraction=."),
            "test": ("test", "add a test/ folder or pass test_fraction= (then setup('test'))."),
            "predict": (
                "prediction",
                "pass predict_root=<folder> or predict_files=[...], or give the data a test or val split.",
            ),
        }[split]
        return f"ImageFolderDataModule has no {what} data: {fix}"

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches, or class-balanced draws with ``balanced=True``."""
        if not self.hparams.balanced:
            return super().train_dataloader()
        labels = self.split_set("train").labels
        assert labels is not None
        counts = torch.bincount(torch.tensor(labels), minlength=len(self._class_names or []))
        weights = (1.0 / counts.clamp(min=1).double())[torch.tensor(labels)]
        return self.split_loader(
            "train", sampler=WeightedRandomSampler(weights, len(labels), replacement=True)
        )
