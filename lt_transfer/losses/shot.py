"""SHOT's self-supervised pseudo-labels: nearest class centroid of the target features.

SHOT (Liang, Hu & Feng, "Do We Really Need to Access the Source Data? Source Hypothesis
Transfer for Unsupervised Domain Adaptation", ICML 2020) adapts a source-trained model to an
unlabelled target domain with the classifier head frozen. Besides information maximisation
(:mod:`lt_transfer.losses.information_maximization`) it trains on pseudo-labels that come from
clustering the target features rather than from the (shifted) classifier alone:

1. class centroids weighted by the softmax outputs :math:`\\delta_k`,
   :math:`c_k^{(0)} = \\sum_x \\delta_k(x)\\, \\hat g(x) \\,/\\, \\sum_x \\delta_k(x)`;
2. labels from the nearest centroid in cosine distance,
   :math:`\\hat y = \\arg\\min_k D_{\\cos}\\bigl(\\hat g(x), c_k^{(0)}\\bigr)`;
3. one refinement round: centroids :math:`c_k^{(1)}` of the examples labelled :math:`k`, and
   the nearest of those again.

The cross-entropy on these labels is weighted by SHOT's :math:`\\beta` (0.3 in the paper) and
added to the information-maximisation loss; the labels are recomputed over the whole target
set (or a large sample) at the start of each epoch. As in the authors' code, the features
are L2-normalised before the centroids are formed, and a class that no example predicts
(arg-max) is not a candidate centroid, nor is a class that received no example before a
refinement round.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lt_transfer.losses._float32 import float32, no_autocast

__all__ = ["shot_pseudo_labels"]


def _nearest_centroid(
    features: torch.Tensor, centroids: torch.Tensor, candidates: torch.Tensor
) -> torch.Tensor:
    similarity = features @ F.normalize(centroids, dim=1).T  # cosine similarity: features are unit rows
    similarity[:, ~candidates] = float("-inf")
    return similarity.argmax(1)


def shot_pseudo_labels(
    features: torch.Tensor, logits: torch.Tensor, refinement_rounds: int = 1, validate_args: bool = True
) -> torch.Tensor:
    """Pseudo-labels from weighted class centroids of the target features (SHOT, ICML 2020).

    Args:
        features: ``(N, D)`` target features of the feature extractor being adapted.
        logits: ``(N, C)`` logits of the (frozen) classifier on the same examples.
        refinement_rounds: rounds of hard-label centroids after the soft ones (SHOT: 1).
        validate_args: check shapes and ``refinement_rounds``.

    Returns:
        ``(N,)`` int64 class indices (no gradient).

    Raises:
        ValueError: non-2-D inputs, different example counts, or ``refinement_rounds < 0``.

    Example:
        >>> features = torch.tensor([[1.0, 0.0], [0.96, 0.28], [0.0, 1.0], [0.28, 0.96]])
        >>> logits = torch.log(torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.1, 0.9], [0.2, 0.8]]))
        >>> logits.argmax(1)  # the classifier puts the second example in class 1
        tensor([0, 1, 1, 1])
        >>> shot_pseudo_labels(features, logits)  # its features lie by the class-0 centroid
        tensor([0, 0, 1, 1])
    """
    if validate_args:
        if features.ndim != 2 or logits.ndim != 2 or len(features) != len(logits):
            raise ValueError(
                f"shot_pseudo_labels: expected (N, D) features and (N, C) logits of the same N "
                f"examples, got {tuple(features.shape)} and {tuple(logits.shape)}; pool feature maps first."
            )
        rounds = refinement_rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise ValueError(
                f"shot_pseudo_labels(refinement_rounds={refinement_rounds!r}) must be an int >= 0 (SHOT: 1)."
            )
    with torch.no_grad():
        unit = F.normalize(float32(features.detach()), dim=1)
        probs = float32(logits.detach()).softmax(1)
        num_classes = probs.shape[1]
        with no_autocast(unit):
            centroids = probs.T @ unit / probs.sum(0).clamp_min(1e-12).unsqueeze(1)
            candidates = torch.bincount(probs.argmax(1), minlength=num_classes) > 0
            labels = _nearest_centroid(unit, centroids, candidates)
            for _ in range(refinement_rounds):
                one_hot = F.one_hot(labels, num_classes).to(unit)
                counts = one_hot.sum(0)
                centroids = one_hot.T @ unit / counts.clamp_min(1.0).unsqueeze(1)
                labels = _nearest_centroid(unit, centroids, counts > 0)
    return labels
