"""Attention transfer (AT): the student matches the teacher's spatial attention maps.

Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer" (ICLR 2017). The activation-based
spatial attention map of a layer's output :math:`A \\in \\mathbb R^{C \\times H \\times W}` is
the channel sum of the absolute values raised to the power :math:`p` (the paper uses
:math:`p = 2`), flattened to :math:`Q = \\operatorname{vec}(\\sum_c |A_c|^p)` and
L2-normalised. For one pair of layers the paper writes the loss as

.. math::

    \\frac{\\beta}{2} \\Bigl\\lVert \\frac{Q_S}{\\lVert Q_S \\rVert_2}
        - \\frac{Q_T}{\\lVert Q_T \\rVert_2} \\Bigr\\rVert_p ;

**this module uses the form of the authors' released code**, the *squared* difference
averaged over the batch and the :math:`H W` positions,

.. math::

    L_{AT} = \\frac{\\beta}{2} \\cdot \\frac{1}{N H W} \\sum_{n=1}^{N}
        \\Bigl\\lVert \\frac{Q_{S,n}}{\\lVert Q_{S,n} \\rVert_2}
        - \\frac{Q_{T,n}}{\\lVert Q_{T,n} \\rVert_2} \\Bigr\\rVert_2^2 ,

with :math:`\\beta = 1000`. Sum one term per pair of layers (the paper transfers attention at
the end of each residual group). The channel counts of student and teacher may differ; the
spatial sizes must match, or with ``interpolate=True`` the student's attention map (not its
features) is resized to the teacher's size, bilinearly for 2-D maps, before normalisation.
The teacher's maps carry no gradient; everything is computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lt_transfer.losses._float32 import float32

__all__ = ["AttentionTransferLoss", "attention_map", "attention_transfer_loss"]

_RESIZE_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _check_maps(features: torch.Tensor, where: str, name: str) -> None:
    if features.ndim < 3:
        raise ValueError(
            f"{where}: {name} of shape {tuple(features.shape)} have no spatial map; attention transfer "
            "needs (N, C, H, W) feature maps (the output of a convolutional block, before global "
            "pooling), not pooled (N, D) vectors: use hint_loss or kd_loss for those."
        )


def _check_p(p: float, owner: str) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0:
        raise ValueError(f"{owner}(p={p!r}) must be a number > 0 (the paper uses p=2).")


def _check_beta(beta: float, owner: str) -> None:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
        raise ValueError(f"{owner}(beta={beta!r}) must be a number >= 0 (the paper uses 1000).")


def _raw_attention(features: torch.Tensor, p: float) -> torch.Tensor:
    return float32(features).abs().pow(p).sum(1)  # (N, *spatial)


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """L2-normalised spatial attention ``vec(sum_c |A_c|^p)`` of ``(N, C, *spatial)`` maps.

    Args:
        features: ``(N, C, H, W)`` (or ``(N, C, *spatial)``) activations.
        p: the exponent (the paper: 2).

    Returns:
        ``(N, H * W)`` float32 rows of unit L2 norm.

    Example:
        >>> attention_map(torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]]))  # sum of squares (1, 1)
        tensor([[0.7071, 0.7071]])
    """
    _check_maps(features, "attention_map", "features")
    _check_p(p, "attention_map")
    return F.normalize(_raw_attention(features, p).flatten(1), dim=1)


def attention_transfer_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    p: float = 2.0,
    beta: float = 1000.0,
    interpolate: bool = False,
    validate_args: bool = True,
) -> torch.Tensor:
    """AT loss ``beta/2 · mean((Q_S/|Q_S| - Q_T/|Q_T|)²)`` for one pair of layers.

    Args:
        student_features: ``(N, C_s, *spatial)`` student activations.
        teacher_features: ``(N, C_t, *spatial)`` teacher activations (detached here).
        p: exponent of the attention map (the paper: 2).
        beta: weight :math:`\\beta` (the paper: 1000); the loss carries ``beta / 2``.
        interpolate: resize the student's attention map to the teacher's spatial size when
            they differ (1-, 2- or 3-D maps); ``False`` raises instead.
        validate_args: check shapes and arguments.

    Returns:
        A float32 scalar.

    Raises:
        ValueError: inputs without spatial maps, different batch sizes or spatial ranks, or
            different spatial sizes without ``interpolate``.

    Example:
        >>> student = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # attention (1, 1)/√2
        >>> teacher = torch.tensor([[[[2.0, 0.0]]]])  # attention (1, 0); one channel is fine
        >>> attention_transfer_loss(student, teacher, beta=2.0)  # ((1 - 1/√2)² + 1/2) / 2
        tensor(0.2929)
    """
    if validate_args:
        _check_maps(student_features, "attention_transfer_loss", "student_features")
        _check_maps(teacher_features, "attention_transfer_loss", "teacher_features")
        _check_p(p, "attention_transfer_loss")
        _check_beta(beta, "attention_transfer_loss")
        if len(student_features) != len(teacher_features) or student_features.ndim != teacher_features.ndim:
            raise ValueError(
                f"attention_transfer_loss: student {tuple(student_features.shape)} and teacher "
                f"{tuple(teacher_features.shape)} need the same batch size and number of spatial dimensions."
            )
        if student_features.shape[2:] != teacher_features.shape[2:] and not interpolate:
            raise ValueError(
                f"attention_transfer_loss: spatial sizes differ, student {tuple(student_features.shape[2:])} "
                f"vs teacher {tuple(teacher_features.shape[2:])}; pair layers of the same resolution or "
                "pass interpolate=True to resize the student's attention map."
            )
    student = _raw_attention(student_features, p)
    teacher = _raw_attention(teacher_features.detach(), p)
    if student.shape[1:] != teacher.shape[1:]:
        mode = _RESIZE_MODES.get(teacher.ndim - 1)
        if mode is None:
            raise ValueError(
                f"attention_transfer_loss(interpolate=True) resizes 1-, 2- or 3-D maps, got "
                f"{teacher.ndim - 1}-D maps {tuple(teacher.shape[1:])}."
            )
        student = F.interpolate(student.unsqueeze(1), size=teacher.shape[1:], mode=mode, align_corners=False)
        student = student.squeeze(1)
    difference = F.normalize(student.flatten(1), dim=1) - F.normalize(teacher.flatten(1), dim=1)
    return 0.5 * beta * difference.pow(2).mean()


class AttentionTransferLoss(nn.Module):
    """Module form of :func:`attention_transfer_loss` (Zagoruyko & Komodakis, ICLR 2017).

    Args:
        p: exponent of the attention map (the paper: 2).
        beta: weight :math:`\\beta` (the paper: 1000); the loss carries ``beta / 2``.
        interpolate: resize the student's attention map to the teacher's size when they differ.
        validate_args: check inputs on every call.

    Example:
        >>> loss_fn = AttentionTransferLoss()
        >>> student = torch.randn(2, 8, 4, 4, requires_grad=True)
        >>> value = loss_fn(student, torch.randn(2, 32, 4, 4))  # channel counts may differ
        >>> value.backward(); value.ndim, student.grad.shape
        (0, torch.Size([2, 8, 4, 4]))
    """

    def __init__(
        self, p: float = 2.0, beta: float = 1000.0, interpolate: bool = False, validate_args: bool = True
    ) -> None:
        super().__init__()
        _check_p(p, "AttentionTransferLoss")
        _check_beta(beta, "AttentionTransferLoss")
        self.p = float(p)
        self.beta = float(beta)
        self.interpolate = interpolate
        self.validate_args = validate_args

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        """Return the AT loss between one pair of student and teacher feature maps."""
        return attention_transfer_loss(
            student_features, teacher_features, self.p, self.beta, self.interpolate, self.validate_args
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, beta={self.beta}, interpolate={self.interpolate}"
