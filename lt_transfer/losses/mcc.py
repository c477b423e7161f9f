"""MCC, minimum class confusion: discourage target predictions split between two classes.

Jin, Wang, Long & Wang, "Minimum Class Confusion for Versatile Domain Adaptation" (ECCV 2020).
On unlabelled target logits :math:`Z \\in \\mathbb R^{B \\times C}`:

1. probability rescaling with a temperature :math:`T`:
   :math:`\\hat Y = \\operatorname{softmax}(Z / T)` (row-wise);
2. uncertainty reweighting with the entropy :math:`H_i` of row :math:`i` of :math:`\\hat Y`:
   :math:`W_{ii} = B\\,(1 + e^{-H_i}) / \\sum_{i'} (1 + e^{-H_{i'}})` (confident examples count
   more; the weights average to 1 and are detached);
3. class correlation :math:`C = \\hat Y^\\top W \\hat Y \\in \\mathbb R^{C \\times C}`;
4. category normalisation :math:`\\tilde C_{jj'} = C_{jj'} / \\sum_{j''} C_{j''j'}` (each column
   sums to 1, so large classes do not dominate);
5. the loss is the mean confusion between different classes,

.. math::

    L_{\\mathrm{MCC}} = \\frac{1}{C} \\sum_{j=1}^{C} \\sum_{j' \\ne j} \\bigl|\\tilde C_{jj'}\\bigr| .

It is 0 when every prediction is one-hot and lies in ``[0, 1]``. MCC works alone or added to
another domain-adaptation loss (DANN + MCC). Computed in float32 with autocast off.
"""

from __future__ import annotations

import torch
from torch import nn

from lt_transfer.losses._float32 import float32, no_autocast
from lt_transfer.losses.entropy import entropy_loss

__all__ = ["MCCLoss", "mcc_loss"]


def _check_temperature(temperature: float, owner: str) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(
            f"{owner}(temperature={temperature!r}) must be a number > 0 (1 is the plain softmax; "
            "MCC rescales with T > 1, e.g. 2.5)."
        )


def mcc_loss(logits: torch.Tensor, temperature: float = 2.5, validate_args: bool = True) -> torch.Tensor:
    """Minimum class confusion of ``(B, C)`` target logits (Jin et al., ECCV 2020).

    Args:
        logits: ``(B, C)`` classifier logits on target examples, ``C >= 2``.
        temperature: rescaling temperature ``T > 0``.
        validate_args: check the shape and the temperature.

    Returns:
        A float32 scalar in ``[0, 1]``.

    Raises:
        ValueError: logits that are not ``(B, C)`` with ``C >= 2`` and ``B >= 1``, or ``T <= 0``.

    Example:
        >>> mcc_loss(torch.tensor([[50.0, 0.0], [0.0, 50.0]]), temperature=1.0)  # one-hot: no confusion
        tensor(0.)
        >>> mcc_loss(torch.zeros(4, 2), temperature=1.0)  # every example split evenly
        tensor(0.5000)
    """
    if validate_args:
        _check_temperature(temperature, "mcc_loss")
        if logits.ndim != 2 or logits.shape[1] < 2 or len(logits) == 0:
            raise ValueError(
                f"mcc_loss: expected (B, C) logits with B >= 1 examples and C >= 2 classes, got "
                f"{tuple(logits.shape)}."
            )
    scaled = float32(logits) / temperature
    batch, num_classes = scaled.shape
    probs = scaled.softmax(1)
    certainty = 1.0 + torch.exp(-entropy_loss(scaled.detach(), "none", validate_args=False))
    weights = batch * certainty / certainty.sum()
    with no_autocast(probs):
        correlation = (probs * weights.unsqueeze(1)).T @ probs  # Ŷᵀ W Ŷ
    # a class no example gives any probability (underflow) has an all-zero column: keep it 0, not 0/0
    normalized = correlation / correlation.sum(0, keepdim=True).clamp_min(1e-12)
    return (normalized.sum() - normalized.diagonal().sum()) / num_classes


class MCCLoss(nn.Module):
    """Module form of :func:`mcc_loss` (minimum class confusion, Jin et al., ECCV 2020).

    Args:
        temperature: rescaling temperature ``T > 0``.
        validate_args: check inputs on every call.

    Example:
        >>> logits = torch.randn(8, 5, requires_grad=True)
        >>> value = MCCLoss()(logits)
        >>> value.backward(); 0 <= value.item() <= 1, logits.grad.shape
        (True, torch.Size([8, 5]))
    """

    def __init__(self, temperature: float = 2.5, validate_args: bool = True) -> None:
        super().__init__()
        _check_temperature(temperature, "MCCLoss")
        self.temperature = float(temperature)
        self.validate_args = validate_args

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Return the class confusion of the ``(B, C)`` target logits."""
        return mcc_loss(logits, self.temperature, self.validate_args)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
