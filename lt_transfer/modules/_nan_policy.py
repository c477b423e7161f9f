"""What a classification module does with a non-finite training loss (``nan_policy``).

One NaN pixel is enough to turn every weight into NaN in a single optimizer step, and a
checkpoint then saves them. The modules therefore test each training loss before it is
logged or back-propagated, and follow their ``nan_policy``:

* ``"raise"`` (default): raise :class:`NonFiniteLossError` naming the batch and what was
  non-finite: an input tensor, the labels, or the model's output from finite inputs;
* ``"skip_batch"``: no backward pass and no optimizer step for that batch (on one device,
  ``training_step`` returns ``None``, so gradients accumulated from the other batches of an
  accumulation window are kept and the ``16-mixed`` GradScaler is not touched; under DDP every
  rank takes the same decision and the window's gradients are dropped before the step);
  skipped batches are counted (``train/skipped_batches`` per epoch);
* ``"warn"``: warn and train on the batch as it is (e.g. with your own handling of it).

Under ``"raise"`` and ``"skip_batch"`` the forward pass of a bad batch leaves no trace: the
buffers of the modules in training mode (BatchNorm running statistics) are copied before each
training forward (:class:`BufferSnapshot`, a device-side copy, no synchronisation) and put
back. The test of the loss itself reads one scalar per training step from the device (as the
``16-mixed`` GradScaler does); the inputs are inspected only after a bad loss was found.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

from lt_transfer.batches import Input

__all__ = ["NAN_POLICIES", "BufferSnapshot", "NanPolicy", "NonFiniteLossError", "describe_non_finite"]

#: What to do with a non-finite training loss (see the module docstring).
NanPolicy = Literal["raise", "skip_batch", "warn"]
NAN_POLICIES: tuple[str, ...] = ("raise", "skip_batch", "warn")


class NonFiniteLossError(FloatingPointError):
    """A training loss was NaN or infinite under ``nan_policy="raise"``.

    Example:
        >>> issubclass(NonFiniteLossError, ArithmeticError)
        True
    """


class BufferSnapshot:
    """Copies of the buffers of the sub-modules in training mode, to undo one forward pass.

    :meth:`take` copies (into tensors it keeps between calls, so no allocation after the
    first step); :meth:`restore` writes them back. Modules in eval mode (a frozen backbone, a
    teacher) are skipped: their buffers do not change.

    Example:
        >>> bn = nn.BatchNorm1d(2)
        >>> snapshot = BufferSnapshot()
        >>> snapshot.take(bn)
        >>> _ = bn(torch.full((4, 2), float("nan")))
        >>> bool(bn.running_mean.isnan().any())
        True
        >>> snapshot.restore()
        >>> bn.running_mean.tolist(), int(bn.num_batches_tracked)
        ([0.0, 0.0], 0)
    """

    def __init__(self) -> None:
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._copies: dict[int, torch.Tensor] = {}

    def take(self, model: nn.Module) -> None:
        """Copy the current buffers of ``model``'s sub-modules that are in training mode."""
        pairs = []
        copies: dict[int, torch.Tensor] = {}
        for module in model.modules():
            if not module.training:
                continue
            for buffer in module.buffers(recurse=False):
                copy = self._copies.get(id(buffer))
                if copy is None or copy.shape != buffer.shape or copy.device != buffer.device:
                    copy = torch.empty_like(buffer)
                copy.copy_(buffer)
                copies[id(buffer)] = copy
                pairs.append((buffer, copy))
        self._pairs, self._copies = pairs, copies

    def restore(self) -> None:
        """Write the copies back (after a bad forward pass)."""
        with torch.no_grad():
            for buffer, copy in self._pairs:
                buffer.copy_(copy)

    def clear(self) -> None:
        """Forget the copies (end of fit)."""
        self._pairs, self._copies = [], {}


def _tensors(value: Input | None, name: str) -> list[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        return [(name, value)]
    if isinstance(value, Mapping):
        return [(f"{name}[{key!r}]", v) for key, v in value.items() if isinstance(v, torch.Tensor)]
    return []


def describe_non_finite(parts: Mapping[str, Input | None], model: nn.Module | None = None) -> str:
    """Say which of ``parts`` (name → input tensor, tokenizer dict or labels) holds NaN/Inf.

    When none does, the model made the loss non-finite from finite data; the message then
    says whether its parameters were already non-finite. Called only on the error path, so
    it may look at every element.

    Example:
        >>> x = torch.zeros(4, 3); x[2, 1] = float("nan")
        >>> describe_non_finite({"input": x, "labels": torch.tensor([0, 1, 0, 1])})
        'input has 1 NaN and 0 Inf value(s) (samples [2])'
        >>> describe_non_finite({"input": torch.zeros(2, 3)})[:72]
        'the inputs and labels are finite: the model produced the non-finite loss'
    """
    found = []
    for part, value in parts.items():
        for name, tensor in _tensors(value, part):
            if not (tensor.is_floating_point() or tensor.is_complex()):
                continue
            finite = torch.isfinite(tensor)
            if bool(finite.all()):
                continue
            nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
            rows = (~finite).reshape(len(tensor), -1).any(-1) if tensor.ndim else finite.new_ones(1)
            samples = rows.nonzero().flatten()[:5].tolist()
            found.append(f"{name} has {nan} NaN and {inf} Inf value(s) (samples {samples})")
    if found:
        return "; ".join(found)
    if model is not None and any(not bool(torch.isfinite(p).all()) for p in model.parameters()):
        return (
            "the inputs and labels are finite but the model's parameters already are not (an earlier step "
            "trained on a non-finite loss, e.g. with nan_policy='warn', or the weights were loaded so)"
        )
    return (
        "the inputs and labels are finite: the model produced the non-finite loss (a learning rate too "
        "high, an overflow under '16-mixed' precision (try 'bf16-mixed'), or a log/division by zero in "
        "the loss)"
    )
