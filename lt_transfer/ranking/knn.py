"""k-nearest-neighbour accuracy on a held-out slice: the simplest transferability baseline.

Features that transfer well put target samples of one class next to each other, so a
k-NN classifier fitted on part of the labelled target sample classifies the rest well (the
k-NN evaluation of frozen features used e.g. by Wu et al., "Unsupervised Feature Learning
via Non-Parametric Instance Discrimination", CVPR 2018, and Caron et al., DINO, ICCV 2021).
The held-out slice is stratified and seeded (:func:`~lt_transfer.ranking.stratified_split`
semantics: ``round(n_c * test_fraction)`` samples of each class, at least one on each side).
Votes are counted over the ``k`` nearest training samples; a tie goes to the tied class
with the nearest member. Higher is better.
"""

from __future__ import annotations

from typing import Literal

import torch

from lt_transfer.ranking._inputs import ArrayLike, as_features, as_labels, stratified_split

__all__ = ["knn_accuracy"]

_CHUNK = 1024  # held-out samples whose distances are held at once


def knn_accuracy(
    features: ArrayLike,
    labels: ArrayLike,
    k: int = 5,
    test_fraction: float = 0.25,
    distance: Literal["cosine", "euclidean"] = "cosine",
    seed: int = 0,
) -> float:
    """Held-out accuracy of a k-NN classifier on ``(N, D)`` features (higher is better).

    Args:
        features: ``(N, D)`` features of the labelled target samples.
        labels: ``(N,)`` class indices ``0..C-1`` (at least 2 samples per class).
        k: neighbours that vote (capped at the training-slice size).
        test_fraction: share of each class held out.
        distance: ``"cosine"`` or ``"euclidean"``.
        seed: seed of the split.

    Raises:
        ValueError: ``k < 1``, an unknown distance, a class with fewer than 2 samples, or the
            errors of the other scores (NaN/Inf, single class, ...).

    Example:
        >>> features = torch.tensor([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
        >>> knn_accuracy(features, torch.tensor([0, 0, 0, 1, 1, 1]), k=1, distance="euclidean")
        1.0
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"knn_accuracy(k={k!r}) must be an int >= 1.")
    if distance not in ("cosine", "euclidean"):
        raise ValueError(f"knn_accuracy(distance={distance!r}) must be 'cosine' or 'euclidean'.")
    f = as_features(features, "knn_accuracy")
    y, num_classes = as_labels(labels, len(f), "knn_accuracy")
    train, test = stratified_split(y, num_classes, test_fraction, seed, "knn_accuracy")
    if distance == "cosine":
        f = torch.nn.functional.normalize(f, dim=1)
    k = min(k, len(train))
    predicted = torch.cat(
        [_vote(f[rows], f[train], y[train], k, num_classes, distance) for rows in test.split(_CHUNK)]
    )
    return float((predicted == y[test]).double().mean())


def _vote(
    queries: torch.Tensor,
    keys: torch.Tensor,
    key_labels: torch.Tensor,
    k: int,
    num_classes: int,
    distance: str,
) -> torch.Tensor:
    if distance == "cosine":
        dist = -(queries @ keys.T)
    else:
        dist = torch.cdist(queries, keys, compute_mode="donot_use_mm_for_euclid_dist")
    order = dist.topk(k, dim=1, largest=False).indices  # sorted nearest first
    neighbour_labels = key_labels[order]  # (Q, k)
    votes = torch.zeros(len(queries), num_classes, dtype=torch.float64)
    votes.scatter_add_(1, neighbour_labels, torch.ones_like(neighbour_labels, dtype=torch.float64))
    first_rank = torch.full((len(queries), num_classes), float(k), dtype=torch.float64)
    ranks = torch.arange(k, dtype=torch.float64).expand(len(queries), k)
    first_rank.scatter_reduce_(1, neighbour_labels, ranks, reduce="amin")
    return (votes + (k - first_rank) / (k + 1)).argmax(dim=1)  # the bonus (< 1) only breaks ties
