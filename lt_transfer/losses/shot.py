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

:func:`shot_centroids` returns the centroids of the last round (and which classes are
candidates) instead of the labels; a model labels later batches with
:func:`nearest_centroid_labels`. Its ``all_reduce`` argument sums the per-class statistics
over processes, so under DDP every process gets the centroids of the whole target set while
each one only passes over its own shard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lt_transfer.losses._float32 import float32, no_autocast

__all__ = ["ShotCentroids", "nearest_centroid_labels", "shot_centroids", "shot_pseudo_labels"]


class ShotCentroids(NamedTuple):
    """Class centroids of the (L2-normalised) target features and the classes that may be chosen.

    Attributes:
        centroids: ``(C, D)`` float32 centroids (a class without examples has a zero row).
        candidates: ``(C,)`` booleans, true for the classes a label may take.

    Example:
        >>> features, logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[9.0, 0.0], [0.0, 9.0]])
        >>> result = shot_centroids(features, logits)
        >>> result.centroids.round(decimals=3), result.candidates
        (tensor([[1., 0.],
                [0., 1.]]), tensor([True, True]))
    """

    centroids: torch.Tensor
    candidates: torch.Tensor


def nearest_centroid_labels(
    features: torch.Tensor, centroids: torch.Tensor, candidates: torch.Tensor
) -> torch.Tensor:
    """Label each row of ``features`` with the candidate centroid nearest in cosine distance.

    Args:
        features: ``(N, D)`` features (any scale; normalised here, no gradient).
        centroids: ``(C, D)`` centroids (:func:`shot_centroids`).
        candidates: ``(C,)`` booleans: the classes that may be chosen (at least one).

    Returns:
        ``(N,)`` int64 class indices.

    Example:
        >>> centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
        >>> nearest_centroid_labels(torch.tensor([[2.0, 0.1], [-1.0, 0.2]]), centroids,
        ...                         torch.tensor([True, True, False]))  # class 2 is not a candidate
        tensor([0, 1])
    """
    with torch.no_grad():
        unit = F.normalize(float32(features.detach()), dim=1)
        with no_autocast(unit):
            similarity = unit @ F.normalize(centroids.to(unit), dim=1).T
        similarity[:, ~candidates.to(unit.device)] = float("-inf")
        return similarity.argmax(1)


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def shot_centroids(
    features: torch.Tensor,
    logits: torch.Tensor,
    refinement_rounds: int = 1,
    validate_args: bool = True,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ShotCentroids:
    """The centroids SHOT labels the target features with (the module docstring's steps 1 and 3).

    Args:
        features: ``(N, D)`` target features of the feature extractor being adapted.
        logits: ``(N, C)`` logits of the (frozen) classifier on the same examples.
        refinement_rounds: rounds of hard-label centroids after the soft ones (SHOT: 1).
        validate_args: check shapes and ``refinement_rounds``.
        all_reduce: sums a tensor over processes (e.g. ``trainer.strategy.reduce`` with
            ``reduce_op="sum"``); ``None``: this process's examples are the whole set.

    Returns:
        :class:`ShotCentroids` of the last round; :func:`nearest_centroid_labels` with them
        gives :func:`shot_pseudo_labels`.

    Raises:
        ValueError: non-2-D inputs, different example counts, or ``refinement_rounds < 0``.

    Example:
        >>> features = torch.tensor([[1.0, 0.0], [0.96, 0.28], [0.0, 1.0], [0.28, 0.96]])
        >>> logits = torch.log(torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.1, 0.9], [0.2, 0.8]]))
        >>> result = shot_centroids(features, logits)
        >>> nearest_centroid_labels(features, *result)
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
    reduce = _identity if all_reduce is None else all_reduce
    with torch.no_grad():
        unit = F.normalize(float32(features.detach()), dim=1)
        probs = float32(logits.detach()).softmax(1)
        num_classes = probs.shape[1]
        with no_autocast(unit):
            weighted = reduce(probs.T @ unit)
            centroids = weighted / reduce(probs.sum(0)).clamp_min(1e-12).unsqueeze(1)
            predicted = torch.bincount(probs.argmax(1), minlength=num_classes).to(unit)
            candidates = reduce(predicted) > 0
            for _ in range(refinement_rounds):
                labels = nearest_centroid_labels(unit, centroids, candidates)
                one_hot = F.one_hot(labels, num_classes).to(unit)
                counts = reduce(one_hot.sum(0))
                centroids = reduce(one_hot.T @ unit) / counts.clamp_min(1.0).unsqueeze(1)
                candidates = counts > 0
    return ShotCentroids(centroids, candidates)


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
    result = shot_centroids(features, logits, refinement_rounds, validate_args)
    return nearest_centroid_labels(features, *result)
