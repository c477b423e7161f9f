"""Checkpoint-selection helpers: the pick, its regret, the Spearman correlation (by hand and vs scipy)."""

from __future__ import annotations

import math

import pytest
import torch

from lt_transfer.metrics import selected_checkpoints, selection_regret, spearman_correlation

NAN = float("nan")


def test_pick_follows_the_mode_and_keeps_ties():
    scores = [0.3, 0.7, 0.7, 0.1]
    assert selected_checkpoints(scores) == [1, 2]
    assert selected_checkpoints(scores, mode="min") == [3]
    assert selected_checkpoints(torch.tensor([2.0, -1.0])) == [0]


def test_non_finite_scores_are_never_picked():
    assert selected_checkpoints([NAN, 0.2, math.inf, -math.inf], mode="max") == [1]
    assert selected_checkpoints([NAN, 0.2, -math.inf], mode="min") == [1]
    assert selected_checkpoints([NAN, NAN]) == []
    assert math.isnan(selection_regret([NAN, NAN], [50.0, 60.0]))


def test_regret_by_hand():
    accuracies = [60.0, 72.5, 80.0, 66.0]
    # max: picks 72.5 -> 80 - 72.5
    assert selection_regret([0.1, 0.9, 0.5, 0.2], accuracies) == pytest.approx(7.5)
    # min (a risk like DEV): picks index 2, the oracle -> 0
    assert selection_regret([3.0, 2.0, 1.0, 4.0], accuracies, mode="min") == 0.0
    # tie between 60 and 66: mean 63 -> 17
    assert selection_regret([5.0, 1.0, 1.0, 5.0], accuracies) == pytest.approx(17.0)
    # "last checkpoint" as a score: the steps; two runs end at step 300 -> mean of their accuracies
    assert selection_regret([100, 300, 100, 300], accuracies) == pytest.approx(80.0 - (72.5 + 66.0) / 2)
    # a NaN score is skipped, not picked
    assert selection_regret([NAN, 0.1, 0.0, 0.2], accuracies) == pytest.approx(14.0)


def test_spearman_by_hand_and_against_scipy():
    # ranks (1, 3, 2, 4) vs (1, 2, 3, 4): 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman_correlation([0.1, 0.4, 0.2, 0.8], [60.0, 70.0, 75.0, 90.0]) == pytest.approx(0.8)
    assert spearman_correlation([1, 2, 3], [9.0, 5.0, 1.0]) == pytest.approx(-1.0)
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (40,), generator=g).double()  # many ties
    accuracies = torch.randint(50, 60, (40,), generator=g).double()
    expected = stats.spearmanr(scores.numpy(), accuracies.numpy()).statistic
    assert spearman_correlation(scores, accuracies) == pytest.approx(expected, abs=1e-12)
    assert spearman_correlation(scores.tolist(), accuracies.tolist()) == pytest.approx(expected, abs=1e-12)


def test_spearman_skips_non_finite_scores_and_is_nan_when_undefined():
    assert spearman_correlation([NAN, 1.0, 2.0, 3.0], [99.0, 1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert math.isnan(spearman_correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))  # constant scores
    assert math.isnan(spearman_correlation([1.0, 2.0], [5.0, 5.0]))  # constant accuracies
    assert math.isnan(spearman_correlation([NAN, 2.0], [1.0, 2.0]))  # one pair left


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: selection_regret([1.0, 2.0], [1.0]), "2 scores but 1 accuracies"),
        (lambda: spearman_correlation([], []), r"scores=\.\.\.\) must be a non-empty 1-D"),
        (lambda: selection_regret([[1.0]], [1.0]), "non-empty 1-D"),
        (lambda: selection_regret([1.0, 2.0], [NAN, 1.0]), r"accuracies=\.\.\.\) has NaN"),
        (lambda: selection_regret([1.0], [1.0], mode="best"), r"mode='best'\) must be 'max'"),
        (lambda: selected_checkpoints([1.0], mode="up"), r"selected_checkpoints\(mode='up'\)"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
