import numpy as np
import pytest
import torch
from sklearn.covariance import ledoit_wolf

from lt_transfer.ranking import h_score, ledoit_wolf_shrinkage


def test_hand_computed_one_dimension():
    # variance of [0, 2, 4, 6] is 5 (1/N); class means 1 and 5 around 3: between-class variance 4
    features = torch.tensor([[0.0], [2.0], [4.0], [6.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert h_score(features, labels, regularized=False) == pytest.approx(0.8)
    assert h_score(features, labels) == pytest.approx(0.8)  # Ledoit-Wolf cannot shrink one dimension


def test_shrinkage_matches_scikit_learn():
    x = np.random.default_rng(0).normal(size=(15, 6)) * np.arange(1, 7)
    centred = torch.tensor(x - x.mean(0))
    assert ledoit_wolf_shrinkage(centred) == pytest.approx(ledoit_wolf(x)[1], rel=1e-10)


def test_regularised_score_by_the_formula():
    rng = np.random.default_rng(1)
    labels = np.arange(20) % 4
    x = rng.normal(size=(20, 8)) + np.eye(4)[labels] @ rng.normal(size=(4, 8))
    shrunk, alpha = ledoit_wolf(x)  # scikit-learn's estimate, an independent implementation
    centred = x - x.mean(0)
    means = np.stack([centred[labels == c].mean(0) for c in range(4)])
    between = sum((labels == c).mean() * np.outer(means[c], means[c]) for c in range(4))
    expected = np.trace(np.linalg.solve(shrunk, (1 - alpha) * between))
    assert 0 < alpha < 1
    assert h_score(torch.tensor(x), torch.tensor(labels)) == pytest.approx(expected, rel=1e-8)
    plain = np.trace(np.linalg.pinv(centred.T @ centred / 20) @ between)
    assert h_score(torch.tensor(x), torch.tensor(labels), regularized=False) == pytest.approx(plain, rel=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="fewer samples \\(3\\) than classes \\(5\\)"):
        h_score(torch.randn(3, 2), torch.tensor([0, 4, 4]))
