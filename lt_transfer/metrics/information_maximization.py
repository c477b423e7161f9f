"""Information maximisation: confident *and* diverse predictions, without labels.

The mutual information between inputs and predicted labels,

.. math::
    I = H\\Big(\\frac{1}{N}\\sum_i p_i\\Big) - \\frac{1}{N}\\sum_i H(p_i),

is high when each prediction is confident (low conditional entropy) while the predicted
classes are spread over all classes (high marginal entropy). It was introduced as a
discriminative clustering objective by Krause, Perona & Gomes ("Discriminative Clustering
by Regularized Information Maximization", NeurIPS 2010) and is the source-free domain
adaptation objective of SHOT (Liang, Hu & Feng, "Do We Really Need to Access the Source
Data?", ICML 2020). As a validation signal it catches the failure that entropy alone
rewards: a collapsed model that confidently predicts one class everywhere. Higher is
better; the maximum is :math:`\\log C` (or 1 with ``normalize=True``).
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

from lt_transfer.metrics.prediction_entropy import _entropy_rows, probabilities

__all__ = ["InformationMaximization", "information_maximization"]


def information_maximization(
    preds: torch.Tensor, from_logits: bool = True, normalize: bool = False, validate_args: bool = True
) -> torch.Tensor:
    """Marginal entropy minus mean conditional entropy of ``(N, C)`` predictions (nats).

    Args:
        preds: ``(N, C)`` logits, or probabilities with ``from_logits=False``.
        from_logits: apply a softmax first.
        normalize: divide by :math:`\\log C` (values in ``[0, 1]``).
        validate_args: check the shape.

    Example:
        >>> confident_diverse = torch.tensor([[10.0, -10.0], [-10.0, 10.0]])
        >>> collapsed = torch.tensor([[10.0, -10.0], [10.0, -10.0]])
        >>> information_maximization(confident_diverse, normalize=True).item() > 0.99
        True
        >>> information_maximization(collapsed, normalize=True).abs().item() < 1e-6
        True
    """
    probs = probabilities(preds, from_logits, validate_args)
    value = _entropy_rows(probs.mean(dim=0, keepdim=True))[0] - _entropy_rows(probs).mean()
    return value / math.log(probs.shape[1]) if normalize else value


class InformationMaximization(Metric):
    """Information maximisation over a validation epoch (no labels; higher is better).

    Keeps the per-class sum of probabilities and the summed entropy, so the epoch value
    equals the functional on all samples at once and is exact under DDP.

    Args:
        num_classes: number of classes ``C`` (fixes the state shape).
        from_logits: inputs are logits rather than probabilities.
        normalize: divide by :math:`\\log C`.
        validate_args: check input shapes.

    Raises:
        ValueError: ``num_classes < 2``, or a batch with another class count.

    Example:
        >>> metric = InformationMaximization(num_classes=2, normalize=True)
        >>> metric.update(torch.tensor([[10.0, -10.0]]))
        >>> metric.update(torch.tensor([[-10.0, 10.0]]))
        >>> round(metric.compute().item(), 4)
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        from_logits: bool = True,
        normalize: bool = False,
        validate_args: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"InformationMaximization(num_classes={num_classes!r}) must be an int >= 2.")
        self.num_classes = num_classes
        self.from_logits = from_logits
        self.normalize = normalize
        self.validate_args = validate_args
        self.add_state("prob_sum", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("entropy_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor) -> None:
        """Add a batch of ``(N, C)`` logits (or probabilities)."""
        probs = probabilities(preds, self.from_logits, self.validate_args)
        if self.validate_args and probs.shape[1] != self.num_classes:
            raise ValueError(
                f"InformationMaximization(num_classes={self.num_classes}) got predictions with "
                f"{probs.shape[1]} classes; set num_classes to the classifier's output width."
            )
        self.prob_sum += probs.double().sum(dim=0)
        self.entropy_sum += _entropy_rows(probs).double().sum()
        self.total += probs.shape[0]

    def compute(self) -> torch.Tensor:
        """``H(mean p) - mean H(p)``; NaN when nothing was seen."""
        if self.total == 0:
            return torch.tensor(float("nan"))
        marginal = (self.prob_sum / self.total).unsqueeze(0)
        value = (_entropy_rows(marginal)[0] - self.entropy_sum / self.total).float()
        return value / math.log(self.num_classes) if self.normalize else value
