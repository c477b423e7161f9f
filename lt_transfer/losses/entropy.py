"""Entropy minimisation: the differentiable mean prediction entropy (TENT's objective).

TENT (Wang, Shelhamer, Liu, Olshausen & Darrell, "Tent: Fully Test-Time Adaptation by
Entropy Minimization", ICLR 2021) adapts a trained classifier at test time by minimising the
Shannon entropy of its predictions, updating only the BatchNorm affine parameters; the idea
goes back to Grandvalet & Bengio ("Semi-supervised Learning by Entropy Minimization",
NeurIPS 2004):

.. math::

    H = -\\frac1N \\sum_{i=1}^{N} \\sum_{c=1}^{C} p_{ic} \\log p_{ic}, \\qquad
    p_i = \\operatorname{softmax}(z_i).

This is the loss twin of the metric :func:`lt_transfer.metrics.prediction_entropy` (which
detaches); it is computed from ``log_softmax`` in float32, so confident predictions never take
``log 0`` and keep finite gradients. The per-example entropies (``reduction="none"``) are also what
CDAN+E and MCC use for their example weights.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lt_transfer.losses._float32 import float32

__all__ = ["EntropyLoss", "EntropyReduction", "entropy_loss"]

EntropyReduction = Literal["mean", "sum", "none"]


def entropy_loss(
    logits: torch.Tensor, reduction: EntropyReduction = "mean", validate_args: bool = True
) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits)`` per row, reduced over the batch.

    Args:
        logits: ``(N, C)`` classifier logits.
        reduction: ``"mean"`` (TENT's loss), ``"sum"``, or ``"none"`` for the ``(N,)`` entropies.
        validate_args: check the shape and the reduction.

    Returns:
        A float32 scalar, or ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: logits that are not ``(N, C)`` with ``C >= 2``, or an unknown reduction.

    Example:
        >>> logits = torch.tensor([[0.0, 0.0], [100.0, 0.0]])  # log 2, and ~0
        >>> entropy_loss(logits, reduction="none").round(decimals=4)
        tensor([0.6931, 0.0000])
    """
    if validate_args:
        if logits.ndim != 2 or logits.shape[1] < 2:
            raise ValueError(
                f"entropy_loss: expected (N, C) logits with C >= 2 classes, got {tuple(logits.shape)}."
            )
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"entropy_loss(reduction={reduction!r}) must be 'mean', 'sum' or 'none'.")
    log_p = F.log_softmax(float32(logits), dim=1)
    per_row = -(log_p.exp() * log_p).sum(1)
    if reduction == "none":
        return per_row
    return per_row.sum() if reduction == "sum" else per_row.mean()


class EntropyLoss(nn.Module):
    """Module form of :func:`entropy_loss` (TENT, Wang et al., ICLR 2021).

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check inputs on every call.

    Example:
        >>> logits = torch.zeros(3, 4, requires_grad=True)
        >>> value = EntropyLoss()(logits)
        >>> round(value.item(), 4), value.requires_grad  # log 4: uniform predictions
        (1.3863, True)
    """

    def __init__(self, reduction: EntropyReduction = "mean", validate_args: bool = True) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"EntropyLoss(reduction={reduction!r}) must be 'mean', 'sum' or 'none'.")
        self.reduction: EntropyReduction = reduction
        self.validate_args = validate_args

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Return the entropy of the ``(N, C)`` logits' softmax, reduced."""
        return entropy_loss(logits, self.reduction, self.validate_args)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
