"""Knowledge-distillation losses: temperature-scaled KL, the hard/soft mix, FitNets hints.

* :func:`kd_loss` / :class:`KDLoss`: Hinton, Vinyals & Dean, "Distilling the Knowledge in a
  Neural Network" (2015). The student matches the teacher's softened class distribution;
  the KL divergence is averaged over the *batch* (``batchmean``, the true KL per sample, not
  ``mean`` which also divides by the class count) and multiplied by :math:`T^2`, so the
  gradient magnitude does not shrink as the temperature grows.
* :func:`distillation_loss` / :class:`DistillationLoss`: ``alpha * CE + (1 - alpha) * KD``,
  where samples without a label (``target == ignore_index``) contribute to the soft term only
  (Hinton's *transfer set*).
* :func:`hint_loss` / :class:`HintLoss`: Romero et al., "FitNets: Hints for Thin Deep Nets"
  (ICLR 2015): an intermediate student representation, mapped by a learned projection
  (the *regressor*) when the widths differ, regresses the teacher's (mean squared error).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DistillationLoss",
    "DistillationTerms",
    "HintLoss",
    "KDLoss",
    "distillation_loss",
    "distillation_terms",
    "hint_loss",
    "kd_loss",
]

KDReduction = Literal["batchmean", "sum", "none"]


def _check_temperature(temperature: float, owner: str) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(
            f"{owner}(temperature={temperature!r}) must be a number > 0 (Hinton et al. use 1-20)."
        )


def _check_alpha(alpha: float, owner: str) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(
            f"{owner}(alpha={alpha!r}) must be in [0, 1]: the weight of the hard (label) loss; "
            "1 - alpha weights the soft (teacher) loss."
        )


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 4.0,
    reduction: KDReduction = "batchmean",
    validate_args: bool = True,
) -> torch.Tensor:
    r"""Temperature-scaled KL divergence from the teacher's to the student's distribution.

    .. math::

        \mathcal{L}_{KD} = \frac{T^2}{N} \sum_{n=1}^{N} \sum_{c=1}^{C}
            p^{t}_{nc}\,\bigl(\log p^{t}_{nc} - \log p^{s}_{nc}\bigr),
        \qquad p^{t} = \operatorname{softmax}(z^{t}/T),\;
        p^{s} = \operatorname{softmax}(z^{s}/T).

    For large :math:`T` the gradient with respect to a student logit is about
    :math:`(z^s_c - z^t_c) / (N C T^2)` (zero-mean logits), so the :math:`T^2` factor keeps
    the soft term's gradient at the same scale for every temperature (Hinton et al. 2015,
    section 2.1). The computation runs in float32 even for half-precision inputs.

    Args:
        student_logits: ``(N, C)`` student logits (pre-softmax).
        teacher_logits: ``(N, C)`` teacher logits; no gradient flows into them.
        temperature: softmax temperature :math:`T > 0`.
        reduction: ``"batchmean"`` (sum over classes, mean over samples: the KL per sample),
            ``"sum"``, or ``"none"`` (per-sample ``(N,)`` values). ``"mean"`` is rejected on
            purpose: it divides by ``N * C`` and silently shrinks the loss by ``C``.
        validate_args: check shapes and arguments (turn off on hot paths).

    Returns:
        A scalar, or ``(N,)`` for ``reduction="none"``.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
        >>> float(kd_loss(logits, logits))
        0.0
        >>> float(kd_loss(torch.zeros(1, 2), torch.tensor([[10.0, -10.0]]), temperature=1.0)) > 0.69
        True
    """
    if validate_args:
        _check_temperature(temperature, "kd_loss")
        if reduction not in ("batchmean", "sum", "none"):
            raise ValueError(
                f"kd_loss(reduction={reduction!r}) must be 'batchmean', 'sum' or 'none'. ('mean' "
                "averages over classes too, which is not the KL divergence: use 'batchmean'.)"
            )
        if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"kd_loss: student logits {tuple(student_logits.shape)} and teacher logits "
                f"{tuple(teacher_logits.shape)} must both be (N, C) with the same C; map the teacher's "
                "classes onto the student's first (DistillationModule(class_mapping=...))."
            )
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    per_sample = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(dim=-1)
    per_sample = per_sample * temperature**2
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.mean() if per_sample.numel() else per_sample.sum()


class KDLoss(nn.Module):
    """Module form of :func:`kd_loss` (temperature-scaled KL, ``batchmean``, × T²).

    Args:
        temperature: softmax temperature ``T > 0``.
        reduction: ``"batchmean"``, ``"sum"`` or ``"none"``.
        validate_args: check shapes on every call.

    Example:
        >>> import torch
        >>> loss = KDLoss(temperature=2.0)
        >>> student = torch.randn(4, 3, requires_grad=True)
        >>> value = loss(student, torch.randn(4, 3))
        >>> value.backward()
        >>> value.ndim, student.grad.shape
        (0, torch.Size([4, 3]))
    """

    def __init__(
        self, temperature: float = 4.0, reduction: KDReduction = "batchmean", validate_args: bool = True
    ) -> None:
        super().__init__()
        _check_temperature(temperature, "KDLoss")
        if reduction not in ("batchmean", "sum", "none"):
            raise ValueError(f"KDLoss(reduction={reduction!r}) must be 'batchmean', 'sum' or 'none'.")
        self.temperature = float(temperature)
        self.reduction: KDReduction = reduction
        self.validate_args = validate_args

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """Return the KD loss of ``student_logits`` towards ``teacher_logits``."""
        return kd_loss(student_logits, teacher_logits, self.temperature, self.reduction, self.validate_args)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}"


class DistillationTerms(NamedTuple):
    """The parts of the hard/soft distillation loss (see :func:`distillation_terms`).

    Attributes:
        total: ``alpha * hard + (1 - alpha) * soft``, the hard term omitted when no sample
            is labelled.
        hard: cross-entropy over the labelled samples (0 when there are none).
        soft: :func:`kd_loss` over all samples (``batchmean``, × T²).
        num_labelled: how many samples carried a label.
    """

    total: torch.Tensor
    hard: torch.Tensor
    soft: torch.Tensor
    num_labelled: int


def distillation_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.5,
    ignore_index: int = -1,
    validate_args: bool = True,
) -> DistillationTerms:
    r"""The hard/soft mix and its parts; see :func:`distillation_loss`.

    Example:
        >>> import torch
        >>> terms = distillation_terms(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, -1]))
        >>> terms.num_labelled, round(float(terms.hard), 4), float(terms.soft)
        (1, 1.0986, 0.0)
    """
    if validate_args:
        _check_alpha(alpha, "distillation_loss")
        if target is not None and (target.ndim != 1 or len(target) != len(student_logits)):
            raise ValueError(
                f"distillation_loss: target {tuple(target.shape)} must be (N,) class indices for "
                f"{len(student_logits)} samples (use ignore_index={ignore_index} for unlabelled ones)."
            )
    soft = kd_loss(student_logits, teacher_logits, temperature, "batchmean", validate_args)
    labelled = target != ignore_index if target is not None else None
    num_labelled = int(labelled.sum()) if labelled is not None else 0
    if num_labelled == 0:
        if validate_args and alpha == 1.0:
            raise ValueError(
                "distillation_loss(alpha=1.0) is the hard (label) loss only, but this batch has no "
                "labelled sample: it would contribute nothing. Lower alpha to use unlabelled data."
            )
        hard = soft.new_zeros(())
        return DistillationTerms((1.0 - alpha) * soft, hard, soft, 0)
    hard = F.cross_entropy(student_logits.float(), target, ignore_index=ignore_index)
    return DistillationTerms(alpha * hard + (1.0 - alpha) * soft, hard, soft, num_labelled)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor | None = None,
    alpha: float = 0.5,
    temperature: float = 4.0,
    ignore_index: int = -1,
    validate_args: bool = True,
) -> torch.Tensor:
    r"""Hinton's hard/soft mix: ``alpha * CE(labels) + (1 - alpha) * KD(teacher)``.

    .. math::

        \mathcal{L} = \alpha\,\frac{1}{|L|}\sum_{n \in L} \operatorname{CE}(z^s_n, y_n)
            + (1 - \alpha)\,\mathcal{L}_{KD}(z^s, z^t; T)

    where :math:`L` is the set of labelled samples (``target != ignore_index``) and
    :math:`\mathcal{L}_{KD}` is :func:`kd_loss` over *all* samples. A batch without labels
    (``target=None`` or all ``ignore_index``) keeps only the soft term, with the same weight
    ``1 - alpha``, so the per-sample weights never depend on the batch's composition.
    ``alpha=1`` is plain cross-entropy, ``alpha=0`` pure distillation.

    Args:
        student_logits: ``(N, C)``.
        teacher_logits: ``(N, C)``.
        target: ``(N,)`` class indices, ``ignore_index`` for unlabelled samples, or ``None``.
        alpha: weight of the hard loss in ``[0, 1]``.
        temperature: KD temperature ``T > 0``.
        ignore_index: the label value that marks an unlabelled sample.
        validate_args: check arguments and shapes.

    Raises:
        ValueError: bad arguments, or ``alpha=1`` with a batch that has no label.

    Example:
        >>> import torch
        >>> s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> hard = torch.nn.functional.cross_entropy(s, y)
        >>> bool(torch.isclose(distillation_loss(s, t, y, alpha=1.0), hard))
        True
        >>> bool(torch.isclose(distillation_loss(s, t, y, alpha=0.0), kd_loss(s, t)))
        True
    """
    return distillation_terms(
        student_logits,
        teacher_logits,
        target,
        alpha=alpha,
        temperature=temperature,
        ignore_index=ignore_index,
        validate_args=validate_args,
    ).total


class DistillationLoss(nn.Module):
    """Module form of :func:`distillation_loss`.

    Args:
        alpha: weight of the hard (label) loss in ``[0, 1]``.
        temperature: KD temperature ``T > 0``.
        ignore_index: label value of unlabelled samples.
        validate_args: check shapes on every call.

    Example:
        >>> import torch
        >>> loss = DistillationLoss(alpha=0.1, temperature=4.0)
        >>> loss(torch.randn(3, 5), torch.randn(3, 5), torch.tensor([1, -1, 4])).ndim
        0
    """

    def __init__(
        self, alpha: float = 0.5, temperature: float = 4.0, ignore_index: int = -1, validate_args: bool = True
    ) -> None:
        super().__init__()
        _check_alpha(alpha, "DistillationLoss")
        _check_temperature(temperature, "DistillationLoss")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.ignore_index = int(ignore_index)
        self.validate_args = validate_args

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        target: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return ``alpha * CE + (1 - alpha) * KD`` (soft term only for unlabelled batches)."""
        return distillation_loss(
            student_logits,
            teacher_logits,
            target,
            self.alpha,
            self.temperature,
            self.ignore_index,
            self.validate_args,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, temperature={self.temperature}, ignore_index={self.ignore_index}"


def _channels_last(features: torch.Tensor) -> torch.Tensor:
    return features if features.ndim == 2 else features.movedim(1, -1)


def hint_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    projection: nn.Module | None = None,
    validate_args: bool = True,
) -> torch.Tensor:
    r"""FitNets hint loss: mean squared error between projected student and teacher features.

    .. math::

        \mathcal{L}_{hint} = \frac{1}{N\,D}\,\bigl\lVert r(u^{s}) - u^{t} \bigr\rVert_2^2

    with :math:`r` a learned linear regressor applied over the channel dimension (a 1×1
    convolution for feature maps), :math:`D` the number of teacher feature elements per
    sample (Romero et al., ICLR 2015; they used a convolutional regressor).

    Args:
        student_features: ``(N, C_s)`` vectors or ``(N, C_s, *spatial)`` maps.
        teacher_features: ``(N, C_t)`` or ``(N, C_t, *spatial)``, the same spatial size.
        projection: maps the last dimension ``C_s → C_t`` (an ``nn.Linear``); applied to the
            channel dimension of maps. ``None`` requires ``C_s == C_t``.
        validate_args: check shapes.

    Example:
        >>> import torch
        >>> s, t = torch.ones(2, 4, 3, 3), torch.ones(2, 4, 3, 3)
        >>> float(hint_loss(s, t))
        0.0
        >>> hint_loss(torch.randn(2, 8), torch.randn(2, 4), torch.nn.Linear(8, 4)).ndim
        0
    """
    if validate_args:
        if student_features.ndim < 2 or student_features.ndim != teacher_features.ndim:
            raise ValueError(
                f"hint_loss: student features {tuple(student_features.shape)} and teacher features "
                f"{tuple(teacher_features.shape)} must both be (N, C) or (N, C, ...) maps of equal rank."
            )
        if student_features.shape[2:] != teacher_features.shape[2:] or len(student_features) != len(
            teacher_features
        ):
            raise ValueError(
                f"hint_loss: batch and spatial sizes differ: student {tuple(student_features.shape)} vs "
                f"teacher {tuple(teacher_features.shape)}; choose hint layers with equal spatial size."
            )
        if projection is None and student_features.shape[1] != teacher_features.shape[1]:
            raise ValueError(
                f"hint_loss: widths differ ({student_features.shape[1]} vs {teacher_features.shape[1]}) "
                "and no projection was given; use HintLoss(student_width, teacher_width)."
            )
    student = _channels_last(student_features)
    if projection is not None:
        student = projection(student)
    teacher = _channels_last(teacher_features.detach())
    return F.mse_loss(student.float(), teacher.float())


class HintLoss(nn.Module):
    """FitNets hint loss with a learned projection when the widths differ.

    The projection is a ``nn.Linear(student_width, teacher_width)`` applied over the channel
    dimension (a 1×1 convolution for feature maps); with equal widths it is the identity
    unless ``project=True``. Its parameters train with the student.

    Args:
        student_width: channel count of the student's hint layer.
        teacher_width: channel count of the teacher's hint layer.
        project: force a learned projection even when the widths match.

    Example:
        >>> import torch
        >>> loss = HintLoss(student_width=8, teacher_width=16)
        >>> loss(torch.randn(2, 8, 5, 5), torch.randn(2, 16, 5, 5)).ndim
        0
        >>> HintLoss(4, 4).projection
        Identity()
    """

    def __init__(self, student_width: int, teacher_width: int, project: bool = False) -> None:
        super().__init__()
        for name, value in (("student_width", student_width), ("teacher_width", teacher_width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HintLoss({name}={value!r}) must be a positive channel count.")
        self.student_width = student_width
        self.teacher_width = teacher_width
        needs_projection = project or student_width != teacher_width
        self.projection: nn.Module = (
            nn.Linear(student_width, teacher_width) if needs_projection else nn.Identity()
        )

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        """Return the MSE between projected student features and teacher features."""
        if student_features.shape[1] != self.student_width or teacher_features.shape[1] != self.teacher_width:
            raise ValueError(
                f"HintLoss(student_width={self.student_width}, teacher_width={self.teacher_width}) got "
                f"student features {tuple(student_features.shape)} and teacher features "
                f"{tuple(teacher_features.shape)} (channels are dimension 1)."
            )
        return hint_loss(student_features, teacher_features, self.projection)
