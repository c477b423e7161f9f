"""SplitLoaders: the train/val/test/predict loaders of a DataModule that keeps one data set per split.

A DataModule that fills ``train_set``, ``val_set``, ``test_set`` (and ``predict_set``) in
``setup`` inherits its four ``*_dataloader`` hooks from :class:`SplitLoaders` and says only
what differs: the DataLoader options (:meth:`SplitLoaders.loader_options`), which split
``predict`` reads (:attr:`SplitLoaders.predict_split`) and what a missing split's error says
(:meth:`SplitLoaders.missing_split`).
"""

from __future__ import annotations

from typing import Any, Literal

from torch.utils.data import DataLoader, Dataset

__all__ = ["Split", "SplitLoaders"]

#: The splits a :class:`SplitLoaders` DataModule may hold, each as the attribute ``<split>_set``.
Split = Literal["train", "val", "test", "predict"]


class SplitLoaders:
    """Mixin (before ``LightningDataModule`` in the bases) for the loaders over ``<split>_set``.

    ``train`` is shuffled, the others are not; ``val_dataloader`` returns ``[]`` (Lightning
    then skips validation) when there is no validation set; a missing train, test or predict
    set raises a ``ValueError`` with :meth:`missing_split`'s message.

    Example:
        >>> import torch
        >>> from lightning.pytorch import LightningDataModule
        >>> from torch.utils.data import TensorDataset
        >>> class Tiny(SplitLoaders, LightningDataModule):
        ...     def setup(self, stage=None):
        ...         self.train_set = TensorDataset(torch.arange(6.0))
        ...     def loader_options(self):
        ...         return {"batch_size": 4}
        >>> dm = Tiny()
        >>> dm.setup()
        >>> len(next(iter(dm.train_dataloader()))[0]), dm.val_dataloader()
        (4, [])
        >>> dm.test_dataloader()
        Traceback (most recent call last):
        ...
        ValueError: Tiny has no test split; call setup() first.
    """

    hparams: Any  # the LightningDataModule's (an annotation only: no attribute is defined here)
    train_set: Dataset | None = None
    val_set: Dataset | None = None
    test_set: Dataset | None = None
    predict_set: Dataset | None = None
    #: The split ``predict_dataloader`` reads.
    predict_split: Split = "predict"

    def loader_options(self) -> dict[str, Any]:
        """DataLoader keyword arguments of every split (``batch_size`` and ``num_workers`` from hparams)."""
        return {"batch_size": self.hparams.batch_size, "num_workers": self.hparams.num_workers}

    def missing_split(self, split: Split) -> str:
        """The error message when ``split`` has no data set (override it to say how to get one)."""
        return f"{type(self).__name__} has no {split} split; call setup() first."

    def split_set(self, split: Split) -> Dataset:
        """The data set of ``split``, or a ``ValueError`` with :meth:`missing_split`'s message."""
        dataset = getattr(self, f"{split}_set")
        if dataset is None:
            raise ValueError(self.missing_split(split))
        return dataset

    def split_loader(self, split: Split, **options: Any) -> DataLoader:
        """A DataLoader over ``split``'s data set: :meth:`loader_options` updated by ``options``."""
        return DataLoader(self.split_set(split), **{**self.loader_options(), **options})

    def train_dataloader(self) -> DataLoader:
        return self.split_loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        """The validation loader; ``[]`` (Lightning skips validation) without a validation set."""
        return self.split_loader("val", shuffle=False) if self.val_set is not None else []

    def test_dataloader(self) -> DataLoader:
        return self.split_loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.split_loader(self.predict_split, shuffle=False)
