"""CORAL: align the second-order statistics of source and target features.

Deep CORAL (Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation",
ECCV 2016 workshops) penalises the distance between the feature covariances:

.. math::

    L_{\\mathrm{CORAL}} = \\frac{1}{4 d^2} \\lVert C_S - C_T \\rVert_F^2, \\qquad
    C = \\frac{1}{n - 1}\\Big(X^\\top X - \\frac1n (\\mathbf 1^\\top X)^\\top (\\mathbf 1^\\top X)\\Big),

for ``d``-dimensional features ``X`` with ``n`` rows. Half-precision inputs are promoted
to float32 and autocast is disabled inside, so the loss is computed in float32.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CORALLoss", "coral_loss", "covariance"]


def covariance(x: torch.Tensor) -> torch.Tensor:
    """Unbiased covariance ``(d, d)`` of the rows of ``x (n, d)``; needs ``n >= 2``.

    Example:
        >>> covariance(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
        tensor([[2., 4.],
                [4., 8.]])
    """
    if x.dim() != 2 or len(x) < 2:
        raise ValueError(f"covariance: expected a (n >= 2, d) tensor, got shape {tuple(x.shape)}.")
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    with torch.autocast(device_type=x.device.type, enabled=False):
        centred = x - x.mean(0, keepdim=True)
        return centred.T @ centred / (len(x) - 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor, validate_args: bool = True) -> torch.Tensor:
    """Deep CORAL loss ``||C_s - C_t||_F^2 / (4 d^2)`` between ``(m, d)`` and ``(n, d)`` features.

    Raises:
        ValueError: different widths, non-2-D inputs, or fewer than 2 rows in a domain.

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [2.0, 0.0]])  # variance 2 on the first axis
        >>> y = torch.tensor([[0.0, 0.0], [0.0, 2.0]])  # variance 2 on the second axis
        >>> coral_loss(x, y)  # (2² + 2²) / (4 · 2²)
        tensor(0.5000)
    """
    if validate_args:
        if source.dim() != 2 or target.dim() != 2:
            raise ValueError(
                f"coral_loss: expected 2-D (batch, features) tensors, got source {tuple(source.shape)} "
                f"and target {tuple(target.shape)}."
            )
        if source.shape[1] != target.shape[1]:
            raise ValueError(
                f"coral_loss: source features have width {source.shape[1]} but target features "
                f"have width {target.shape[1]}; use the same feature extractor for both domains."
            )
        if len(source) < 2 or len(target) < 2:
            raise ValueError(
                f"coral_loss needs at least 2 rows per domain for a covariance, got {len(source)} "
                f"source and {len(target)} target rows."
            )
    d = source.shape[1]
    diff = covariance(source) - covariance(target)
    return diff.pow(2).sum() / (4.0 * d * d)


class CORALLoss(nn.Module):
    """Module form of :func:`coral_loss` (Sun & Saenko 2016).

    Example:
        >>> CORALLoss()(torch.randn(8, 3), torch.randn(8, 3)).shape
        torch.Size([])
    """

    def __init__(self, validate_args: bool = True) -> None:
        super().__init__()
        self.validate_args = validate_args

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return coral_loss(source, target, self.validate_args)
