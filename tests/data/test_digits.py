"""DigitsDataModule and its sources: real data, few-label subsets, transforms, errors."""

from __future__ import annotations

import pytest
import torch

from lt_transfer.data import (
    DigitsDataModule,
    ImageSplit,
    few_labels,
    image_transform,
    load_mnist,
    load_sklearn_digits,
)
from lt_transfer.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def test_mnist_is_real_and_complete() -> None:
    splits = load_mnist()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50000, 10000, 10000)
    assert splits.train.images.dtype == torch.uint8
    assert splits.train.labels.bincount().tolist() == splits.train.labels.bincount(minlength=10).tolist()
    assert int(splits.train.images.float().mean()) in range(25, 40)  # MNIST mean ~ 33/255


def test_sklearn_digits_split_is_deterministic_and_disjoint() -> None:
    splits = load_sklearn_digits()
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797
    assert splits.train.images.shape[1:] == (28, 28)
    assert torch.equal(load_sklearn_digits().test.labels, splits.test.labels)


def test_few_labels_exact_counts_and_seeded() -> None:
    split = load_sklearn_digits().train
    subset = few_labels(split, 7, seed=3)
    assert subset.labels.bincount().tolist() == [7] * 10
    assert torch.equal(few_labels(split, 7, seed=3).images, subset.images)
    assert not torch.equal(few_labels(split, 7, seed=4).images, subset.images)
    with pytest.raises(ValueError, match="class 0 has only"):
        few_labels(ImageSplit(torch.zeros(2, 2, 2, dtype=torch.uint8), torch.tensor([0, 1])), 2)


def test_transform_output_matches_imagenet_expectations() -> None:
    image = torch.full((1, 28, 28), 255, dtype=torch.uint8)
    out = image_transform(image_size=48)(image)
    assert out.shape == (3, 48, 48)
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    assert torch.allclose(out[:, 0, 0], expected, atol=1e-5)


@pytest.mark.parametrize("augment", ["light", "trivialaugment", "randaugment", "autoaugment"])
def test_augment_presets_run_on_uint8_digits(augment: str) -> None:
    torch.manual_seed(0)
    image = load_sklearn_digits().train.images[0].unsqueeze(0)
    transform = image_transform(image_size=32, augment=augment)
    outputs = [transform(image) for _ in range(8)]
    assert all(o.shape == (3, 32, 32) and torch.isfinite(o).all() for o in outputs)
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:]), "augmentation never changed the image"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "svhn"}, "dataset='svhn'"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"labels_per_class": 0}, "labels_per_class=0"),
        ({"augment": "mixup"}, r"DigitsDataModule\(augment='mixup'\)"),
        ({"channels": 1}, r"DigitsDataModule\(channels=1, normalize=True\).*pass normalize=False"),
        ({"image_size": 4}, r"DigitsDataModule\(image_size=4\)"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)


def test_image_transform_alone_reports_under_its_own_name() -> None:
    match = r"image_transform\(channels=1, normalize=True\).*pass normalize=False"
    with pytest.raises(ValueError, match=match):
        image_transform(channels=1)


def test_datamodule_few_label_mnist_loaders() -> None:
    data = DigitsDataModule(
        "mnist", image_size=32, labels_per_class=3, val_samples=50, test_samples=40, batch_size=16
    )
    data.setup("fit")
    assert len(data.train_set) == 30 and len(data.val_set) == 50 and len(data.test_set) == 40
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and y.dtype == torch.int64
    val_x, _ = next(iter(data.val_dataloader()))
    assert torch.equal(val_x, next(iter(data.val_dataloader()))[0]), "validation order is fixed"
