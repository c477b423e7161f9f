"""Where the input sits in a batch, and how a cached sample is put back together around it.

The cache replaces the input of each sample by its features and keeps every other field
(labels, weights, indices ...) as the data set returned it, so the collate function and the
module's step see batches of the usual shape. With ``input_key=None`` the input is found by
the batch contract (:func:`lt_transfer.batches.split_batch`: a tensor batch, position 0 of a
tuple, the first of :data:`~lt_transfer.batches.INPUT_KEYS` of a dict); an explicit
``input_key`` names a position or dict key for batches of your own layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from lt_transfer.batches import split_batch

__all__ = ["InputKey", "SampleLayout", "UncacheableBatchError", "batch_input", "input_location"]

#: Where the input sits: a tuple position, a dict key, or ``None`` (the batch contract decides).
InputKey = int | str | None


class UncacheableBatchError(ValueError):
    """The batches are valid but cannot be cached (a tokenizer-dict input, a string field ...).

    Example:
        >>> issubclass(UncacheableBatchError, ValueError)
        True
    """


def input_location(batch: Any, input_key: InputKey, where: str = "FeatureCache") -> int | str | None:
    """The position or key of the input in ``batch``; ``None`` when the batch is the input.

    Raises:
        ValueError: ``input_key`` does not fit the batch, or (``input_key=None``) the batch
            breaks the batch contract.
        UncacheableBatchError: the input is not one tensor (e.g. a tokenizer dict).

    Example:
        >>> input_location({"label": torch.zeros(2), "image": torch.zeros(2, 3)}, None)
        'image'
        >>> input_location([torch.zeros(2, 3), torch.zeros(2)], None), input_location(torch.zeros(2), 0)
        (0, None)
    """
    if isinstance(batch, torch.Tensor):
        return None
    if input_key is None:
        x = split_batch(batch, where).x
        keys = list(batch) if isinstance(batch, Mapping) else range(len(batch))
        location = next((key for key in keys if batch[key] is x), None)  # by identity, never by value
        if location is None or not isinstance(x, torch.Tensor):
            raise UncacheableBatchError(
                f"{where}: the batch input is a {type(x).__name__}, not one tensor (keys "
                f"{sorted(x) if isinstance(x, Mapping) else '-'}); only tensor inputs can be cached."
            )
        return location
    if isinstance(batch, Mapping):
        if input_key not in batch:
            raise ValueError(
                f"{where}(input_key={input_key!r}): the batch has keys {list(batch)}; name the key of "
                "the input, or pass input_key=None for the batch contract's rule."
            )
        return input_key
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        if not isinstance(input_key, int) or not -len(batch) <= input_key < len(batch):
            raise ValueError(
                f"{where}(input_key={input_key!r}): batches are sequences of {len(batch)} fields; "
                "pass the position of the input."
            )
        return input_key % len(batch)
    raise ValueError(f"{where} cannot find the input in a batch of type {type(batch).__name__}.")


def batch_input(batch: Any, location: int | str | None) -> Any:
    """The input of ``batch`` at ``location`` (see :func:`input_location`).

    Example:
        >>> batch_input((torch.ones(1), torch.zeros(1)), 0).tolist()
        [1.0]
    """
    return batch if location is None else batch[location]


@dataclass(frozen=True)
class SampleLayout:
    """How the data set's samples are shaped: their container and the input's place in it.

    Attributes:
        kind: the container of one sample (``tensor`` when the sample is the input).
        keys: the batch's field keys in order (positions or dict keys); ``()`` for tensors.
        input_key: the input's key among ``keys`` (``None`` for tensors).

    Example:
        >>> layout = SampleLayout.of(("img", 3), [torch.zeros(1, 2), torch.tensor([3])], None)
        >>> layout.samples([torch.ones(2)], [[torch.tensor(3)]])
        [(tensor([1., 1.]), tensor(3))]
    """

    kind: Literal["tensor", "tuple", "list", "dict"]
    keys: tuple[int | str, ...]
    input_key: int | str | None

    @classmethod
    def of(cls, sample: Any, batch: Any, input_key: InputKey, where: str = "FeatureCache") -> SampleLayout:
        """The layout of one raw ``sample`` and of the collated ``batch`` of such samples."""
        location = input_location(batch, input_key, where)
        if isinstance(batch, torch.Tensor):
            return cls("tensor", (), None)
        keys = tuple(batch) if isinstance(batch, Mapping) else tuple(range(len(batch)))
        kind: Literal["tuple", "list", "dict"] = (
            "dict" if isinstance(sample, Mapping) else "list" if isinstance(sample, list) else "tuple"
        )
        return cls(kind, keys, location)

    @property
    def other_keys(self) -> tuple[int | str, ...]:
        """The keys of the fields that are cached as they are (all but the input)."""
        return tuple(key for key in self.keys if key != self.input_key)

    def other_fields(self, batch: Any, where: str) -> list[torch.Tensor]:
        """The batch's non-input fields in :attr:`other_keys` order.

        Raises:
            UncacheableBatchError: a field is not a tensor.
        """
        fields = [batch[key] for key in self.other_keys]
        for key, value in zip(self.other_keys, fields, strict=True):
            if not isinstance(value, torch.Tensor):
                raise UncacheableBatchError(
                    f"FeatureCache: field {key!r} of the {where} batches is a {type(value).__name__}, "
                    "not a tensor; only tensor fields (labels, weights, ...) can be cached; return "
                    "tensors from the data set to use the cache."
                )
        return fields

    def samples(self, inputs: Sequence[Any], fields: Sequence[Sequence[torch.Tensor]]) -> list[Any]:
        """Samples in the data set's own shape: ``inputs[i]`` and ``fields[k][i]`` for sample ``i``."""
        if self.kind == "tensor":
            return list(inputs)
        columns: dict[int | str, Sequence[Any]] = dict(zip(self.other_keys, fields, strict=True))
        columns[self.input_key] = inputs  # type: ignore[index]
        rows = zip(*(columns[key] for key in self.keys), strict=True)
        if self.kind == "dict":
            return [dict(zip(self.keys, row, strict=True)) for row in rows]
        if self.kind == "list":
            return [list(row) for row in rows]
        return [tuple(row) for row in rows]
