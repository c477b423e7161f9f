"""Transferability scores: rank pretrained candidates on a target task before fine-tuning.

Each score is a function of a candidate's outputs on a labelled target sample, computed
from one forward pass: ``(features, labels)`` for LogME, the H-score, TransRate and the
k-NN / linear-probe baselines; ``(source-classifier outputs, labels)`` for LEEP and NCE,
which need a candidate with its source classification head. Higher is better for all of
them. :data:`SCORES` maps each name to a :class:`ScoreSpec` that records whether it needs
source logits; :func:`score_names` lists them.

:func:`rank_models` runs candidate models (backbone specs, checkpoints, modules:
:class:`Candidate`) over a target datamodule once each, computes the scores and returns a
:class:`RankingTable` (CSV, markdown and a bar chart); ``lt-transfer rank`` is its command
line (:mod:`lt_transfer.ranking.command`).
"""

from lt_transfer.ranking._inputs import stratified_split
from lt_transfer.ranking.candidates import Candidate, LoadedCandidate, as_candidate, load_candidate
from lt_transfer.ranking.h_score import h_score, ledoit_wolf_shrinkage
from lt_transfer.ranking.knn import knn_accuracy
from lt_transfer.ranking.leep import leep
from lt_transfer.ranking.linear_probe import linear_probe_accuracy
from lt_transfer.ranking.logme import logme
from lt_transfer.ranking.nce import nce
from lt_transfer.ranking.plotting import plot_ranking
from lt_transfer.ranking.rank import rank_models
from lt_transfer.ranking.registry import SCORES, ScoreSpec, get_score, score_names
from lt_transfer.ranking.table import CandidateResult, RankingTable
from lt_transfer.ranking.transrate import coding_rate, transrate

__all__ = [
    "SCORES",
    "Candidate",
    "CandidateResult",
    "LoadedCandidate",
    "RankingTable",
    "ScoreSpec",
    "as_candidate",
    "coding_rate",
    "get_score",
    "h_score",
    "knn_accuracy",
    "leep",
    "ledoit_wolf_shrinkage",
    "linear_probe_accuracy",
    "load_candidate",
    "logme",
    "nce",
    "plot_ranking",
    "rank_models",
    "score_names",
    "stratified_split",
    "transrate",
]
