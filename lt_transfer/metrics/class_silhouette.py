"""Class-cluster quality: silhouette of the target features grouped by predicted class.

A model that adapted well maps each target class to its own compact, well separated
region of feature space, and its predictions follow those regions. The silhouette
coefficient (Rousseeuw, "Silhouettes: a graphical aid to the interpretation and
validation of cluster analysis", J. Comput. Appl. Math. 1987) of the features, with the
*predicted* classes as clusters, measures exactly that:

.. math::
    a_i = \\frac{1}{|c_i| - 1} \\sum_{j \\in c_i, j \\ne i} d_{ij}, \\quad
    b_i = \\min_{c \\ne c_i} \\frac{1}{|c|} \\sum_{j \\in c} d_{ij}, \\quad
    s_i = \\frac{b_i - a_i}{\\max(a_i, b_i)}, \\quad
    \\mathrm{score} = \\frac{1}{N} \\sum_i s_i,

with :math:`s_i = 0` for a sample alone in its class. It lies in :math:`[-1, 1]`; higher is
better (``mode="max"``). Musgrave, Belongie & Lim ("Three New Validators and a Large-Scale
Benchmark Ranking for Unsupervised Domain Adaptation", 2022) study such class-cluster
validators, with the silhouette and with the adjusted mutual information (AMI) between
predictions and k-means clusters. We use the silhouette because it is deterministic and
has no parameter: AMI needs a k-means run (random initialisation, a choice of ``k``) whose
result changes with the seed and with how samples are split across processes, so it could
not equal the single-process value under DDP. A collapsed model (fewer than 2 predicted
classes) gets the minimum, -1.
"""

from __future__ import annotations

from typing import Literal

import torch
from torchmetrics import Metric

from lt_transfer.metrics._checks import check_enough_samples, check_features
from lt_transfer.metrics._states import concatenated

__all__ = ["ClassSilhouette", "class_silhouette"]

Distance = Literal["euclidean", "cosine"]
_DISTANCES = ("euclidean", "cosine")
_CHUNK = 1024  # rows of the (N, N) distance matrix held at once


def _silhouette(features: torch.Tensor, labels: torch.Tensor, distance: Distance) -> torch.Tensor:
    x = features.double()
    if distance == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    _, labels = torch.unique(labels, return_inverse=True)
    one_hot = torch.nn.functional.one_hot(labels).double()  # (N, K) over predicted classes only
    if one_hot.shape[1] < 2:
        return features.new_tensor(-1.0, dtype=torch.float32)
    counts = one_hot.sum(0)
    total = x.new_zeros(())
    for start in range(0, len(x), _CHUNK):
        rows = x[start : start + _CHUNK]
        if distance == "cosine":
            dist = (1.0 - rows @ x.T).clamp_min(0.0)
        else:
            dist = torch.cdist(rows, x, compute_mode="donot_use_mm_for_euclid_dist")
        mean_to = dist @ one_hot / counts  # (b, K) mean distance to each class (own class incl. self)
        own = labels[start : start + len(rows)]
        own_size = counts[own]
        a = mean_to.gather(1, own[:, None])[:, 0] * own_size / (own_size - 1).clamp_min(1.0)
        b = mean_to.scatter(1, own[:, None], float("inf")).min(dim=1).values
        denominator = torch.maximum(a, b)
        s = torch.where(denominator > 0, (b - a) / denominator.clamp_min(1e-300), 0.0)
        total = total + torch.where(own_size > 1, s, 0.0).sum()
    return (total / len(x)).float()


def _check_distance(distance: str, name: str) -> None:
    if distance not in _DISTANCES:
        raise ValueError(f"{name}(distance={distance!r}) must be one of {_DISTANCES}.")


def class_silhouette(
    features: torch.Tensor, preds: torch.Tensor, distance: Distance = "euclidean", validate_args: bool = True
) -> torch.Tensor:
    """Silhouette of ``(N, D)`` target features clustered by the argmax of ``(N, C)`` predictions.

    Costs :math:`O(N^2 D)` time and :math:`O(1024 \\cdot N)` memory.

    Args:
        features: ``(N, D)`` target features (e.g. the backbone output).
        preds: ``(N, C)`` logits or probabilities of the same samples.
        distance: ``"euclidean"`` or ``"cosine"`` (``1 - cos``) distance between features.
        validate_args: check shapes, finiteness and that ``N >= C``.

    Raises:
        ValueError: on bad shapes, NaN/Inf features, an unknown distance, or fewer samples
            than classes.

    Example:
        >>> features = torch.tensor([[0.0], [1.0], [4.0], [5.0]])
        >>> preds = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        >>> class_silhouette(features, preds)  # a = 1; b = 4.5 or 3.5: mean of 3.5/4.5 and 2.5/3.5
        tensor(0.7460)
    """
    if validate_args:
        _check_distance(distance, "class_silhouette")
        check_features(features, "features", "class_silhouette")
        _check_preds(preds, len(features), "class_silhouette")
        check_enough_samples(len(features), preds.shape[1], "class_silhouette")
    return _silhouette(features.detach(), preds.detach().argmax(dim=1), distance)


def _check_preds(preds: torch.Tensor, num_samples: int, name: str) -> None:
    if preds.dim() != 2 or preds.shape[1] < 2 or len(preds) != num_samples:
        raise ValueError(
            f"{name}: preds must be (N, C) logits or probabilities with C >= 2 for the N={num_samples} "
            f"feature rows, got shape {tuple(preds.shape)}."
        )


class ClassSilhouette(Metric):
    """Silhouette of target features by predicted class over an epoch (no labels; higher is better).

    Keeps the features and the predicted classes (``cat`` states, gathered from every
    process under DDP), so the epoch value equals :func:`class_silhouette` on all samples.

    Args:
        distance: ``"euclidean"`` or ``"cosine"`` distance between features.
        validate_args: check input shapes and finiteness.

    Raises:
        ValueError: an unknown distance; at ``compute``, fewer target samples than classes.

    Example:
        >>> metric = ClassSilhouette()
        >>> metric.update(torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0, 0.0], [2.0, 0.0]]))
        >>> metric.update(torch.tensor([[4.0], [5.0]]), torch.tensor([[0.0, 2.0], [0.0, 2.0]]))
        >>> metric.compute()
        tensor(0.7460)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, distance: Distance = "euclidean", validate_args: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        _check_distance(distance, "ClassSilhouette")
        self.distance = distance
        self.validate_args = validate_args
        self.add_state("features", [], dist_reduce_fx="cat")
        self.add_state("predicted", [], dist_reduce_fx="cat")
        self.add_state("num_classes", torch.tensor(0, dtype=torch.long), dist_reduce_fx="max")

    def update(self, features: torch.Tensor, preds: torch.Tensor) -> None:
        """Add ``(N, D)`` target features and the ``(N, C)`` predictions for them."""
        features = features.detach().flatten(1)
        if self.validate_args:
            check_features(features, "features", "ClassSilhouette")
            _check_preds(preds, len(features), "ClassSilhouette")
        self.features.append(features.float())
        self.predicted.append(preds.detach().argmax(dim=1))
        self.num_classes.fill_(max(int(self.num_classes), preds.shape[1]))

    def compute(self) -> torch.Tensor:
        """The silhouette of every target sample seen; NaN when nothing was seen."""
        features = concatenated(self.features)
        if features is None:
            return torch.tensor(float("nan"))
        check_enough_samples(len(features), int(self.num_classes), "ClassSilhouette")
        return _silhouette(features, concatenated(self.predicted), self.distance)
