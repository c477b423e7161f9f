"""NCE: negative conditional entropy of the target labels given the source labels.

Tran, Nguyen & Hassner ("Transferability and Hardness of Supervised Classification Tasks",
ICCV 2019) label every target sample with the source classifier's hard prediction
:math:`z_i` and measure how much uncertainty about the target label :math:`y` remains:

.. math::
    \\mathrm{NCE} = -H(Y \\mid Z) = \\sum_{y, z} \\hat P(y, z) \\log \\frac{\\hat P(y, z)}{\\hat P(z)},

with :math:`\\hat P` the empirical joint distribution. It is at most 0 (0: the source label
determines the target label); higher is better. Like LEEP it needs the candidate's source
classification head.
"""

from __future__ import annotations

import torch

from lt_transfer.ranking._inputs import ArrayLike, as_features, as_labels

__all__ = ["nce"]


def _hard_predictions(source_preds: ArrayLike) -> torch.Tensor:
    preds = torch.as_tensor(source_preds).detach().cpu()
    if preds.dim() == 1 and not preds.dtype.is_floating_point and preds.dtype != torch.bool:
        return preds.long()
    if preds.dim() != 2:
        raise ValueError(
            f"nce: source_preds must be (N, C_s) source logits/probabilities or (N,) integer source "
            f"predictions, got shape {tuple(preds.shape)} and dtype {preds.dtype}."
        )
    return as_features(preds, "nce", "source_preds").argmax(dim=1)


def nce(source_preds: ArrayLike, labels: ArrayLike) -> float:
    """NCE of source predictions for target labels (higher is better).

    Args:
        source_preds: ``(N, C_s)`` source logits or probabilities (their argmax is used), or
            ``(N,)`` integer source-class predictions.
        labels: ``(N,)`` target class indices ``0..C-1``.

    Raises:
        ValueError: bad shapes, NaN/Inf, a single class, fewer samples than classes.

    Example:
        >>> import math
        >>> value = nce(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]))
        >>> math.isclose(value, -0.5 * math.log(2))  # z = 0 leaves one bit, z = 1 none
        True
    """
    z = _hard_predictions(source_preds)
    y, num_classes = as_labels(labels, len(z), "nce")
    _, z = torch.unique(z, return_inverse=True)
    joint = torch.zeros(int(z.max()) + 1, num_classes, dtype=torch.float64)
    joint.index_put_((z, y), torch.ones(len(y), dtype=torch.float64), accumulate=True)
    joint /= len(y)
    marginal = joint.sum(1, keepdim=True)
    nonzero = joint > 0
    return float((joint[nonzero] * torch.log(joint / marginal)[nonzero]).sum())
