"""Self-training: cross-entropy on confident pseudo-labels (FixMatch), optionally per-class thresholds.

FixMatch (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence", NeurIPS 2020): the prediction on a *weakly* augmented view of an unlabelled
example gives a hard pseudo-label :math:`\\hat y = \\arg\\max q` when its confidence reaches
the threshold :math:`\\tau`, and the model is trained to predict it on a *strongly* augmented
view:

.. math::

    L_u = \\frac1{B} \\sum_{b=1}^{B} \\mathbb 1\\bigl[\\max q_b \\ge \\tau_{\\hat y_b}\\bigr]\\,
        \\mathrm{CE}\\bigl(z^{\\mathrm{strong}}_b, \\hat y_b\\bigr), \\qquad
    q_b = \\operatorname{softmax}(z^{\\mathrm{weak}}_b),

averaged over *all* :math:`B` unlabelled examples (masked ones count as 0, as in FixMatch).
Pass the same logits twice for self-training without augmentation. The pseudo-labels carry
no gradient; the loss is computed in float32.

With a fixed threshold :math:`\\tau_c = \\tau` (FixMatch, :math:`\\tau = 0.95`), classes that
are harder to learn get few pseudo-labels. FlexMatch (Zhang et al., "FlexMatch: Boosting
Semi-Supervised Learning with Curriculum Pseudo Labeling", NeurIPS 2021) lowers the
threshold of a class by its *learning effect* :math:`\\sigma_c`, the share of unlabelled
examples confidently (:math:`\\ge \\tau`) predicted as :math:`c`, normalised with the
threshold warm-up and mapped by :math:`M(x) = x / (2 - x)`:

.. math::

    \\beta_c = \\frac{\\sigma_c}{\\max\\bigl(\\max_{c'} \\sigma_{c'},\\ \\sigma_{\\text{unused}}\\bigr)},
    \\qquad \\tau_c = M(\\beta_c)\\,\\tau,

where :math:`\\sigma_{\\text{unused}}` is the share of examples not confidently predicted.
FlexMatch keeps the latest prediction of every unlabelled example (it needs example indices);
:class:`SelfTrainingLoss` uses a simpler rule: :math:`\\sigma` is an exponential moving
average over training batches of the per-batch shares (momentum 0.999 by default, about a
pass over a dataset of 64,000 examples at batch size 64). At the start nothing is confident
yet, so the thresholds start near 0 and rise as the model learns, as in FlexMatch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lt_transfer.losses._float32 import float32

__all__ = ["SelfTrainingLoss", "confident_pseudo_labels", "flexmatch_thresholds", "self_training_loss"]


def _check_threshold(threshold: float, owner: str) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(
            f"{owner}(threshold={threshold!r}) must lie in (0, 1): the confidence a weak-view "
            "prediction needs to become a pseudo-label (FixMatch uses 0.95)."
        )


def _check_logits(logits: torch.Tensor, where: str, name: str = "weak_logits") -> None:
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"{where}: expected (N, C) {name} with C >= 2 classes, got {tuple(logits.shape)}.")


def confident_pseudo_labels(
    weak_logits: torch.Tensor,
    threshold: float = 0.95,
    class_thresholds: torch.Tensor | None = None,
    validate_args: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels of ``(N, C)`` weak-view logits and the mask of the confident ones.

    Args:
        weak_logits: ``(N, C)`` logits of the weakly augmented view (detached here).
        threshold: confidence threshold ``tau`` in ``(0, 1)``.
        class_thresholds: ``(C,)`` per-class thresholds (:func:`flexmatch_thresholds`); they
            replace ``threshold`` when given.
        validate_args: check shapes and the threshold.

    Returns:
        ``(labels, mask)``: ``(N,)`` arg-max classes and ``(N,)`` booleans, true where the
        confidence reaches the (class's) threshold.

    Example:
        >>> logits = torch.log(torch.tensor([[0.9, 0.1], [0.6, 0.4]]))
        >>> confident_pseudo_labels(logits, threshold=0.8)
        (tensor([0, 0]), tensor([ True, False]))
    """
    if validate_args:
        _check_threshold(threshold, "confident_pseudo_labels")
        _check_logits(weak_logits, "confident_pseudo_labels")
        if class_thresholds is not None and class_thresholds.shape != (weak_logits.shape[1],):
            raise ValueError(
                f"confident_pseudo_labels: class_thresholds of shape {tuple(class_thresholds.shape)} must "
                f"be ({weak_logits.shape[1]},), one threshold per class."
            )
    with torch.no_grad():
        confidence, labels = float32(weak_logits.detach()).softmax(1).max(1)
        cutoff = threshold if class_thresholds is None else class_thresholds.to(confidence)[labels]
        return labels, confidence >= cutoff


def self_training_loss(
    weak_logits: torch.Tensor,
    strong_logits: torch.Tensor,
    threshold: float = 0.95,
    class_thresholds: torch.Tensor | None = None,
    validate_args: bool = True,
) -> torch.Tensor:
    """FixMatch's unlabelled loss: CE of the strong view on confident weak-view pseudo-labels.

    Args:
        weak_logits: ``(N, C)`` logits of the weakly augmented view (pseudo-labels; no gradient).
        strong_logits: ``(N, C)`` logits of the strongly augmented view of the same examples
            (the same tensor as ``weak_logits`` for plain self-training).
        threshold: confidence threshold ``tau`` in ``(0, 1)``.
        class_thresholds: optional ``(C,)`` per-class thresholds replacing ``threshold``.
        validate_args: check shapes and the threshold.

    Returns:
        A float32 scalar, the mean over all ``N`` examples (0 when none is confident).

    Raises:
        ValueError: ``threshold`` outside ``(0, 1)``, or logits of different shapes.

    Example:
        >>> weak = torch.log(torch.tensor([[0.9, 0.1], [0.5, 0.5]]))  # only the first is confident
        >>> strong = torch.zeros(2, 2)  # CE(strong, class 0) = log 2
        >>> self_training_loss(weak, strong, threshold=0.85)  # log 2 / 2
        tensor(0.3466)
    """
    if validate_args:
        _check_logits(strong_logits, "self_training_loss", "strong_logits")
        if weak_logits.shape != strong_logits.shape:
            raise ValueError(
                f"self_training_loss: weak_logits {tuple(weak_logits.shape)} and strong_logits "
                f"{tuple(strong_logits.shape)} must have the same shape (two views of the same examples)."
            )
    labels, mask = confident_pseudo_labels(weak_logits, threshold, class_thresholds, validate_args)
    per_example = F.cross_entropy(float32(strong_logits), labels, reduction="none")
    return (per_example * mask).mean()


def flexmatch_thresholds(
    learning_effect: torch.Tensor, unused: float | torch.Tensor, threshold: float = 0.95
) -> torch.Tensor:
    """FlexMatch's per-class thresholds ``tau * M(beta_c)``, ``M(x) = x / (2 - x)``, with warm-up.

    Args:
        learning_effect: ``(C,)`` share (or count) :math:`\\sigma_c` of examples confidently
            predicted as each class.
        unused: share (or count, in the same unit) of examples not confidently predicted.
        threshold: the base threshold ``tau``.

    Returns:
        ``(C,)`` thresholds in ``[0, tau]``.

    Example:
        >>> flexmatch_thresholds(torch.tensor([0.5, 0.25]), 0.25, threshold=0.9)  # beta = (1, 0.5)
        tensor([0.9000, 0.3000])
    """
    effect = learning_effect.float()
    unused_share = torch.as_tensor(unused, dtype=effect.dtype, device=effect.device)
    normaliser = torch.maximum(effect.max(), unused_share)
    beta = effect / normaliser.clamp_min(1e-12)
    return threshold * beta / (2.0 - beta)


class SelfTrainingLoss(nn.Module):
    """Confidence-thresholded pseudo-label loss, with optional class-balanced thresholds.

    With ``class_balanced=True`` the module keeps the moving averages :math:`\\sigma_c` and
    :math:`\\sigma_{\\text{unused}}` as buffers (saved in checkpoints, so a resumed run
    continues with the same thresholds). They are updated from the weak-view predictions
    on every call **in training mode** only (never during validation), *after* the current
    batch has been thresholded. Under DDP each process updates from its own batches; keep
    the loss a child of the LightningModule so that DDP's buffer broadcast keeps every process
    on rank 0's thresholds.

    Args:
        threshold: base confidence threshold ``tau`` in ``(0, 1)`` (FixMatch: 0.95).
        class_balanced: FlexMatch-style per-class thresholds (see the module docstring).
        num_classes: class count; required with ``class_balanced=True`` only.
        momentum: moving-average momentum of the learning effect, in ``[0, 1)``; only with
            ``class_balanced=True`` (``None`` = 0.999).
        validate_args: check inputs on every call.

    Raises:
        ValueError: ``threshold`` outside ``(0, 1)``, a missing ``num_classes`` with
            ``class_balanced=True``, or ``num_classes``/``momentum`` without it.

    Example:
        >>> loss_fn = SelfTrainingLoss(threshold=0.9, class_balanced=True, num_classes=3)
        >>> loss_fn.class_thresholds()  # nothing learned yet: every prediction passes
        tensor([0., 0., 0.])
        >>> logits = torch.tensor([[8.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        >>> loss_fn(logits, logits).item() > 0, loss_fn.learning_effect
        (True, tensor([0.0005, 0.0000, 0.0000]))
    """

    learning_effect: torch.Tensor | None
    unused: torch.Tensor | None

    def __init__(
        self,
        threshold: float = 0.95,
        class_balanced: bool = False,
        num_classes: int | None = None,
        momentum: float | None = None,
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        _check_threshold(threshold, "SelfTrainingLoss")
        self.threshold = float(threshold)
        self.class_balanced = bool(class_balanced)
        self.validate_args = validate_args
        if not class_balanced:
            if num_classes is not None or momentum is not None:
                raise ValueError(
                    f"SelfTrainingLoss(num_classes={num_classes!r}, momentum={momentum!r}) only apply "
                    "with class_balanced=True; set class_balanced=True or leave them None."
                )
            self.num_classes, self.momentum = None, None
            self.register_buffer("learning_effect", None)
            self.register_buffer("unused", None)
            return
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"SelfTrainingLoss(class_balanced=True) needs num_classes >= 2 (the classifier's output "
                f"width), got num_classes={num_classes!r}."
            )
        momentum = 0.999 if momentum is None else momentum
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ValueError(f"SelfTrainingLoss(momentum={momentum!r}) must be in [0, 1) (e.g. 0.999).")
        self.num_classes, self.momentum = num_classes, float(momentum)
        self.register_buffer("learning_effect", torch.zeros(num_classes))
        self.register_buffer("unused", torch.tensor(1.0))

    def class_thresholds(self) -> torch.Tensor | None:
        """The current ``(C,)`` per-class thresholds, or ``None`` with a fixed threshold."""
        if self.learning_effect is None or self.unused is None:
            return None
        return flexmatch_thresholds(self.learning_effect, self.unused, self.threshold)

    @torch.no_grad()
    def _update(self, weak_logits: torch.Tensor) -> None:
        assert self.learning_effect is not None and self.unused is not None and self.momentum is not None
        confidence, labels = float32(weak_logits.detach()).softmax(1).max(1)
        confident = confidence >= self.threshold
        counts = torch.bincount(labels[confident], minlength=self.learning_effect.numel())
        share = counts.to(self.learning_effect) / len(labels)
        self.learning_effect.mul_(self.momentum).add_(share, alpha=1.0 - self.momentum)
        unused_share = 1.0 - confident.to(self.unused).mean()
        self.unused.mul_(self.momentum).add_(unused_share, alpha=1.0 - self.momentum)

    def forward(self, weak_logits: torch.Tensor, strong_logits: torch.Tensor) -> torch.Tensor:
        """Return the pseudo-label loss (and, in training mode, update the class statistics)."""
        loss = self_training_loss(
            weak_logits, strong_logits, self.threshold, self.class_thresholds(), self.validate_args
        )
        if self.class_balanced and self.training and len(weak_logits):
            self._update(weak_logits)
        return loss

    def extra_repr(self) -> str:
        extra = f", num_classes={self.num_classes}, momentum={self.momentum}" if self.class_balanced else ""
        return f"threshold={self.threshold}, class_balanced={self.class_balanced}{extra}"
