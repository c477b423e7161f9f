"""Fashion-MNIST IDX reading: round trip, bad files named, missing files explained, the DataModule."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from lt_transfer.data.fashion_mnist import (
    FASHION_MNIST_ROOT,
    FashionMNISTDataModule,
    load_fashion_mnist,
    read_idx,
    write_idx,
    write_tiny_fashion_mnist,
)


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_round_trip(tmp_path: Path, name: str, dtype: type) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype is np.uint8:
        array = np.abs(array).astype(dtype)
    back = read_idx(write_idx(tmp_path / name, array))
    assert back.dtype == array.dtype and np.array_equal(back, array)


def test_bad_files_are_named(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x-idx1-ubyte", np.arange(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="x-idx1-ubyte' is truncated"):
        read_idx(path)
    with gzip.open(tmp_path / "y.gz", "wb") as handle:
        handle.write(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="y.gz' is not an IDX file"):
        read_idx(tmp_path / "y.gz")


def test_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)


def test_splits_and_few_labels(tmp_path: Path) -> None:
    root = write_tiny_fashion_mnist(tmp_path / "fmnist", train=50, test=20)
    splits = load_fashion_mnist(root, val_size=10)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 10, 20)
    assert splits.train.labels[:3].tolist() == [0, 1, 2] and splits.val.labels[0].item() == 0  # 40 % 10
    with pytest.raises(ValueError, match="val_size=50"):
        load_fashion_mnist(root, val_size=50)
    full = write_tiny_fashion_mnist(tmp_path / "full", train=10_030, test=20)  # 30 + 10k validation
    dm = FashionMNISTDataModule(str(full), labels_per_class=3, test_samples=5, batch_size=4)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10_000, 5)
    x, y = next(iter(dm.train_dataloader()))
    assert tuple(x.shape) == (4, 3, 32, 32) and "dataset" not in dm.hparams


@pytest.mark.skipif(not Path(FASHION_MNIST_ROOT).is_dir(), reason="dataset-fashion-mnist is not installed")
def test_the_installed_data_set() -> None:
    splits = load_fashion_mnist()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50_000, 10_000, 10_000)
    assert tuple(splits.train.images.shape[1:]) == (28, 28)
    assert sorted(splits.test.labels.bincount().tolist()) == [1000] * 10
