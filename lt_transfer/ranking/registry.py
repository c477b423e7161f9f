"""The transferability scores by name, with what each needs from a candidate model."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass

from lt_transfer.ranking._inputs import ArrayLike
from lt_transfer.ranking.h_score import h_score
from lt_transfer.ranking.knn import knn_accuracy
from lt_transfer.ranking.leep import leep
from lt_transfer.ranking.linear_probe import linear_probe_accuracy
from lt_transfer.ranking.logme import logme
from lt_transfer.ranking.nce import nce
from lt_transfer.ranking.transrate import transrate

__all__ = ["SCORES", "ScoreSpec", "get_score", "score_names"]


@dataclass(frozen=True)
class ScoreSpec:
    """A transferability score: call it as ``spec(inputs, labels)``; higher is always better.

    Attributes:
        name: key in :data:`SCORES`.
        function: ``function(inputs, labels, **kwargs) -> float``.
        needs_source_logits: ``inputs`` are the candidate's *source-classifier logits* on the
            target samples (only candidates with a classification head qualify); otherwise
            they are its ``(N, D)`` features.
        paper: where the score comes from.

    Example:
        >>> import torch
        >>> spec = SCORES["nce"]
        >>> spec.needs_source_logits, spec(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1]))
        (True, 0.0)
    """

    name: str
    function: Callable[..., float]
    needs_source_logits: bool
    paper: str

    def __call__(self, inputs: ArrayLike, labels: ArrayLike, **kwargs) -> float:
        return self.function(inputs, labels, **kwargs)


SCORES: dict[str, ScoreSpec] = {
    spec.name: spec
    for spec in (
        ScoreSpec("logme", logme, False, "You et al., ICML 2021"),
        ScoreSpec("leep", functools.partial(leep, from_logits=True), True, "Nguyen et al., ICML 2020"),
        ScoreSpec("nce", nce, True, "Tran et al., ICCV 2019"),
        ScoreSpec("h_score", h_score, False, "Bao et al., ICIP 2019; shrinkage: Ibrahim et al., 2022"),
        ScoreSpec("transrate", transrate, False, "Huang et al., ICML 2022"),
        ScoreSpec("knn", knn_accuracy, False, "k-NN accuracy on a held-out slice (baseline)"),
        ScoreSpec("linear_probe", linear_probe_accuracy, False, "linear-probe accuracy, held out (baseline)"),
    )
}


def score_names(needs_source_logits: bool | None = None) -> list[str]:
    """Names in :data:`SCORES`, optionally only those that do (or do not) need source logits.

    Example:
        >>> score_names(needs_source_logits=True)
        ['leep', 'nce']
    """
    return [
        name
        for name, spec in SCORES.items()
        if needs_source_logits is None or spec.needs_source_logits == needs_source_logits
    ]


def get_score(name: str) -> ScoreSpec:
    """The score called ``name``.

    Raises:
        ValueError: an unknown name, with the close matches and every known name.

    Example:
        >>> get_score("logme").needs_source_logits
        False
    """
    if name not in SCORES:
        close = difflib.get_close_matches(name, list(SCORES), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"unknown transferability score {name!r}.{hint} Known scores: {list(SCORES)}.")
    return SCORES[name]
