"""The teacher-output cache of :class:`~lt_transfer.DistillationModule`: logits per sample index.

The teacher runs about once per sample instead of once per epoch. Valid only for a fixed,
*un-augmented* training set: at the first fully cached batch of every epoch the teacher is
re-run and its output compared with the cache; a mismatch (augmentation, changed data,
unstable indices) raises. The cache holds ``num_samples × num_classes`` float32 logits on
the model's device and grows as larger indices appear. A row with a NaN/Inf logit (a
sample with NaN pixels) is served but never kept, so it is recomputed each time it is
needed and never poisons a later epoch's check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from lt_transfer.batches import Input

__all__ = ["TeacherOutputCache"]

#: Relative and absolute tolerance of the per-epoch check, by the teacher's output dtype.
_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-3}
_LOW_PRECISION_TOLERANCE = 3e-2


def _rows(x: Input, mask: torch.Tensor) -> Input:
    """The rows of an input (a tensor or a tokenizer dict) where ``mask`` is true."""
    if isinstance(x, Mapping):
        return {key: value[mask] for key, value in x.items()}
    return x[mask]


class TeacherOutputCache:
    """Teacher logits stored per sample index, filled on first sight and checked once per epoch.

    Example:
        >>> calls = []
        >>> def teacher(x):
        ...     calls.append(len(x))
        ...     return x.sum(-1, keepdim=True).repeat(1, 3)
        >>> cache = TeacherOutputCache()
        >>> x, index = torch.ones(4, 2), torch.arange(4)
        >>> cache.lookup(x, index, teacher, epoch=0).shape
        torch.Size([4, 3])
        >>> _ = cache.lookup(x, index, teacher, epoch=1)  # cached: the teacher runs once to check
        >>> _ = cache.lookup(x, index, teacher, epoch=1)  # cached and checked this epoch
        >>> calls
        [4, 4]
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new ``fit`` may bring new data)."""
        self.logits: torch.Tensor | None = None
        self.filled: torch.Tensor | None = None
        self.verified_epoch = -1

    def _grow(self, size: int, width: int, device: torch.device) -> None:
        old_logits, old_filled = self.logits, self.filled
        size = max(size, 0 if old_logits is None else len(old_logits))
        self.logits = torch.zeros(size, width, dtype=torch.float32, device=device)
        self.filled = torch.zeros(size, dtype=torch.bool, device=device)
        if old_logits is not None and old_filled is not None:
            self.logits[: len(old_logits)] = old_logits
            self.filled[: len(old_filled)] = old_filled

    def lookup(
        self, x: Input, index: torch.Tensor, teacher: Callable[[Input], torch.Tensor], epoch: int
    ) -> torch.Tensor:
        """The teacher's logits for samples ``index`` with inputs ``x``, running it where needed.

        Args:
            x: the batch input (a tensor or a tokenizer dict).
            index: sample indices ``(N,)``.
            teacher: computes the logits of an input (frozen, no grad).
            epoch: the current epoch (the cache is checked against the teacher once per epoch).

        Raises:
            RuntimeError: the teacher's outputs for cached samples changed.
        """
        needed = int(index.max()) + 1
        if self.logits is None or self.filled is None or len(self.logits) < needed:
            logits = teacher(x)  # also gives the width
            self._grow(needed, logits.shape[-1], logits.device)
            assert self.logits is not None and self.filled is not None
            index = index.to(device=logits.device, dtype=torch.long)
            self.logits[index] = logits.float()
            self.filled[index] = torch.isfinite(logits).all(-1)
            return logits
        index = index.to(device=self.logits.device, dtype=torch.long)
        missing = ~self.filled[index]
        if bool(missing.any()):
            fresh = teacher(_rows(x, missing.to(_device_of(x, missing.device))))
            self.logits[index[missing]] = fresh.float()
            self.filled[index[missing]] = torch.isfinite(fresh).all(-1)
        elif self.verified_epoch != epoch:
            self.verified_epoch = epoch
            fresh = teacher(x)
            tolerance = _TOLERANCE.get(fresh.dtype, _LOW_PRECISION_TOLERANCE)
            cached = self.logits[index]
            if not torch.allclose(fresh.float(), cached, rtol=tolerance, atol=tolerance):
                error = float((fresh.float() - cached).abs().max())
                raise RuntimeError(
                    "DistillationModule(cache_teacher_outputs=True): the teacher's outputs for cached "
                    f"samples changed (max abs difference {error:.3g}): the training data is augmented, "
                    "changed, or its indices are not stable. Disable the cache for augmented data."
                )
        return self.logits[index]


def _device_of(x: Input, default: torch.device) -> torch.device:
    if isinstance(x, torch.Tensor):
        return x.device
    return next((v.device for v in x.values() if isinstance(v, torch.Tensor)), default)
