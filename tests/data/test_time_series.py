"""TimeSeriesClassificationDataModule: shipped UCR sets, own files and arrays, length/NaN policies,
splits, class order and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lt_transfer.data import LabelledSeries, TimeSeriesClassificationDataModule


def _arrays(lengths=(5, 5, 5, 5), labels=("a", "b", "a", "b"), nan: bool = False) -> LabelledSeries:
    rng = np.random.default_rng(0)
    series = [rng.normal(size=length) * 3 + 7 for length in lengths]
    if nan:
        series[1][2] = np.nan
    return LabelledSeries.from_arrays(series, list(labels))


def test_shipped_set_shapes_and_normalisation() -> None:
    dm = TimeSeriesClassificationDataModule("ItalyPowerDemand", batch_size=1000)
    assert (dm.num_classes, dm.class_names, dm.in_channels, dm.length) == (2, ["1", "2"], 1, 24)
    dm.setup("fit")
    x, y = dm.test_set.tensors
    assert x.shape == (1029, 1, 24) and y.dtype == torch.long and set(y.tolist()) == {0, 1}
    assert torch.allclose(x.mean(-1), torch.zeros(1029, 1), atol=1e-5)
    assert torch.allclose(x.std(-1, unbiased=False), torch.ones(1029, 1), atol=1e-4)
    assert dm.val_dataloader() == []  # no val_fraction: no validation


def test_unequal_lengths_padded_or_resampled() -> None:
    padded = TimeSeriesClassificationDataModule("PickupGestureWiimoteZ")
    assert padded.length == 361
    padded.setup("fit")
    x, _ = padded.train_set.tensors
    assert x.shape == (50, 1, 361) and (x[:, 0, -1] == 0).sum() > 0  # short series end in zeros
    resampled = TimeSeriesClassificationDataModule("PickupGestureWiimoteZ", length=64, length_mode="resample")
    resampled.setup("fit")
    assert resampled.train_set.tensors[0].shape == (50, 1, 64)
    with pytest.raises(ValueError, match=r"series 0 has 324 points, not length=300; use a larger length or"):
        TimeSeriesClassificationDataModule("PickupGestureWiimoteZ", length=300).setup("fit")
    with pytest.raises(ValueError, match=r"length_mode='pad' or 'resample'"):
        TimeSeriesClassificationDataModule("PickupGestureWiimoteZ", length_mode="error").setup("fit")


def test_class_names_numeric_order_and_declared_order() -> None:
    pickup = TimeSeriesClassificationDataModule("PickupGestureWiimoteZ_eq")  # declared as 1 10 2 3 ...
    assert pickup.class_names == [str(i) for i in range(1, 11)]
    assert TimeSeriesClassificationDataModule("BasicMotions").class_names == [
        "Standing", "Running", "Walking", "Badminton"
    ]


def test_val_split_then_few_labels_are_disjoint_and_seeded() -> None:
    dm = TimeSeriesClassificationDataModule("OSULeaf", val_fraction=0.25, labels_per_class=3, seed=1)
    dm.setup("fit")
    train_x, train_y = dm.train_set.tensors
    val_x, val_y = dm.val_set.tensors
    assert train_y.bincount().tolist() == [3] * 6 and len(val_y) == 50
    rows = {tuple(row.flatten().tolist()) for row in train_x}
    assert not rows & {tuple(row.flatten().tolist()) for row in val_x}
    again = TimeSeriesClassificationDataModule("OSULeaf", val_fraction=0.25, labels_per_class=3, seed=1)
    again.setup("fit")
    assert torch.equal(again.train_set.tensors[0], train_x)
    with pytest.raises(ValueError, match=r"labels_per_class=20\): classes .* have fewer training series"):
        TimeSeriesClassificationDataModule("ArrowHead", labels_per_class=20).setup("fit")


def test_own_files(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("a,1,2,3,4\nb,4,3,2,1\na,1,2,3,5\n")
    (tmp_path / "test.tsv").write_text("b\t3\t2\t1\na\t1\t2\t4\n")
    dm = TimeSeriesClassificationDataModule(
        train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.tsv")
    )
    assert dm.class_names == ["a", "b"] and dm.length == 4
    dm.setup("test")
    assert dm.test_set.tensors[0].shape == (2, 1, 4) and dm.test_set.tensors[1].tolist() == [1, 0]
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(ValueError, match="expected a .ts, .csv or .tsv file"):
        TimeSeriesClassificationDataModule(train=str(tmp_path / "x.parquet"))


def test_arrays_and_nan_policy() -> None:
    with pytest.raises(ValueError, match=r"series 1 has 1 missing value\(s\) \(NaN\); pass fill="):
        TimeSeriesClassificationDataModule(train=_arrays(nan=True)).setup("fit")
    dm = TimeSeriesClassificationDataModule(train=_arrays(nan=True), fill="interpolate", normalize=False)
    dm.setup("fit")
    x = dm.train_set.tensors[0]
    assert torch.isfinite(x).all()
    assert torch.isclose(x[1, 0, 2], (x[1, 0, 1] + x[1, 0, 3]) / 2)
    with pytest.raises(ValueError, match="has no test split"):
        dm.test_dataloader()


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"not shipped by the installed aeon package; choose one of .*GunP"):
        TimeSeriesClassificationDataModule("Wafer")
    with pytest.raises(ValueError, match="not both"):
        TimeSeriesClassificationDataModule("GunPoint", train=_arrays())
    with pytest.raises(ValueError, match="not neither"):
        TimeSeriesClassificationDataModule()
    with pytest.raises(ValueError, match=r"length_mode='crop'"):
        TimeSeriesClassificationDataModule("GunPoint", length_mode="crop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"val_fraction=1.5"):
        TimeSeriesClassificationDataModule("GunPoint", val_fraction=1.5)
    unseen = LabelledSeries.from_arrays([[1.0, 2.0]], ["c"])
    with pytest.raises(ValueError, match=r"labels \['c'\] are not among the training classes \['a', 'b'\]"):
        TimeSeriesClassificationDataModule(train=_arrays(), test=unseen).setup("test")
    two_channels = LabelledSeries.from_arrays(np.zeros((1, 2, 5)), ["a"])
    with pytest.raises(ValueError, match="training series have 1 channels but test series 2"):
        TimeSeriesClassificationDataModule(train=_arrays(), test=two_channels)
