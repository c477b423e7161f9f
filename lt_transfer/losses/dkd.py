"""DKD, decoupled knowledge distillation: target-class and non-target-class terms, weighted apart.

Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation" (CVPR 2022). With
:math:`p = \\operatorname{softmax}(z / T)` and :math:`t` the target class of an example, the
classic KD loss splits into

* **TCKD**, the binary KL divergence between the teacher's and the student's *target vs
  non-target* mass :math:`b = (p_t, 1 - p_t)`;
* **NCKD**, the KL divergence between their distributions over the *non-target* classes,
  :math:`\\hat p_i = p_i / (1 - p_t)` for :math:`i \\ne t`;

since :math:`\\mathrm{KD} = \\mathrm{TCKD} + (1 - p^{\\mathcal T}_t)\\,\\mathrm{NCKD}`, the NCKD term
is suppressed exactly where the teacher is confident. DKD weighs the two freely:

.. math::

    \\mathrm{DKD} = T^2 \\bigl(\\alpha\\, \\mathrm{KL}(b^{\\mathcal T} \\Vert b^{\\mathcal S})
        + \\beta\\, \\mathrm{KL}(\\hat p^{\\mathcal T} \\Vert \\hat p^{\\mathcal S})\\bigr),

averaged over the batch (``batchmean``, as :func:`~lt_transfer.losses.distillation.kd_loss`),
with the :math:`T^2` factor of Hinton et al. The paper uses :math:`\\alpha = 1`,
:math:`\\beta = 8`, :math:`T = 4` on CIFAR-100 (and a linear warm-up of the loss weight over
the first epochs, left to the caller). Examples without a label (``target == ignore_index``,
or ``target=None``) use the teacher's predicted class as their target, so DKD also runs on an
unlabelled transfer set. Everything is computed in float32 from log-probabilities.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lt_transfer.losses._float32 import float32
from lt_transfer.losses.distillation import KDReduction, _check_temperature

__all__ = ["DKDLoss", "DKDTerms", "dkd_loss", "dkd_terms"]


class DKDTerms(NamedTuple):
    """The parts of the DKD loss (see :func:`dkd_terms`), each already multiplied by ``T²``.

    Attributes:
        total: ``alpha * tckd + beta * nckd``.
        tckd: target-class term (binary KL), unweighted.
        nckd: non-target-class term (KL over the other classes), unweighted.

    Example:
        >>> terms = dkd_terms(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
        >>> terms.nckd.item()  # two classes: the non-target distribution is always (1,)
        0.0
    """

    total: torch.Tensor
    tckd: torch.Tensor
    nckd: torch.Tensor


def _check_weight(value: float, name: str, owner: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{owner}({name}={value!r}) must be a number >= 0 (the paper: alpha=1, beta=8).")


def _kl_rows(log_teacher: torch.Tensor, log_student: torch.Tensor) -> torch.Tensor:
    return F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(1)


def _binary_log_mass(scaled: torch.Tensor, is_target: torch.Tensor) -> torch.Tensor:
    """``(N, 2)`` log of (target mass, non-target mass), from the log-sum-exps (stable)."""
    total = scaled.logsumexp(1)
    target = scaled[is_target] - total
    rest = scaled.masked_fill(is_target, float("-inf")).logsumexp(1) - total
    return torch.stack([target, rest], 1)


def dkd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 1.0,
    beta: float = 8.0,
    reduction: KDReduction = "batchmean",
    ignore_index: int = -1,
    validate_args: bool = True,
) -> DKDTerms:
    """The DKD loss and its two terms; see :func:`dkd_loss` for the arguments (keyword-only here).

    Example:
        >>> terms = dkd_terms(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 2]))
        >>> float(terms.total), float(terms.tckd), float(terms.nckd)
        (0.0, 0.0, 0.0)
    """
    if validate_args:
        _check_temperature(temperature, "dkd_loss")
        _check_weight(alpha, "alpha", "dkd_loss")
        _check_weight(beta, "beta", "dkd_loss")
        if reduction not in ("batchmean", "sum", "none"):
            raise ValueError(f"dkd_loss(reduction={reduction!r}) must be 'batchmean', 'sum' or 'none'.")
        if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"dkd_loss: student logits {tuple(student_logits.shape)} and teacher logits "
                f"{tuple(teacher_logits.shape)} must both be (N, C) with the same C; map the teacher's "
                "classes onto the student's first (DistillationModule(class_mapping=...))."
            )
        if student_logits.shape[1] < 2:
            raise ValueError(
                f"dkd_loss needs num_classes >= 2 (a target class and at least one non-target class), "
                f"got logits of shape {tuple(student_logits.shape)}."
            )
        if target is not None and (target.ndim != 1 or len(target) != len(student_logits)):
            raise ValueError(
                f"dkd_loss: target {tuple(target.shape)} must be (N,) class indices for "
                f"{len(student_logits)} examples (ignore_index={ignore_index} for unlabelled ones)."
            )
    num_classes = student_logits.shape[1]
    student = float32(student_logits) / temperature
    teacher = float32(teacher_logits.detach()) / temperature
    predicted = teacher.argmax(1)
    labels = predicted if target is None else torch.where(target == ignore_index, predicted, target)
    if validate_args and bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(
            f"dkd_loss: target holds class indices outside [0, {num_classes}) (other than "
            f"ignore_index={ignore_index}); check the labels or the class mapping."
        )
    is_target = F.one_hot(labels, num_classes).bool()
    tckd = _kl_rows(_binary_log_mass(teacher, is_target), _binary_log_mass(student, is_target))
    shape = (len(labels), num_classes - 1)
    others_student = F.log_softmax(student[~is_target].reshape(shape), dim=1)
    others_teacher = F.log_softmax(teacher[~is_target].reshape(shape), dim=1)
    nckd = _kl_rows(others_teacher, others_student)
    tckd, nckd = tckd * temperature**2, nckd * temperature**2
    if reduction != "none":
        reduce = torch.sum if reduction == "sum" else torch.mean
        tckd, nckd = reduce(tckd), reduce(nckd)
    return DKDTerms(alpha * tckd + beta * nckd, tckd, nckd)


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    ignore_index: int = -1,
    reduction: KDReduction = "batchmean",
    validate_args: bool = True,
) -> torch.Tensor:
    """Decoupled KD: ``T² (alpha · TCKD + beta · NCKD)`` (Zhao et al., CVPR 2022).

    Args:
        student_logits: ``(N, C)`` student logits, ``C >= 2``.
        teacher_logits: ``(N, C)`` teacher logits; no gradient flows into them.
        target: ``(N,)`` class indices; ``ignore_index`` entries (or ``None`` for all) take the
            teacher's predicted class.
        alpha: weight of the target-class term (the paper: 1).
        beta: weight of the non-target-class term (the paper: 8 on CIFAR-100).
        temperature: softmax temperature ``T > 0`` (the paper: 4).
        ignore_index: label value of unlabelled examples.
        reduction: ``"batchmean"`` (mean over examples), ``"sum"`` or ``"none"`` (``(N,)``).
        validate_args: check shapes, arguments and label range.

    Returns:
        A float32 scalar, or ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: ``num_classes < 2``, mismatched shapes, negative weights, ``T <= 0``, or
            labels outside ``[0, C)``.

    Example:
        >>> from lt_transfer.losses.distillation import kd_loss
        >>> s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
        >>> dkd_loss(s, t, y, alpha=0.0, beta=0.0).item()
        0.0
        >>> # with alpha = 1 and beta = 1 - p_t(teacher), DKD is classic KD (per example):
        >>> p_t = (t / 4).softmax(1)[torch.arange(4), y]
        >>> terms = dkd_terms(s, t, y, reduction="none")
        >>> torch.allclose(terms.tckd + (1 - p_t) * terms.nckd, kd_loss(s, t, reduction="none"), atol=1e-5)
        True
    """
    return dkd_terms(
        student_logits,
        teacher_logits,
        target,
        temperature=temperature,
        alpha=alpha,
        beta=beta,
        reduction=reduction,
        ignore_index=ignore_index,
        validate_args=validate_args,
    ).total


class DKDLoss(nn.Module):
    """Module form of :func:`dkd_loss` (decoupled knowledge distillation).

    Args (keyword-only):
        temperature: softmax temperature ``T > 0``.
        alpha: weight of the target-class term.
        beta: weight of the non-target-class term.
        ignore_index: label value of unlabelled examples (they use the teacher's class).
        reduction: ``"batchmean"``, ``"sum"`` or ``"none"``.
        validate_args: check inputs on every call.

    Example:
        >>> loss_fn = DKDLoss(alpha=1.0, beta=8.0, temperature=4.0)
        >>> student = torch.randn(3, 4, requires_grad=True)
        >>> value = loss_fn(student, torch.randn(3, 4), torch.tensor([1, -1, 3]))
        >>> value.backward(); value.ndim, student.grad.shape
        (0, torch.Size([3, 4]))
    """

    def __init__(
        self,
        *,
        temperature: float = 4.0,
        alpha: float = 1.0,
        beta: float = 8.0,
        ignore_index: int = -1,
        reduction: KDReduction = "batchmean",
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        _check_temperature(temperature, "DKDLoss")
        _check_weight(alpha, "alpha", "DKDLoss")
        _check_weight(beta, "beta", "DKDLoss")
        if reduction not in ("batchmean", "sum", "none"):
            raise ValueError(f"DKDLoss(reduction={reduction!r}) must be 'batchmean', 'sum' or 'none'.")
        self.temperature = float(temperature)
        self.alpha, self.beta = float(alpha), float(beta)
        self.ignore_index = int(ignore_index)
        self.reduction: KDReduction = reduction
        self.validate_args = validate_args

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the DKD loss of the student toward the teacher."""
        return dkd_terms(
            student_logits,
            teacher_logits,
            target,
            temperature=self.temperature,
            alpha=self.alpha,
            beta=self.beta,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            validate_args=self.validate_args,
        ).total

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}"
