"""Reading ``cat`` metric states: a list of batches before a DDP sync, one tensor after it."""

from __future__ import annotations

import torch
from torchmetrics.utilities import dim_zero_cat

__all__ = ["concatenated"]


def concatenated(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor | None:
    """All rows of a ``cat`` state as one tensor, or ``None`` when it holds none.

    Example:
        >>> concatenated([torch.zeros(2, 3), torch.ones(1, 3)]).shape
        torch.Size([3, 3])
        >>> concatenated([]) is None, concatenated(torch.zeros(4)).shape
        (True, torch.Size([4]))
    """
    if isinstance(state, list):
        return dim_zero_cat(state) if state else None
    return state if state.numel() else None
