"""Batch nuclear-norm (BNM): discriminable *and* diverse predictions, as a validator or a loss.

Cui, Wang, Zhuo, Li, Huang & Tian ("Towards Discriminability and Diversity: Batch
Nuclear-norm Maximization under Label Insufficient Situations", CVPR 2020) show that the
nuclear norm of the ``(N, C)`` prediction matrix :math:`P` (rows are softmax outputs) grows
both with confidence (discriminability) and with the rank of :math:`P`, i.e. the number of
classes predicted (diversity):

.. math::
    \\mathrm{BNM} = \\frac{1}{N} \\lVert P \\rVert_* = \\frac{1}{N} \\sum_k \\sigma_k(P)
    = \\frac{1}{N} \\operatorname{tr} \\sqrt{P^\\top P}.

As a validator (:func:`batch_nuclear_norm`, :class:`BatchNuclearNorm`) higher is better
(``mode="max"``); the value depends on :math:`N` (confident balanced predictions give
:math:`\\sqrt{C/N}`), so compare checkpoints on the same target set. As a training loss
(:func:`bnm_loss`, :class:`BNMLoss`) it is negated and minimised on target batches.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric

from lt_transfer.metrics._checks import check_enough_samples
from lt_transfer.metrics.prediction_entropy import probabilities

__all__ = ["BNMLoss", "BatchNuclearNorm", "batch_nuclear_norm", "bnm_loss"]


def batch_nuclear_norm(
    preds: torch.Tensor, from_logits: bool = True, validate_args: bool = True
) -> torch.Tensor:
    """Nuclear norm of the ``(N, C)`` probability matrix divided by ``N`` (higher is better).

    Computed in float64 on detached inputs (a validator); :func:`bnm_loss` is the
    differentiable training twin.

    Args:
        preds: ``(N, C)`` logits, or probabilities with ``from_logits=False``.
        from_logits: apply a softmax first.
        validate_args: check the shape and that ``N >= C``.

    Raises:
        ValueError: on a non-``(N, C)`` input or fewer samples than classes.

    Example:
        >>> p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
        >>> batch_nuclear_norm(p, from_logits=False)  # (sqrt(1.5) + 1) / 3
        tensor(0.7416)
    """
    probs = probabilities(preds, from_logits, validate_args)
    if validate_args:
        check_enough_samples(len(probs), probs.shape[1], "batch_nuclear_norm")
    return (torch.linalg.svdvals(probs.double()).sum() / len(probs)).float()


def bnm_loss(logits: torch.Tensor, validate_args: bool = True) -> torch.Tensor:
    """Training loss ``-||softmax(logits)||_* / N`` of BNM (differentiable; minimise it).

    Any batch size works (the paper trains with fewer samples than classes on Office-Home).
    Half-precision inputs are promoted to float32 with autocast disabled (an SVD needs it).

    Args:
        logits: ``(N, C)`` classifier logits on a target batch.
        validate_args: check the shape.

    Raises:
        ValueError: on a non-``(N, C)`` input.

    Example:
        >>> logits = torch.zeros(4, 3, requires_grad=True)
        >>> loss = bnm_loss(logits)
        >>> loss.backward()
        >>> round(loss.item(), 4), logits.grad.shape  # uniform predictions: rank 1, -sqrt(4/3)/4
        (-0.2887, torch.Size([4, 3]))
    """
    if validate_args and (logits.dim() != 2 or logits.shape[1] < 2):
        raise ValueError(
            f"bnm_loss: expected (N, C) logits with C >= 2 classes, got shape {tuple(logits.shape)}."
        )
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return -torch.linalg.svdvals(logits.softmax(dim=1)).sum() / len(logits)


class BNMLoss(nn.Module):
    """Module form of :func:`bnm_loss` (Cui et al. 2020).

    Example:
        >>> BNMLoss()(torch.randn(8, 3)).shape
        torch.Size([])
    """

    def __init__(self, validate_args: bool = True) -> None:
        super().__init__()
        self.validate_args = validate_args

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return bnm_loss(logits, self.validate_args)


class BatchNuclearNorm(Metric):
    """BNM of all target predictions of a validation epoch (no labels; higher is better).

    Keeps the ``(C, C)`` Gram matrix :math:`P^\\top P` (float64, summed across processes),
    whose eigenvalues are the squared singular values of :math:`P`: the epoch value equals
    :func:`batch_nuclear_norm` on all samples at once, exactly under DDP, in
    :math:`O(C^2)` memory.

    Args:
        num_classes: number of classes ``C`` (fixes the state shape).
        from_logits: inputs are logits rather than probabilities.
        validate_args: check input shapes.

    Raises:
        ValueError: ``num_classes < 2``, a batch with another class count, or (at
            ``compute``) fewer target samples than classes.

    Example:
        >>> metric = BatchNuclearNorm(num_classes=2, from_logits=False)
        >>> metric.update(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        >>> metric.update(torch.tensor([[0.5, 0.5]]))
        >>> metric.compute()
        tensor(0.7416)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self, num_classes: int, from_logits: bool = True, validate_args: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"BatchNuclearNorm(num_classes={num_classes!r}) must be an int >= 2.")
        self.num_classes = num_classes
        self.from_logits = from_logits
        self.validate_args = validate_args
        self.add_state(
            "gram", torch.zeros(num_classes, num_classes, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor) -> None:
        """Add a batch of ``(N, C)`` target logits (or probabilities)."""
        probs = probabilities(preds, self.from_logits, self.validate_args).double()
        if self.validate_args and probs.shape[1] != self.num_classes:
            raise ValueError(
                f"BatchNuclearNorm(num_classes={self.num_classes}) got predictions with {probs.shape[1]} "
                "classes; set num_classes to the classifier's output width."
            )
        self.gram += probs.T @ probs
        self.total += len(probs)

    def compute(self) -> torch.Tensor:
        """``sum_k sqrt(eig_k(P^T P)) / N``; NaN when nothing was seen."""
        if self.total == 0:
            return torch.tensor(float("nan"))
        check_enough_samples(int(self.total), self.num_classes, "BatchNuclearNorm")
        eigenvalues = torch.linalg.eigvalsh(self.gram).clamp_min(0.0)
        return (eigenvalues.sqrt().sum() / self.total).float()
