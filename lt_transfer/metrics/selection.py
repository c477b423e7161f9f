"""How well a validator chooses checkpoints: its pick, the regret of that pick, its rank correlation.

A label-free validator (SND, BNM, IM, DEV, ...; :mod:`lt_transfer.callbacks.target_validation`)
is only as good as the checkpoints it chooses. Given, for a set of checkpoints, each
validator score and the true target accuracy (measured on labelled test data, only to judge
the validator), these functions give what the selection benchmark (``scripts/bench_selection.py``)
reports, as in Musgrave et al. ("Three New Validators and a Large-Scale Benchmark Ranking for
Unsupervised Domain Adaptation", 2022) and You et al. (DEV, ICML 2019):

* :func:`selected_checkpoints`: the checkpoints with the best score (``mode="max"`` or
  ``"min"``, the validator's ``mode``);
* :func:`selection_regret`: the accuracy of the oracle-best checkpoint minus the accuracy of
  the pick; when several checkpoints tie for the best score, the mean accuracy of the tied
  ones (the expected regret of breaking the tie at random);
* :func:`spearman_correlation`: the Spearman rank correlation of scores and accuracies
  (Pearson correlation of the ranks, tied values sharing their mean rank).

Scores that are NaN or infinite (a validator that could not be computed) are never picked and
are left out of the correlation. All functions take sequences of numbers or 1-D tensors and
compute in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

__all__ = ["selected_checkpoints", "selection_regret", "spearman_correlation"]

Values = Sequence[float] | torch.Tensor


def _vector(values: Values, argument: str, where: str) -> torch.Tensor:
    vector = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    if vector.dim() != 1 or len(vector) == 0:
        raise ValueError(
            f"{where}({argument}=...) must be a non-empty 1-D sequence of numbers, one per checkpoint; "
            f"got shape {tuple(vector.shape)}."
        )
    return vector


def _check_mode(mode: str, where: str) -> None:
    if mode not in ("max", "min"):
        raise ValueError(f"{where}(mode={mode!r}) must be 'max' (higher score is better) or 'min'.")


def _pair(scores: Values, accuracies: Values, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _vector(scores, "scores", where), _vector(accuracies, "accuracies", where)
    if len(x) != len(y):
        raise ValueError(
            f"{where}: {len(x)} scores but {len(y)} accuracies; give one of each per checkpoint."
        )
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"{where}(accuracies=...) has NaN or infinite values; accuracies must be finite.")
    return x, y


def selected_checkpoints(scores: Values, mode: Literal["max", "min"] = "max") -> list[int]:
    """Indices of the checkpoints a validator picks: every one with the best finite score.

    Args:
        scores: the validator's score of each checkpoint.
        mode: ``"max"`` if a higher score is better, ``"min"`` if lower is better.

    Returns:
        The indices tied for the best score (usually one); ``[]`` when no score is finite.

    Raises:
        ValueError: an empty or non-1-D ``scores``, or an unknown ``mode``.

    Example:
        >>> selected_checkpoints([0.2, 0.9, float("nan"), 0.9])
        [1, 3]
        >>> selected_checkpoints([3.0, 1.0, 2.0], mode="min")
        [1]
    """
    _check_mode(mode, "selected_checkpoints")
    x = _vector(scores, "scores", "selected_checkpoints")
    finite = torch.isfinite(x)
    if not bool(finite.any()):
        return []
    best = x[finite].max() if mode == "max" else x[finite].min()
    return [int(i) for i in torch.nonzero(finite & (x == best)).flatten()]


def selection_regret(scores: Values, accuracies: Values, mode: Literal["max", "min"] = "max") -> float:
    """Oracle-best accuracy minus the accuracy of the checkpoint the validator picks.

    .. math::
        \\mathrm{regret} = \\max_i a_i - \\frac{1}{|S|} \\sum_{i \\in S} a_i, \\qquad
        S = \\operatorname{arg\\,best}_i\\, s_i

    (``S``: the checkpoints tied for the best score, :func:`selected_checkpoints`). 0 means the
    validator found the best checkpoint; the unit is that of ``accuracies`` (percentage points
    for accuracies in %).

    Args:
        scores: the validator's score of each checkpoint.
        accuracies: the true (target test) accuracy of each checkpoint, finite.
        mode: the validator's ``mode``: ``"max"`` or ``"min"``.

    Returns:
        The regret (>= 0), or NaN when no score is finite (nothing can be picked).

    Raises:
        ValueError: inputs of different lengths, empty or not 1-D, non-finite accuracies, or an
            unknown ``mode``.

    Example:
        >>> selection_regret([0.1, 0.5, 0.3], [70.0, 65.0, 80.0])  # picks 65, the best is 80
        15.0
        >>> selection_regret([2.0, 2.0, 5.0], [70.0, 80.0, 60.0], mode="min")  # a tie: mean of 70 and 80
        5.0
    """
    _check_mode(mode, "selection_regret")
    x, y = _pair(scores, accuracies, "selection_regret")
    picked = selected_checkpoints(x, mode)
    if not picked:
        return math.nan
    return float(y.max() - y[picked].mean())


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    unique, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0).to(torch.float64)  # 1-based rank of the last of each tied value
    return (last - (counts.to(torch.float64) - 1) / 2)[inverse]


def spearman_correlation(scores: Values, accuracies: Values) -> float:
    """Spearman rank correlation between validator scores and accuracies over checkpoints.

    The Pearson correlation of the ranks, tied values taking the mean of their ranks (as
    ``scipy.stats.spearmanr``). Pairs with a non-finite score are left out. For a ``mode="min"``
    validator a good one correlates *negatively*; negate its scores to read higher as better.

    Args:
        scores: the validator's score of each checkpoint.
        accuracies: the true accuracy of each checkpoint, finite.

    Returns:
        A value in [-1, 1], or NaN with fewer than 2 finite scores or when the scores or
        accuracies left are all equal (the correlation is undefined).

    Raises:
        ValueError: inputs of different lengths, empty or not 1-D, or non-finite accuracies.

    Example:
        >>> round(spearman_correlation([0.1, 0.4, 0.2, 0.8], [60.0, 70.0, 75.0, 90.0]), 4)
        0.8
        >>> round(spearman_correlation([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]), 4)
        -1.0
    """
    x, y = _pair(scores, accuracies, "spearman_correlation")
    keep = torch.isfinite(x)
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return math.nan
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = torch.sqrt((rx * rx).sum() * (ry * ry).sum())
    if float(denominator) == 0.0:
        return math.nan
    return float((rx * ry).sum() / denominator)
