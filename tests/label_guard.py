"""Target labels that fail any test that reads them, and a loader of such ready-made batches."""

from __future__ import annotations

from typing import Any

import torch


class UntouchableLabels(torch.Tensor):
    """Labels a label-free method must never read: any torch operation on them raises.

    Only moving them between devices is allowed (Lightning moves whole batches).
    """

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if getattr(func, "__name__", "") == "to":
            return args[0]
        raise AssertionError(f"the target labels were read ({getattr(func, '__name__', func)})")


def untouchable_labels(n: int) -> torch.Tensor:
    """``n`` labels that raise when read (NaN inside, should anything get past the guard)."""
    return torch.full((n,), float("nan")).as_subclass(UntouchableLabels)


class ReadyBatches:
    """A loader that yields ready-made batches (labels that raise when read cannot be collated)."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __iter__(self) -> Any:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
