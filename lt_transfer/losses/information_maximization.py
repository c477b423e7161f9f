"""Information-maximisation loss: confident and diverse predictions (SHOT's objective).

SHOT (Liang, Hu & Feng, "Do We Really Need to Access the Source Data? Source Hypothesis
Transfer for Unsupervised Domain Adaptation", ICML 2020) trains the target feature extractor
so that each prediction is confident while the batch's predictions cover all classes:

.. math::

    \\mathcal L_{IM} = \\underbrace{\\frac1N \\sum_i H(p_i)}_{\\text{confidence}}
        - \\lambda\\, \\underbrace{H\\Bigl(\\frac1N \\sum_i p_i\\Bigr)}_{\\text{diversity}},

with :math:`H` the Shannon entropy and :math:`\\lambda` the diversity weight (1 in SHOT).
With :math:`\\lambda = 1` it is the negative of the metric
:func:`lt_transfer.metrics.information_maximization` (mutual information between inputs and
predicted labels), which this loss reuses for its entropies but keeps differentiable. The
diversity term alone stops the collapse to one confident class that entropy minimisation
allows. Computed in float32.
"""

from __future__ import annotations

import torch
from torch import nn

from lt_transfer.losses._float32 import float32
from lt_transfer.losses.entropy import entropy_loss
from lt_transfer.metrics.prediction_entropy import _entropy_rows

__all__ = ["InformationMaximizationLoss", "information_maximization_loss"]


def _check_weight(diversity_weight: float, owner: str) -> None:
    if isinstance(diversity_weight, bool) or not isinstance(diversity_weight, (int, float)):
        raise ValueError(f"{owner}(diversity_weight={diversity_weight!r}) must be a number (SHOT uses 1).")
    if not diversity_weight >= 0:
        raise ValueError(f"{owner}(diversity_weight={diversity_weight!r}) must be >= 0 (SHOT uses 1).")


def information_maximization_loss(
    logits: torch.Tensor, diversity_weight: float = 1.0, validate_args: bool = True
) -> torch.Tensor:
    """Mean prediction entropy minus ``diversity_weight`` times the entropy of the mean prediction.

    Args:
        logits: ``(N, C)`` classifier logits on target data.
        diversity_weight: :math:`\\lambda` (1 in SHOT; 0 leaves entropy minimisation).
        validate_args: check the shape and the weight.

    Returns:
        A float32 scalar in ``[-λ log C, log C]``; ``-log C`` at ``λ = 1`` for confident
        predictions spread evenly over the classes.

    Example:
        >>> diverse = torch.tensor([[20.0, 0.0], [0.0, 20.0]])
        >>> collapsed = torch.tensor([[20.0, 0.0], [20.0, 0.0]])
        >>> round(information_maximization_loss(diverse).item(), 4)  # -log 2
        -0.6931
        >>> round(information_maximization_loss(collapsed).item(), 4)
        0.0
    """
    if validate_args:
        _check_weight(diversity_weight, "information_maximization_loss")
    conditional = entropy_loss(logits, "mean", validate_args)
    marginal = _entropy_rows(float32(logits).softmax(1).mean(0, keepdim=True))[0]
    return conditional - diversity_weight * marginal


class InformationMaximizationLoss(nn.Module):
    """Module form of :func:`information_maximization_loss` (SHOT, Liang et al., ICML 2020).

    Args:
        diversity_weight: weight :math:`\\lambda` of the diversity (marginal entropy) term.
        validate_args: check inputs on every call.

    Example:
        >>> loss_fn = InformationMaximizationLoss()
        >>> loss_fn(torch.zeros(4, 3)).abs().item() < 1e-6  # uniform: log 3 - log 3
        True
    """

    def __init__(self, diversity_weight: float = 1.0, validate_args: bool = True) -> None:
        super().__init__()
        _check_weight(diversity_weight, "InformationMaximizationLoss")
        self.diversity_weight = float(diversity_weight)
        self.validate_args = validate_args

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Return the information-maximisation loss of the ``(N, C)`` logits."""
        return information_maximization_loss(logits, self.diversity_weight, self.validate_args)

    def extra_repr(self) -> str:
        return f"diversity_weight={self.diversity_weight}"
