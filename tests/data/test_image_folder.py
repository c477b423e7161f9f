"""Tests for ImageFolderDataModule and what it is built on (image_files, image_dataset, image_transforms).

Every test builds its own small image folder in tmp_path with PIL: PNG and JPEG, mixed sizes,
one grey, one RGBA, and (where it matters) one truncated file.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import WeightedRandomSampler

from lt_transfer.backbones import Preprocessing
from lt_transfer.data import (
    BadImageError,
    ImageFolderDataModule,
    eval_transform,
    find_labelled_images,
    load_image,
    train_transform,
)
from lt_transfer.resources import EFFICIENTNET_LITE0_IMAGENET


def _save(path: Path, index: int, mode: str = "RGB") -> Path:
    """A small image with a per-file colour and size (sizes differ: mixed sizes are fine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = (20 + 3 * (index % 4), 16 + 2 * (index % 3))
    colour = {"RGB": (index * 20 % 256, 80, 160), "L": index * 20 % 256, "RGBA": (200, 10, 10, 0)}[mode]
    Image.new(mode, size, colour).save(path)
    return path


def make_folder(root: Path, counts: dict[str, int]) -> Path:
    """``root/<class>/img<i>.png|jpg``, ``counts[class]`` images; class 0 has a grey and an RGBA one."""
    for c, (name, count) in enumerate(counts.items()):
        for i in range(count):
            mode = "L" if (c, i) == (0, 1) else "RGBA" if (c, i) == (0, 2) else "RGB"
            suffix = ".png" if mode == "RGBA" or i % 2 else ".jpg"
            _save(root / name / f"img{i}{suffix}", i, mode)
    return root


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def dm(root: Path | str | None = None, **kwargs) -> ImageFolderDataModule:
    kwargs = {"image_size": 16, "batch_size": 4, "num_workers": 0, **kwargs}
    return ImageFolderDataModule(str(root) if root is not None else None, **kwargs)


# --------------------------------------------------------------------- layouts
def test_train_val_test_folders(tmp_path: Path) -> None:
    for split, count in (("train", 6), ("val", 2), ("test", 3)):
        make_folder(tmp_path / split, {"cat": count, "dog": count})
    data = dm(tmp_path)
    assert data.class_names == ["cat", "dog"] and data.num_classes == 2
    data.setup("fit")
    assert (len(data.train_set), len(data.val_set), data.test_set) == (12, 4, None)
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.long
    data.setup("test")
    xs, ys = zip(*(batch for batch in data.test_dataloader()), strict=True)
    assert torch.cat(ys).tolist() == [0, 0, 0, 1, 1, 1]


def test_one_folder_split_is_stratified_seeded_and_disjoint(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": 10, "b": 5})
    splits = find_labelled_images(tmp_path, val_fraction=0.2, test_fraction=0.2, seed=0)
    counts = {split: Counter(files.labels) for split, files in splits.items()}
    assert counts == {"train": {"a": 6, "b": 3}, "val": {"a": 2, "b": 1}, "test": {"a": 2, "b": 1}}
    paths = [p for files in splits.values() for p in files.paths]
    assert len(paths) == len(set(paths)) == 15
    again = find_labelled_images(tmp_path, val_fraction=0.2, test_fraction=0.2, seed=0)
    other = find_labelled_images(tmp_path, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert again["val"].paths == splits["val"].paths != other["val"].paths
    # a class with one image keeps it for training
    make_folder(tmp_path, {"c": 1})
    assert Counter(find_labelled_images(tmp_path, val_fraction=0.4)["train"].labels)["c"] == 1


def test_missing_split_carved_from_train(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"a": 5, "b": 5})
    make_folder(tmp_path / "test", {"a": 1, "b": 1})
    data = dm(tmp_path, val_fraction=0.2)
    data.setup(None)
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (8, 2, 2)
    with pytest.warns(UserWarning, match="own test split .* test_fraction=0.2 is not used"):
        both = dm(tmp_path, val_fraction=0.2, test_fraction=0.2)
        both.setup(None)
    assert (len(both.train_set), len(both.val_set), len(both.test_set)) == (8, 2, 2)


def test_csv_manifest_with_and_without_split_column(tmp_path: Path) -> None:
    make_folder(tmp_path / "images", {"x": 4})
    files = sorted((tmp_path / "images" / "x").iterdir())
    rows = ["path,label,split"] + [
        f"images/x/{f.name},{label},{split}"
        for f, label, split in zip(
            files, ["10", "2", "10", "2"], ["train", "train", "val", "train"], strict=True
        )
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    data = dm(manifest=str(tmp_path / "labels.csv"))
    assert data.class_names == ["2", "10"]  # integer names sort numerically
    data.setup("fit")
    assert (len(data.train_set), len(data.val_set)) == (3, 1)
    assert data.train_set.labels == [1, 0, 0]

    (tmp_path / "plain.csv").write_text("path,label\n" + "".join(f"{f},{f.stem}\n" for f in files))
    assert dm(manifest=str(tmp_path / "plain.csv")).num_classes == 4  # absolute paths
    (tmp_path / "bad.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(ValueError, match="needs a header with 'path' and 'label' columns"):
        _ = dm(manifest=str(tmp_path / "bad.csv")).class_names
    (tmp_path / "missing.csv").write_text("path,label\nnope.png,x\n")
    with pytest.raises(FileNotFoundError, match="line 2: the image .*nope.png does not exist"):
        _ = dm(manifest=str(tmp_path / "missing.csv")).class_names


# ------------------------------------------------------------------- bad input
def test_bad_folders_give_clear_errors(tmp_path: Path) -> None:
    make_folder(tmp_path / "empty_class", {"a": 2})
    (tmp_path / "empty_class" / "b").mkdir()
    with pytest.raises(ValueError, match="the class folder .*/b has no images"):
        _ = dm(tmp_path / "empty_class").class_names
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="has no class sub-folders \\(it holds no images\\)"):
        _ = dm(tmp_path / "nothing").class_names
    _save(tmp_path / "loose" / "a.png", 0)
    with pytest.raises(ValueError, match="it holds images directly"):
        _ = dm(tmp_path / "loose").class_names
    make_folder(tmp_path / "unseen" / "train", {"a": 2})
    make_folder(tmp_path / "unseen" / "val", {"a": 1, "zebra": 1})
    with pytest.raises(ValueError, match="the val split has classes \\['zebra'\\] that the training split"):
        _ = dm(tmp_path / "unseen").class_names
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        _ = dm(tmp_path / "absent").class_names


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pass root=<image folder>, manifest="):
        ImageFolderDataModule()
    with pytest.raises(ValueError, match="val_fraction=1.5\\) must be between 0 and 1"):
        dm(tmp_path, val_fraction=1.5)
    with pytest.raises(ValueError, match="must sum to less than 1"):
        dm(tmp_path, val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="augment='mixup' must be one of"):
        dm(tmp_path, augment="mixup")
    with pytest.raises(ValueError, match="not both"):
        dm(tmp_path, backbone="torchvision/resnet18", preprocessing=Preprocessing.imagenet())
    with pytest.raises(ValueError, match="weights='DEFAULT'\\) only applies with backbone="):
        dm(tmp_path, weights="DEFAULT")
    with pytest.raises(ValueError, match="mean=\\[0.5\\].*one value per channel"):
        dm(tmp_path, mean=[0.5])
    with pytest.raises(ValueError, match="is not an image backbone"):
        dm(tmp_path, backbone="hf/some-model")


def test_truncated_file_raises_naming_it_or_is_skipped_with_one_warning(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": 4, "b": 4})
    bad = truncate(tmp_path / "b" / "img0.jpg")
    (tmp_path / "a" / "img3.png").write_bytes(b"not an image at all")
    data = dm(tmp_path, batch_size=16)
    data.setup("fit")
    with pytest.raises(
        BadImageError, match="cannot read the image file .*img(0.jpg|3.png).*on_bad_image='skip'"
    ):
        next(iter(data.train_dataloader()))

    skipping = dm(tmp_path, on_bad_image="skip", val_fraction=0.25)
    with pytest.warns(UserWarning, match="skipped 2 unreadable image files") as record:
        skipping.setup("fit")
    assert len([w for w in record if "unreadable" in str(w.message)]) == 1
    assert str(bad) in str(record[0].message)
    assert len(skipping.train_set) + len(skipping.val_set) == 6
    x, _ = next(iter(skipping.train_dataloader()))
    assert x.shape[1:] == (3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        skipping.setup("validate")  # scanned once


# ---------------------------------------------------------- images and modes
def test_grey_rgba_and_16_bit_images_become_rgb_or_grey(tmp_path: Path) -> None:
    grey = _save(tmp_path / "grey.png", 3, "L")
    rgb = load_image(grey)
    assert rgb.mode == "RGB" and len(set(rgb.getpixel((0, 0)))) == 1
    rgba = _save(tmp_path / "rgba.png", 0, "RGBA")
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)  # fully transparent: white
    assert load_image(rgba, channels=1).mode == "L"
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(deep)
    assert load_image(deep).getpixel((0, 0)) == (255, 255, 255)

    make_folder(tmp_path / "folder", {"a": 3, "b": 2})
    data = dm(tmp_path / "folder", channels=1)
    data.setup("fit")
    assert data.preprocessing.channels == 1 and data.train_set[0][0].shape == (1, 16, 16)


def test_preprocessing_follows_the_backbone_and_is_overridable(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": 2, "b": 2})
    lite = ImageFolderDataModule(
        str(tmp_path), backbone="timm/efficientnet_lite0", weights=EFFICIENTNET_LITE0_IMAGENET
    )
    assert lite.preprocessing.mean == (0.5, 0.5, 0.5) and lite.preprocessing.interpolation == "bicubic"
    assert (lite.preprocessing.image_size, lite.preprocessing.resize_size) == (224, 256)
    tv = ImageFolderDataModule(str(tmp_path), backbone="torchvision/resnet50", weights="IMAGENET1K_V2")
    assert tv.preprocessing.resize_size == 232
    assert ImageFolderDataModule(str(tmp_path)).preprocessing == Preprocessing.imagenet()
    custom = ImageFolderDataModule(
        str(tmp_path),
        preprocessing=Preprocessing.imagenet(),
        image_size=64,
        mean=[0.1, 0.2, 0.3],
        std=[1, 1, 1],
    )
    assert (custom.preprocessing.image_size, custom.preprocessing.mean) == (64, (0.1, 0.2, 0.3))
    assert "preprocessing" not in custom.hparams  # checkpoints stay loadable with weights_only=True


def test_augmentation_presets() -> None:
    preprocessing = Preprocessing.imagenet().resized(16)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    names = {
        augment: [type(t).__name__ for t in train_transform(preprocessing, augment).transforms]
        for augment in ("none", "flip_crop", "trivial", "randaugment")
    }
    assert names["none"] == [type(t).__name__ for t in eval_transform(preprocessing).transforms]
    assert "CenterCrop" in names["none"] and not any(n.startswith("Random") for n in names["none"])
    assert names["flip_crop"][1:3] == ["RandomResizedCrop", "RandomHorizontalFlip"]
    assert "TrivialAugmentWide" in names["trivial"] and "RandAugment" in names["randaugment"]
    torch.manual_seed(0)
    trivial = train_transform(preprocessing, "trivial")
    assert trivial(image).shape == (3, 16, 16) and not torch.equal(trivial(image), trivial(image))


def test_labels_per_class_and_balanced_sampling(tmp_path: Path) -> None:
    make_folder(tmp_path, {"many": 8, "few": 2})
    few = dm(tmp_path, labels_per_class=2)
    few.setup("fit")
    assert Counter(few.train_set.labels) == {0: 2, 1: 2}
    with pytest.raises(ValueError, match="labels_per_class=3, but class 'few' has only 2 training images"):
        dm(tmp_path, labels_per_class=3).setup("fit")

    balanced = dm(tmp_path, balanced=True, batch_size=10)
    balanced.setup("fit")
    loader = balanced.train_dataloader()
    assert isinstance(loader.sampler, WeightedRandomSampler) and len(loader.sampler) == 10
    torch.manual_seed(0)
    drawn = Counter(int(label) for _ in range(40) for label in next(iter(loader))[1])
    assert abs(drawn[0] - drawn[1]) < 0.2 * 400  # ~50/50 although the folder is 80/20


# --------------------------------------------------------------------- predict
def test_predict_root_yields_paths(tmp_path: Path) -> None:
    for i, mode in enumerate(("RGB", "L", "RGBA")):
        _save(tmp_path / "new" / ("sub" if i else "") / f"p{i}.{'jpg' if mode != 'RGBA' else 'png'}", i, mode)
    data = dm(predict_root=str(tmp_path / "new"))
    assert data.class_names is None and data.num_classes is None
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    assert batch["image"].shape == (3, 3, 16, 16) and "label" not in batch
    assert [Path(p).name for p in batch["path"]] == ["p0.jpg", "p1.jpg", "p2.png"]
    files = dm(predict_files=[batch["path"][2]])
    files.setup("predict")
    assert len(files.predict_set) == 1
    with pytest.raises(FileNotFoundError, match="no such files"):
        dm(predict_files=["missing.png"]).setup("predict")


def test_predict_defaults_to_the_labelled_test_split(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"a": 2, "b": 2})
    make_folder(tmp_path / "test", {"a": 1, "b": 1})
    data = dm(tmp_path)
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    assert batch["label"].tolist() == [0, 1] and len(batch["path"]) == 2
    only_train = dm(tmp_path / "train")
    only_train.setup("predict")
    with pytest.raises(ValueError, match="no prediction data: pass predict_root"):
        only_train.predict_dataloader()


# ---------------------------------------------------------------- FeatureCache
def test_feature_cache_with_workers(tmp_path: Path) -> None:
    from lt_transfer import FeatureCache, TransferClassifier
    from tests.conftest import make_tiny_backbone

    make_folder(tmp_path, {"a": 6, "b": 6})
    data = dm(tmp_path, num_workers=2, val_fraction=0.25)
    torch.manual_seed(0)
    model = TransferClassifier(make_tiny_backbone(), num_classes=2, finetune="frozen")
    cache = FeatureCache()
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[cache],
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="FeatureCache: not caching")
        trainer.fit(model, data)
    assert cache.builds >= 1 and cache.computed_samples >= 9


def test_num_workers_default_is_min_4_and_the_available_cpus(tmp_path: Path, monkeypatch) -> None:
    """README: ``num_workers`` defaults to ``min(4, CPUs)`` (the CPUs this process may run on)."""
    import os

    root = make_folder(tmp_path / "photos", {"cat": 2, "dog": 2})
    for cpus, expected in ((2, 2), (16, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cpus: set(range(n)), raising=False)
        assert ImageFolderDataModule(str(root), image_size=16).num_workers == expected
    assert dm(root).num_workers == 0  # an explicit value is kept

