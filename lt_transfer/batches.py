"""The one batch contract: how every module and callback of lt_transfer reads a batch.

A *batch* is what a ``DataLoader`` yields. Every LightningModule and callback of the package
reads it through :func:`split_batch` (one domain) or :func:`split_domain_batch` (source +
target), so the same batch works everywhere. Accepted forms:

* a tensor ``x`` (inputs only);
* a tuple or list ``(x,)``, ``(x, y)`` or ``(x, y, index)``;
* a dict (any ``Mapping``) whose input sits under one of :data:`INPUT_KEYS`
  (``"x"``, ``"input"``, ``"inputs"``, ``"image"``, ``"images"``), labels under one of
  :data:`LABEL_KEYS` (``"y"``, ``"label"``, ``"labels"``) and the sample index under one of
  :data:`INDEX_KEYS` (``"index"``, ``"idx"``), and optionally a second, strongly augmented
  view of the input under one of :data:`STRONG_VIEW_KEYS` (``"x_strong"``, ``"image_strong"``,
  ``"strong"``; self-training's weak/strong consistency reads it);
* a tokenizer dict (Hugging Face): when any of :data:`TOKENIZER_KEYS` (``"input_ids"``,
  ...) is present, the input is the dict of all remaining entries except labels and index.

Domain-adaptation training batches are ``{"source": <batch>, "target": <batch>}`` or a
``(source, target)`` pair of batches (:func:`split_domain_batch`).

The inputs of two batches are joined with :func:`concat_inputs` (tokenizer dicts of different
lengths are right-padded with zeros, attention mask 0) and split back with
:func:`slice_input`, so text and images go through the same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "INDEX_KEYS",
    "INPUT_KEYS",
    "LABEL_KEYS",
    "STRONG_VIEW_KEYS",
    "TOKENIZER_KEYS",
    "Batch",
    "Input",
    "batch_size",
    "concat_inputs",
    "input_to",
    "slice_input",
    "split_batch",
    "split_domain_batch",
]

#: Keys under which a dict batch may hold its input (the first one present is used).
INPUT_KEYS: tuple[str, ...] = ("x", "input", "inputs", "image", "images")
#: Keys under which a dict batch may hold its integer class labels.
LABEL_KEYS: tuple[str, ...] = ("y", "label", "labels")
#: Keys under which a dict batch may hold the sample indices (``(N,)`` integers).
INDEX_KEYS: tuple[str, ...] = ("index", "idx")
#: Keys under which a dict batch may hold a second, strongly augmented view of its input.
STRONG_VIEW_KEYS: tuple[str, ...] = ("x_strong", "image_strong", "strong")
#: Keys that mark a Hugging Face tokenizer batch (the input is the whole dict minus labels/index).
TOKENIZER_KEYS: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids", "position_ids")

#: A model input: a tensor, or a dict of tensors (a tokenizer batch).
Input = torch.Tensor | Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Batch:
    """One domain's batch, read by the contract of this module.

    Attributes:
        x: the model input: a tensor or a tokenizer dict.
        y: integer class labels ``(N,)`` or ``None`` (unlabelled).
        index: sample indices ``(N,)`` or ``None``.
        strong: a second, strongly augmented view of the same samples (same kind as ``x``), or
            ``None``; only dict batches carry one (:data:`STRONG_VIEW_KEYS`).

    Example:
        >>> batch = split_batch((torch.zeros(2, 3), torch.tensor([0, 1])))
        >>> batch.x.shape, batch.y.tolist(), batch.index, len(batch)
        (torch.Size([2, 3]), [0, 1], None, 2)
    """

    x: Input
    y: torch.Tensor | None = None
    index: torch.Tensor | None = None
    strong: Input | None = None

    def __len__(self) -> int:
        return batch_size(self.x)


def _first_key(mapping: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    return next((key for key in keys if key in mapping), None)


def _check_tensor(value: Any, role: str, where: str) -> torch.Tensor | None:
    if value is None or isinstance(value, torch.Tensor):
        return value
    raise TypeError(
        f"{where}: the batch's {role} is a {type(value).__name__}; it must be a tensor. Return "
        "tensors from the data set (the default collate function stacks them)."
    )


def split_batch(batch: Any, where: str = "lt_transfer") -> Batch:
    """Read one domain's batch: input, labels and sample index (see the module docstring).

    Args:
        batch: a tensor, ``(x,)``, ``(x, y)``, ``(x, y, index)`` or a dict batch.
        where: who reads the batch, for error messages (e.g. ``"TransferClassifier"``).

    Raises:
        ValueError: a tuple with more than three fields, a dict without an input key.
        TypeError: an unsupported batch type, labels or index that are not tensors.

    Example:
        >>> split_batch({"image": torch.zeros(2, 1, 4, 4), "label": torch.tensor([1, 0])}).y.tolist()
        [1, 0]
        >>> text = split_batch({"input_ids": torch.ones(2, 5, dtype=torch.long),
        ...                     "attention_mask": torch.ones(2, 5), "labels": torch.tensor([0, 1])})
        >>> sorted(text.x), text.y.tolist()
        (['attention_mask', 'input_ids'], [0, 1])
        >>> split_batch({"x": torch.zeros(2, 3), "x_strong": torch.ones(2, 3)}).strong.sum().item()
        6.0
    """
    if isinstance(batch, torch.Tensor):
        return Batch(batch)
    if isinstance(batch, (list, tuple)):
        if not 1 <= len(batch) <= 3:
            raise ValueError(
                f"{where}: a batch tuple has {len(batch)} fields; expected (x,), (x, y) or (x, y, index). "
                "Put extra fields in a dict batch."
            )
        fields = [*batch, None, None]
        return Batch(
            fields[0],
            _check_tensor(fields[1], "labels (field 1)", where),
            _check_tensor(fields[2], "index (field 2)", where),
        )
    if isinstance(batch, Mapping):
        label_key = _first_key(batch, LABEL_KEYS)
        index_key = _first_key(batch, INDEX_KEYS)
        y = _check_tensor(batch[label_key], f"labels ({label_key!r})", where) if label_key else None
        index = _check_tensor(batch[index_key], f"index ({index_key!r})", where) if index_key else None
        strong_key = _first_key(batch, STRONG_VIEW_KEYS)
        strong = batch[strong_key] if strong_key else None
        if _first_key(batch, TOKENIZER_KEYS) is not None:
            others = (*LABEL_KEYS, *INDEX_KEYS, *STRONG_VIEW_KEYS)
            return Batch({k: v for k, v in batch.items() if k not in others}, y, index, strong)
        input_key = _first_key(batch, INPUT_KEYS)
        if input_key is None:
            raise ValueError(
                f"{where}: a dict batch needs its input under one of {list(INPUT_KEYS)} (or tokenizer "
                f"keys such as 'input_ids'); got keys {list(batch)}. Rename the input key."
            )
        return Batch(batch[input_key], y, index, strong)
    raise TypeError(
        f"{where}: unsupported batch type {type(batch).__name__}; yield a tensor, a tuple "
        "(x, y[, index]) or a dict (see lt_transfer.batches)."
    )


def split_domain_batch(batch: Any, where: str = "lt_transfer") -> tuple[Batch, Batch]:
    """Read a domain-adaptation training batch: ``(source, target)``.

    Args:
        batch: ``{"source": <batch>, "target": <batch>}`` or a ``(source, target)`` pair.
        where: who reads the batch, for error messages.

    Raises:
        ValueError: missing ``source``/``target`` keys or a batch of another shape.

    Example:
        >>> source, target = split_domain_batch(
        ...     {"source": (torch.zeros(4, 2), torch.arange(4)), "target": [torch.ones(3, 2)]})
        >>> len(source), len(target), target.y is None
        (4, 3, True)
    """
    if isinstance(batch, Mapping):
        if "source" not in batch or "target" not in batch:
            raise ValueError(
                f"{where}: a domain-adaptation training batch needs 'source' and 'target' keys, got keys "
                f"{sorted(batch)}; use DomainAdaptationDataModule or CombinedLoader({{'source': ..., "
                "'target': ...}})."
            )
        source, target = batch["source"], batch["target"]
    elif isinstance(batch, (list, tuple)) and len(batch) == 2:
        source, target = batch
    else:
        raise ValueError(
            f"{where}: expected {{'source': (x, y), 'target': x}} or ((x, y), x) training batches, got "
            f"{type(batch).__name__}."
        )
    return split_batch(source, where), split_batch(target, where)


def batch_size(x: Input) -> int:
    """Number of samples of an input (a tensor or a tokenizer dict).

    Example:
        >>> batch_size({"input_ids": torch.zeros(3, 7)}), batch_size(torch.zeros(5, 2))
        (3, 5)
    """
    if isinstance(x, torch.Tensor):
        return len(x)
    if isinstance(x, Mapping):
        for value in x.values():
            if isinstance(value, torch.Tensor):
                return len(value)
        raise ValueError(f"batch_size: the input dict has no tensor entry (keys {list(x)}).")
    raise TypeError(f"batch_size: unsupported input type {type(x).__name__}.")


def concat_inputs(first: Input, second: Input) -> Input:
    """Join two inputs along the batch dimension (source + target in one forward pass).

    Tokenizer dicts of different sequence lengths are right-padded with zeros (the padded
    positions have ``attention_mask`` 0, so what id they hold does not matter).

    Raises:
        ValueError: inputs of different kinds, shapes or keys.

    Example:
        >>> a = {"input_ids": torch.ones(1, 2, dtype=torch.long), "attention_mask": torch.ones(1, 2)}
        >>> b = {"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4)}
        >>> joined = concat_inputs(a, b)
        >>> joined["input_ids"].shape, joined["attention_mask"][0].tolist()
        (torch.Size([3, 4]), [1.0, 1.0, 0.0, 0.0])
    """
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor):
        if first.shape[1:] != second.shape[1:]:
            raise ValueError(
                f"concat_inputs: inputs of shapes {tuple(first.shape[1:])} and {tuple(second.shape[1:])} "
                "per sample cannot share one forward pass; both domains must have the same input shape."
            )
        return torch.cat([first, second])
    if isinstance(first, Mapping) and isinstance(second, Mapping):
        if set(first) != set(second):
            raise ValueError(
                f"concat_inputs: input dicts with different keys {sorted(first)} vs {sorted(second)}."
            )
        joined = {}
        for key in first:
            a, b = first[key], second[key]
            if a.ndim >= 2 and b.ndim >= 2 and a.shape[1] != b.shape[1]:
                length = max(a.shape[1], b.shape[1])
                a = _pad_sequence(a, length)
                b = _pad_sequence(b, length)
            joined[key] = torch.cat([a, b])
        return joined
    raise ValueError(
        f"concat_inputs: cannot join a {type(first).__name__} input with a {type(second).__name__} input."
    )


def _pad_sequence(value: torch.Tensor, length: int) -> torch.Tensor:
    pad = [0, 0] * (value.ndim - 2) + [0, length - value.shape[1]]
    return F.pad(value, pad, value=0)


def slice_input(x: Input, start: int, stop: int) -> Input:
    """Rows ``start:stop`` of an input (a tensor or a tokenizer dict).

    Example:
        >>> slice_input({"input_ids": torch.arange(6).view(3, 2)}, 1, 3)["input_ids"].tolist()
        [[2, 3], [4, 5]]
    """
    if isinstance(x, torch.Tensor):
        return x[start:stop]
    return {key: value[start:stop] for key, value in x.items()}


def input_to(x: Input, device: torch.device | str) -> Input:
    """Move an input (a tensor or a tokenizer dict) to ``device``.

    Example:
        >>> input_to({"input_ids": torch.zeros(1, 2)}, "cpu")["input_ids"].device.type
        'cpu'
    """
    if isinstance(x, torch.Tensor):
        return x.to(device)
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in x.items()}
