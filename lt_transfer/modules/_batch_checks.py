"""What the data must look like for a classification module, and the messages when it does not.

Three checks, each chosen to cost (next to) nothing on the happy path:

* **label range**, every batch of every stage: :func:`label_range_problem` is one vectorised
  ``aminmax`` over the labels. The modules run it on the batch as the ``DataLoader`` yields
  it, still in host memory (``on_before_batch_transfer``), so it needs no device
  synchronisation; on a CPU tensor it costs about 2-3 µs per batch (32-256 labels).
  :func:`label_range_message` words the error (stage, batch index, loader, values, fix).
* **channel count**: :func:`explained_channel_errors` turns torch's convolution error
  (``expected input[2, 1, 32, 32] to have 3 channels, but got 1 channels instead``) about
  the *input* into one that names the fix (``channels=3`` on our DataModules, grey → RGB);
  nothing runs unless the forward pass already failed.
* **empty loaders**: :func:`empty_loader_message` reads the loop sizes the Trainer computed
  (``num_training_batches``, ``num_val_batches``, ``num_test_batches``) and names the loader
  that yields no batches, where Lightning only warns and a fit would finish without a step.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import Trainer

from lt_transfer.batches import Input

__all__ = [
    "LabelProblem",
    "empty_loader_message",
    "explained_channel_errors",
    "label_range_message",
    "label_range_problem",
]

#: At most this many distinct offending label values are quoted in an error.
_QUOTED_VALUES = 5
#: torch's message for a convolution whose input has the wrong channel count.
_CONV_CHANNELS = re.compile(
    r"expected input\[(?P<shape>[^\]]*)\] to have (?P<expected>\d+) channels, but got (?P<got>\d+) channels"
)


@dataclass(frozen=True)
class LabelProblem:
    """Labels of one batch outside ``[0, num_classes)``.

    Attributes:
        low: the smallest label of the batch (``ignore_index`` left out).
        high: the largest one.
        values: up to five distinct offending values, in increasing order.
        count: how many labels of the batch are out of range.
    """

    low: int
    high: int
    values: tuple[int, ...]
    count: int


def label_range_problem(
    y: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> LabelProblem | None:
    """The labels of ``y`` outside ``[0, num_classes)`` (``ignore_index`` allowed), or ``None``.

    One ``aminmax`` on the happy path; the offending values are gathered only when there are
    some. On a CUDA tensor it synchronises once (the modules call it on host tensors).

    Example:
        >>> label_range_problem(torch.tensor([0, 2, 1]), 3) is None
        True
        >>> label_range_problem(torch.tensor([0, 7, -1, 9]), 3, ignore_index=-1)
        LabelProblem(low=0, high=9, values=(7, 9), count=2)
    """
    labelled = y if ignore_index is None else y[y != ignore_index]
    if not labelled.numel():
        return None
    low, high = (int(v) for v in torch.aminmax(labelled))
    if low >= 0 and high < num_classes:
        return None
    bad = labelled[(labelled < 0) | (labelled >= num_classes)]
    values = tuple(int(v) for v in torch.unique(bad)[:_QUOTED_VALUES])
    return LabelProblem(low, high, values, int(bad.numel()))


def label_range_message(
    owner: str,
    problem: LabelProblem,
    num_classes: int,
    ignore_index: int | None = None,
    where: str = "",
) -> str:
    """The error for :class:`LabelProblem` ``problem``: where, which values, and the fix.

    Example:
        >>> problem = label_range_problem(torch.tensor([1, 5]), 3)
        >>> print(label_range_message("Model", problem, 3, where="train batch 4"))  # doctest: +ELLIPSIS
        Model has num_classes=3 but got labels in [1, 5] (train batch 4: 1 label(s) out of range, ...
    """
    unlabelled = "" if ignore_index is None else f" (unlabelled samples use ignore_index={ignore_index})"
    location = f"{where}: " if where else ""
    return (
        f"{owner} has num_classes={num_classes} but got labels in [{problem.low}, {problem.high}] "
        f"({location}{problem.count} label(s) out of range, values {list(problem.values)}); set "
        f"num_classes to the data's class count (at least {problem.high + 1}) or fix the labels so they "
        f"lie in [0, {num_classes - 1}]{unlabelled}."
    )


@contextmanager
def explained_channel_errors(owner: str, x: Input) -> Iterator[None]:
    """Re-raise torch's convolution channel error about the input ``x`` with the fix.

    Only an error about ``x`` itself (its channel count is the one the convolution got) is
    translated; anything else propagates unchanged.

    Raises:
        ValueError: the input has the wrong number of channels for the network.

    Example:
        >>> conv = torch.nn.Conv2d(3, 4, 3)
        >>> x = torch.zeros(2, 1, 8, 8)
        >>> with explained_channel_errors("Model", x):  # doctest: +ELLIPSIS
        ...     conv(x)
        Traceback (most recent call last):
        ...
        ValueError: Model: the network's first convolution expects 3-channel input but the batch has 1 ...
    """
    try:
        yield
    except RuntimeError as error:
        match = _CONV_CHANNELS.search(str(error))
        if match is None or not isinstance(x, torch.Tensor) or x.ndim < 3:
            raise
        expected, got = int(match["expected"]), int(match["got"])
        if x.shape[1] != got:
            raise  # an inner layer's mismatch: the network's own bug, not the data's
        raise ValueError(_channel_message(owner, expected, got, tuple(x.shape))) from error


def _channel_message(owner: str, expected: int, got: int, shape: tuple[int, ...]) -> str:
    head = (
        f"{owner}: the network's first convolution expects {expected}-channel input but the batch has "
        f"{got} channel(s) (input shape {shape}). "
    )
    if got == 1 and expected == 3:
        fix = (
            "Grey images into an RGB backbone: build the DataModule with channels=3 (e.g. "
            "DigitsDataModule(channels=3) repeats the grey channel), or repeat it in your transform "
            "(torchvision.transforms.Grayscale(num_output_channels=3), or x.expand(-1, 3, -1, -1))."
        )
    elif got == 3 and expected == 1:
        fix = (
            "RGB images into a grey-scale network: build the DataModule with channels=1, convert them "
            "(torchvision.transforms.Grayscale()), or build the network for 3 input channels."
        )
    else:
        fix = (
            f"Make the data's channel count match the network: convert the images to {expected} channels "
            f"(DataModule channels=...) or build the network for {got} input channels."
        )
    return head + fix


def empty_loader_message(
    owner: str, trainer: Trainer, stage: str, loader_name: Callable[[int], str | None] | None = None
) -> str | None:
    """Which loader of ``stage`` (``"train"``, ``"val"``, ``"test"``) yields no batches, or ``None``.

    A loader counts as empty when its length is 0 while its ``limit_<stage>_batches`` is not
    (``limit_val_batches=0`` switches validation off on purpose, which is no error; so does a
    data module whose ``val_dataloader()`` returns ``[]``, i.e. no validation loader at all).

    Args:
        owner: the module's name, for the message.
        trainer: the Trainer, after it set up the stage's data.
        stage: ``"train"``, ``"val"`` or ``"test"``.
        loader_name: name of evaluation loader ``i`` (``None``: unnamed).

    Example:
        >>> empty_loader_message("Model", Trainer(logger=False, enable_progress_bar=False,
        ...                                        enable_model_summary=False), "val") is None
        True
    """
    if stage == "train":
        return _empty_train_loader(owner, trainer)
    limit = trainer.limit_test_batches if stage == "test" else trainer.limit_val_batches
    counts = trainer.num_test_batches if stage == "test" else trainer.num_val_batches
    loaders = trainer.test_dataloaders if stage == "test" else trainer.val_dataloaders
    if limit == 0 or loaders is None or (isinstance(loaders, (list, tuple)) and not loaders):
        return None  # switched off on purpose, or no such loader at all (e.g. `val_dataloader()` -> [])
    empty = [index for index, count in enumerate(counts) if count == 0]
    if not empty:
        return None
    kind = "test" if stage == "test" else "validation"
    described = []
    for index in empty:
        name = loader_name(index) if loader_name is not None else None
        described.append(f"{kind} loader {index}" + (f" ({name!r})" if name else ""))
    return (
        f"{owner}: the {', '.join(described)} yields no batches (an empty dataset, or drop_last=True "
        f"with fewer samples than batch_size), so its metrics would silently be missing. Fix the data "
        f"(e.g. the split or file list), or remove the loader (limit_{stage}_batches=0 skips {kind} on "
        "purpose)."
    )


def _empty_train_loader(owner: str, trainer: Trainer) -> str | None:
    if trainer.limit_train_batches == 0:
        return None
    loaders = trainer.train_dataloader
    named: Sequence[tuple[str, Any]]
    if isinstance(loaders, Mapping):
        named = [(f"{key!r} training loader", loader) for key, loader in loaders.items()]
    elif isinstance(loaders, (list, tuple)):
        named = [(f"training loader {index}", loader) for index, loader in enumerate(loaders)]
    else:
        named = [("training loader", loaders)] if loaders is not None else []
    empty = [name for name, loader in named if _length(loader) == 0]
    if not empty and trainer.num_training_batches != 0:
        return None
    which = ", ".join(empty) if empty else "training loader"
    return (
        f"{owner}: the {which} yields no batches (an empty dataset, or drop_last=True with fewer samples "
        "than batch_size), so fit would finish without a single useful training step. Fix the training "
        "data (e.g. the split or file list)."
    )


def _length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None
