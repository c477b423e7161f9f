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
back; this costs about 0.4 ms per step for a ResNet-50 on one CPU core (159 BatchNorm buffers;
one fused copy on a GPU) and nothing under ``"warn"``. The test of the loss itself reads one
scalar per training step from the device (as the ``16-mixed`` GradScaler does); the inputs are
inspected only after a bad loss was found (checking every input on every step would cost
about 14 ms per 32×3×224×224 batch on one CPU core).
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
    first step, and one fused ``_foreach_copy_`` where torch has it); :meth:`restore` writes
    them back. Modules in eval mode (a frozen backbone, a teacher) are skipped: their buffers
    do not change. Which sub-modules hold buffers is looked up once per fit (:meth:`clear`
    forgets it); the buffers themselves are read at every step (``.to()`` replaces them).

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
        self.clear()

    def take(self, model: nn.Module) -> None:
        """Copy the current buffers of ``model``'s sub-modules that are in training mode."""
        if self._holders is None or self._model is not model:
            self._model = model
            self._holders = [
                (module, tuple(name for name, _ in module.named_buffers(recurse=False)))
                for module in model.modules()
            ]
            self._holders = [(module, names) for module, names in self._holders if names]
        buffers = [
            buffer
            for module, names in self._holders
            if module.training
            for buffer in (getattr(module, name) for name in names)
            if buffer is not None
        ]
        copies = [self._copies.get(id(b)) for b in buffers]  # same tensor object: same shape/device
        copies = [torch.empty_like(b) if c is None else c for b, c in zip(buffers, copies, strict=True)]
        _copy_all(copies, buffers)
        self._buffers, self._copies = buffers, {id(b): c for b, c in zip(buffers, copies, strict=True)}

    def restore(self) -> None:
        """Write the copies back (after a bad forward pass)."""
        with torch.no_grad():
            _copy_all(self._buffers, [self._copies[id(b)] for b in self._buffers])

    def clear(self) -> None:
        """Forget the copies and the module lookup (end of fit)."""
        self._model: nn.Module | None = None
        self._holders: list[tuple[nn.Module, tuple[str, ...]]] | None = None
        self._buffers: list[torch.Tensor] = []
        self._copies: dict[int, torch.Tensor] = {}


def _copy_all(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    if not targets:
        return
    foreach_copy = getattr(torch, "_foreach_copy_", None)  # one fused call where torch has it
    if foreach_copy is not None:
        foreach_copy(targets, sources)
        return
    for target, source in zip(targets, sources, strict=True):
        target.copy_(source)


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
