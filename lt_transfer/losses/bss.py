"""BSS, batch spectral shrinkage: damp the smallest singular values of the batch features.

Chen, Wang, Fu, Long & Wang, "Catastrophic Forgetting Meets Negative Transfer: Batch Spectral
Shrinkage for Safe Transfer Learning" (NeurIPS 2019). The spectral components of the
features with small singular values are the ones that transfer badly (they carry the
pretrained model's idiosyncrasies into the target task); BSS penalises the :math:`k` smallest
singular values of the batch feature matrix :math:`F \\in \\mathbb R^{N \\times D}`,

.. math::

    L_{\\mathrm{BSS}}(F) = \\eta \\sum_{i=1}^{k} \\sigma_{-i}^2 ,

with :math:`\\sigma_{-1} \\le \\sigma_{-2} \\le \\dots` the smallest singular values of
:math:`F` (uncentred, as in the paper). The paper uses :math:`\\eta = 0.001` and
:math:`k = 1`. The SVD runs in float32 with autocast off (``torch.linalg`` has no half
precision); the gradient is well defined while the singular values are distinct.
"""

from __future__ import annotations

import torch
from torch import nn

from lt_transfer.losses._float32 import float32, no_autocast

__all__ = ["BSSLoss", "bss_loss"]


def _check_k(k: int, owner: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{owner}(k={k!r}) must be an int >= 1 (the paper uses k=1).")


def _check_eta(eta: float, owner: str) -> None:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta >= 0:
        raise ValueError(f"{owner}(eta={eta!r}) must be a number >= 0 (the paper uses 0.001).")


def bss_loss(
    features: torch.Tensor, k: int = 1, eta: float = 0.001, validate_args: bool = True
) -> torch.Tensor:
    """``eta`` times the sum of the ``k`` smallest squared singular values of ``features (N, D)``.

    Args:
        features: ``(N, D)`` batch features (the backbone's pooled output).
        k: how many of the smallest singular values to shrink; must be below
            ``min(N, D)``, the number of singular values (shrinking all of them is a plain
            penalty on the feature norm, not BSS).
        eta: strength :math:`\\eta`.
        validate_args: check the shape and ``k``.

    Returns:
        A float32 scalar.

    Raises:
        ValueError: non-2-D features, ``k < 1``, or ``k >= min(N, D)`` (e.g. ``k`` at least the
            batch size).

    Example:
        >>> features = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # singular values 3, 1
        >>> bss_loss(features, k=1, eta=1.0)
        tensor(1.)
    """
    if validate_args:
        _check_k(k, "bss_loss")
        _check_eta(eta, "bss_loss")
        if features.ndim != 2:
            raise ValueError(
                f"bss_loss: expected (N, D) batch features, got shape {tuple(features.shape)}; pool or "
                "flatten the feature maps first."
            )
        if k >= min(features.shape):
            raise ValueError(
                f"bss_loss(k={k}) must be smaller than the number of singular values min(batch size, "
                f"width) = min{tuple(features.shape)} = {min(features.shape)}; use a larger batch or "
                "a smaller k (the paper uses k=1)."
            )
    x = float32(features)
    with no_autocast(x):
        singular_values = torch.linalg.svdvals(x)  # descending
        return eta * singular_values[-k:].pow(2).sum()


class BSSLoss(nn.Module):
    """Module form of :func:`bss_loss` (Chen et al., NeurIPS 2019).

    Args:
        k: number of smallest singular values to shrink (the paper: 1).
        eta: strength (the paper: 0.001).
        validate_args: check inputs on every call.

    Example:
        >>> loss_fn = BSSLoss(k=1, eta=1.0)
        >>> loss_fn(torch.tensor([[1.0, 1.0], [1.0, -1.0], [0.0, 0.0]]))  # singular values √2, √2
        tensor(2.0000)
    """

    def __init__(self, k: int = 1, eta: float = 0.001, validate_args: bool = True) -> None:
        super().__init__()
        _check_k(k, "BSSLoss")
        _check_eta(eta, "BSSLoss")
        self.k = k
        self.eta = float(eta)
        self.validate_args = validate_args

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return the BSS penalty of the ``(N, D)`` batch features."""
        return bss_loss(features, self.k, self.eta, self.validate_args)

    def extra_repr(self) -> str:
        return f"k={self.k}, eta={self.eta}"
