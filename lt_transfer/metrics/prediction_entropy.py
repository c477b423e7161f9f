"""Prediction entropy: a target-label-free confidence signal.

A model that transfers well tends to make confident predictions on the target domain;
the mean Shannon entropy of its predictive distribution on unlabelled target data is the
signal that entropy minimisation (Grandvalet & Bengio, "Semi-supervised Learning by
Entropy Minimization", NeurIPS 2004) optimises and that unsupervised model selection for
domain adaptation uses (Morerio et al., "Minimal-Entropy Correlation Alignment", ICLR 2018).
Lower is better. It is only a proxy: a model can be confidently wrong, so pair it with
:class:`~lt_transfer.metrics.InformationMaximization`, which also rewards diverse predictions.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

__all__ = ["PredictionEntropy", "prediction_entropy", "probabilities"]


def probabilities(preds: torch.Tensor, from_logits: bool = True, validate_args: bool = True) -> torch.Tensor:
    """Turn ``(N, C)`` logits (or probabilities) into float32 probabilities.

    Raises:
        ValueError: on a tensor that is not ``(N, C)`` with ``C >= 2``.

    Example:
        >>> probabilities(torch.tensor([[0.0, 0.0]]))
        tensor([[0.5000, 0.5000]])
    """
    if validate_args and (preds.dim() != 2 or preds.shape[1] < 2):
        raise ValueError(
            f"expected predictions of shape (N, C) with C >= 2 classes, got {tuple(preds.shape)}; pass "
            "the classifier's logits (or probabilities with from_logits=False)."
        )
    preds = preds.detach().float()
    return preds.softmax(dim=-1) if from_logits else preds


def _entropy_rows(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1)


def prediction_entropy(
    preds: torch.Tensor, from_logits: bool = True, normalize: bool = False, validate_args: bool = True
) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the predicted class distributions.

    .. math::
        H = -\\frac{1}{N} \\sum_{i=1}^{N} \\sum_{c=1}^{C} p_{ic} \\log p_{ic}

    Args:
        preds: ``(N, C)`` logits, or probabilities with ``from_logits=False``.
        from_logits: apply a softmax first.
        normalize: divide by :math:`\\log C` so the value lies in ``[0, 1]``.
        validate_args: check the shape (switch off on hot paths).

    Example:
        >>> prediction_entropy(torch.tensor([[0.0, 0.0], [10.0, -10.0]]), normalize=True)
        tensor(0.5000)
    """
    probs = probabilities(preds, from_logits, validate_args)
    value = _entropy_rows(probs).mean()
    return value / math.log(probs.shape[1]) if normalize else value


class PredictionEntropy(Metric):
    """Mean prediction entropy over a validation epoch (no labels needed; lower is better).

    Accumulates sums, so it is exact under DDP (states are summed across processes) and
    cheap to keep. Log it from ``validation_step`` on the target loader and hand the name
    to ``ModelCheckpoint(monitor=..., mode="min")`` or ``EarlyStopping``.

    Args:
        from_logits: the inputs are logits (a softmax is applied) rather than probabilities.
        normalize: divide by :math:`\\log C` (values in ``[0, 1]``).
        validate_args: check input shapes.

    Example:
        >>> metric = PredictionEntropy(normalize=True)
        >>> metric.update(torch.tensor([[0.0, 0.0]]))
        >>> metric.update(torch.tensor([[10.0, -10.0]]))
        >>> metric.compute()
        tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(
        self, from_logits: bool = True, normalize: bool = False, validate_args: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.from_logits = from_logits
        self.normalize = normalize
        self.validate_args = validate_args
        self.add_state("entropy_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_classes", torch.tensor(0, dtype=torch.long), dist_reduce_fx="max")

    def update(self, preds: torch.Tensor) -> None:
        """Add a batch of ``(N, C)`` logits (or probabilities)."""
        probs = probabilities(preds, self.from_logits, self.validate_args)
        self.entropy_sum += _entropy_rows(probs).double().sum()
        self.total += probs.shape[0]
        self.num_classes.fill_(probs.shape[1])

    def compute(self) -> torch.Tensor:
        """Mean entropy; NaN when nothing was seen."""
        if self.total == 0:
            return torch.tensor(float("nan"))
        value = (self.entropy_sum / self.total).float()
        return value / math.log(int(self.num_classes)) if self.normalize else value
