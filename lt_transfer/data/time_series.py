"""TimeSeriesClassificationDataModule: UCR/UEA sets shipped by aeon, or your own series, as batches.

Batches are ``(x, y)``: ``x`` float32 ``(N, channels, length)``, ``y`` int64 class indices, from
map-style tensor data sets (so :class:`~lt_transfer.callbacks.FeatureCache` applies).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import TensorDataset

from lt_transfer.data._split_loaders import SplitLoaders
from lt_transfer.data.aeon_data import load_ucr
from lt_transfer.data.image_files import per_class_subset, sort_class_names, stratified_split
from lt_transfer.data.ts_formats import LabelledSeries, read_labelled_csv, read_ts
from lt_transfer.data.ts_preprocessing import (
    FillPolicy,
    LengthMode,
    fill_missing,
    fit_length,
    stack_series,
    z_normalize,
)

__all__ = ["TimeSeriesClassificationDataModule", "read_labelled_series"]

_NAME = "TimeSeriesClassificationDataModule"


def read_labelled_series(
    source: str | os.PathLike[str] | LabelledSeries, label_column: int = 0
) -> LabelledSeries:
    """Read a ``.ts`` file, a ``.csv``/``.tsv`` file (one series per row) or pass a :class:`LabelledSeries`.

    Example:
        >>> read_labelled_series(LabelledSeries.from_arrays([[1.0, 2.0]], ["a"])).labels
        ('a',)
    """
    if isinstance(source, LabelledSeries):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"{_NAME}: train/test must be a .ts/.csv/.tsv path or a LabelledSeries "
            f"(LabelledSeries.from_arrays(x, y)), got {type(source).__name__}."
        )
    path = Path(source)
    if path.suffix.lower() == ".ts":
        return read_ts(path)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return read_labelled_csv(path, label_column)
    raise ValueError(f"{_NAME}: cannot read {str(path)!r}; expected a .ts, .csv or .tsv file.")


def _class_names(train: LabelledSeries) -> list[str]:
    """The declared labels (numerically sorted when all are numbers), else the sorted training labels."""
    declared = list(train.class_names or ())
    if declared and all(_is_number(name) for name in declared):
        return sorted(declared, key=float)
    return declared or sort_class_names(set(train.labels))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class TimeSeriesClassificationDataModule(SplitLoaders, LightningDataModule):
    """Labelled series (a UCR/UEA set shipped by aeon, files, or arrays) as ``(x, y)`` batches.

    Sources: ``dataset="GunPoint"`` (any name of :func:`lt_transfer.data.ucr_names`; another
    name lists them), or ``train=`` (and optionally ``test=``): a ``.ts`` file (UCR/UEA format,
    multivariate and unequal-length cases included), a ``.csv``/``.tsv`` file with one univariate
    series per row (label in ``label_column``), or a
    :class:`~lt_transfer.data.ts_formats.LabelledSeries` (``LabelledSeries.from_arrays(x, y)``
    for arrays). The files are read at construction, so :attr:`num_classes`,
    :attr:`class_names`, :attr:`in_channels` and :attr:`length` are known right away (the CLI
    links ``data.num_classes`` to the model).

    Each series goes through, in order (:mod:`lt_transfer.data.ts_preprocessing`): the NaN
    policy ``fill`` (default: an error naming the series), z-normalisation of each channel
    (``normalize``), then one length for all: ``length`` (default: the longest series of train and
    test) reached by ``length_mode`` (``"pad"``: zeros appended, i.e. the mean of a normalised
    series; ``"resample"``: linear interpolation, e.g. to give sets of different lengths one
    input size for transfer; ``"error"``: refuse series of another length).

    Splits: ``val_fraction`` carves a stratified, seeded validation split from the training
    series (none by default); then ``labels_per_class`` keeps that many random training series
    per class (few-label experiments). Class indices follow :attr:`class_names`: the labels the
    file declares (numerically sorted when they are numbers), else the sorted training labels.

    Args:
        dataset: a UCR/UEA name shipped by aeon.
        train: training data (see above) instead of ``dataset``.
        test: test data; ``None`` with ``train=``: no test split.
        length: the common length; ``None``: the longest series.
        length_mode: ``"pad"``, ``"resample"`` or ``"error"``.
        normalize: z-normalise each channel of each series.
        fill: ``None`` (NaN is an error), a number, or ``"interpolate"``.
        labels_per_class: keep this many training series per class (``None``: all).
        val_fraction: fraction of each class's training series held out for validation.
        label_column: the label's column in CSV files (0: first, -1: last).
        batch_size: batch size of every loader.
        num_workers: DataLoader workers.
        seed: seed of the validation split and of ``labels_per_class``.

    Raises:
        ValueError: bad arguments, an unknown data set (the shipped ones are listed), NaN
            without ``fill``, test labels unknown to training, a class with fewer series than
            ``labels_per_class`` (each named in the message).

    Example:
        >>> dm = TimeSeriesClassificationDataModule("ArrowHead", length=128, length_mode="resample",
        ...                                         labels_per_class=4, batch_size=6)
        >>> dm.num_classes, dm.class_names, dm.in_channels, dm.length
        (3, ['0', '1', '2'], 1, 128)
        >>> dm.setup("fit")
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> tuple(x.shape), y.dtype, len(dm.train_set)
        ((6, 1, 128), torch.int64, 12)
    """

    predict_split = "test"

    def __init__(
        self,
        dataset: str | None = None,
        train: str | LabelledSeries | None = None,
        test: str | LabelledSeries | None = None,
        length: int | None = None,
        length_mode: LengthMode = "pad",
        normalize: bool = True,
        fill: FillPolicy = None,
        labels_per_class: int | None = None,
        val_fraction: float | None = None,
        label_column: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        # LabelledSeries objects stay out of the hyper-parameters (checkpoints hold plain data).
        objects = [n for n, v in (("train", train), ("test", test)) if isinstance(v, LabelledSeries)]
        self.save_hyperparameters(ignore=objects)
        if (dataset is None) == (train is None):
            raise ValueError(
                f"{_NAME}: pass dataset=<UCR name shipped by aeon> or train=<.ts/.csv file or "
                f"LabelledSeries>, not {'both' if dataset is not None else 'neither'}."
            )
        if dataset is not None and test is not None:
            raise ValueError(
                f"{_NAME}(dataset={dataset!r}, test=...): a shipped data set has its own test split."
            )
        if length_mode not in ("pad", "resample", "error"):
            raise ValueError(f"{_NAME}(length_mode={length_mode!r}) must be 'pad', 'resample' or 'error'.")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ValueError(f"{_NAME}(length={length!r}) must be an int >= 1 or None (the longest series).")
        if labels_per_class is not None and labels_per_class < 1:
            raise ValueError(f"{_NAME}(labels_per_class={labels_per_class}) must be >= 1 or None (all).")
        if val_fraction is not None and not 0 < val_fraction < 1:
            raise ValueError(
                f"{_NAME}(val_fraction={val_fraction}) must be between 0 and 1 (exclusive), or None."
            )
        if batch_size < 1:
            raise ValueError(f"{_NAME}(batch_size={batch_size}) must be >= 1.")
        if dataset is not None:
            self._train, test_data = load_ucr(dataset)
            self._test: LabelledSeries | None = test_data
        else:
            assert train is not None
            self._train = read_labelled_series(train, label_column)
            self._test = read_labelled_series(test, label_column) if test is not None else None
        self._check_data()
        self.class_names: list[str] = _class_names(self._train)
        lengths = self._train.lengths + (self._test.lengths if self._test is not None else [])
        self.length: int = length if length is not None else max(lengths)
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes (of :attr:`class_names`)."""
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """Channels per series (the backbone's ``in_channels``)."""
        return self._train.num_channels

    def _check_data(self) -> None:
        train, test = self._train, self._test
        if not len(train):
            raise ValueError(f"{_NAME}: the training data {train.name!r} holds no series.")
        if test is not None and len(test) and test.num_channels != train.num_channels:
            raise ValueError(
                f"{_NAME}: training series have {train.num_channels} channels but test series "
                f"{test.num_channels}; both splits must come from the same sensors."
            )

    def _tensors(self, data: LabelledSeries, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        hp = self.hparams
        where = f"{_NAME} ({split} split of {data.name!r})"
        unknown = sorted(set(data.labels) - set(self.class_names))
        if unknown:
            raise ValueError(
                f"{where}: labels {unknown[:10]} are not among the training classes {self.class_names}; "
                "every class must occur in the training data."
            )
        series = fill_missing(data.series, hp.fill, where)
        if hp.normalize:
            series = [z_normalize(values) for values in series]
        series = fit_length(series, self.length, hp.length_mode, where)
        index = {name: i for i, name in enumerate(self.class_names)}
        labels = torch.tensor([index[label] for label in data.labels], dtype=torch.long)
        return stack_series(series, where), labels

    def _few_labels(self, labels: list[str]) -> list[int]:
        count = self.hparams.labels_per_class
        short = {name: n for name, n in Counter(labels).items() if n < count}
        if short:
            raise ValueError(
                f"{_NAME}(labels_per_class={count}): classes {short} have fewer training series; lower "
                "labels_per_class (or val_fraction)."
            )
        return per_class_subset(labels, count, self.hparams.seed)

    def setup(self, stage: str | None = None) -> None:
        """Preprocess the splits (NaN policy, normalisation, length) and carve val / few labels."""
        hp = self.hparams
        x, y = self._tensors(self._train, "train")
        labels = list(self._train.labels)
        train_index = list(range(len(labels)))
        if hp.val_fraction is not None:
            train_index, val_index = stratified_split(labels, [hp.val_fraction], hp.seed)
            self.val_set = TensorDataset(x[val_index], y[val_index])
        if hp.labels_per_class is not None:
            chosen = self._few_labels([labels[i] for i in train_index])
            train_index = [train_index[i] for i in chosen]
        self.train_set = TensorDataset(x[train_index], y[train_index])
        if self._test is not None:
            self.test_set = TensorDataset(*self._tensors(self._test, "test"))

    def missing_split(self, split: str) -> str:
        return f"{_NAME} has no {split} split (call setup() first; test needs test= or dataset=)."

    def describe(self) -> dict[str, object]:
        """Sizes and settings, e.g. for a benchmark table.

        Example:
            >>> dm = TimeSeriesClassificationDataModule("GunPoint")
            >>> dm.describe()["train_series"], dm.describe()["length"]
            (50, 150)
        """
        return {
            "name": self._train.name,
            "train_series": len(self._train),
            "test_series": len(self._test) if self._test is not None else 0,
            "classes": self.num_classes,
            "channels": self.in_channels,
            "length": self.length,
            "original_lengths": (min(self._train.lengths), max(self._train.lengths)),
        }
