import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

from lt_transfer.ranking import logme


def _max_log_evidence(f: np.ndarray, y: np.ndarray) -> float:
    """max over (alpha, beta) of log N(y; 0, F F^T / alpha + I / beta), by a generic optimiser."""
    n = len(f)

    def negative(log_params: np.ndarray) -> float:
        alpha, beta = np.exp(log_params)
        return -multivariate_normal(np.zeros(n), f @ f.T / alpha + np.eye(n) / beta).logpdf(y)

    best = None
    for start in ([0.0, 0.0], [3.0, -1.0], [-2.0, 2.0]):
        result = minimize(negative, start, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
        best = result if best is None or result.fun < best.fun else best
    return -best.fun


@pytest.mark.parametrize(("n", "d"), [(30, 4), (12, 20)])
def test_equals_the_maximised_marginal_likelihood(n, d):
    # an independent formulation: the evidence is the Gaussian marginal likelihood of each one-hot
    # column, maximised over (alpha, beta) numerically; LogME averages it over classes, divided by N
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    f = rng.normal(size=(n, d)) + np.eye(3)[labels] @ rng.normal(size=(3, d))
    expected = np.mean([_max_log_evidence(f, (labels == c).astype(float)) for c in range(3)]) / n
    assert logme(torch.tensor(f), torch.tensor(labels)) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_prefers_informative_features_and_accepts_numpy_float32():
    rng = np.random.default_rng(1)
    labels = np.arange(90) % 3
    informative = 2 * np.eye(3)[labels] + rng.normal(size=(90, 3))
    noise = rng.normal(size=(90, 3))
    assert logme(informative, labels) > logme(noise, labels)
    assert logme(informative.astype(np.float32), labels) == pytest.approx(
        logme(informative, labels), rel=1e-5
    )


def test_bad_input():
    with pytest.raises(ValueError, match="logme: features hold 1 NaN/Inf"):
        logme(torch.tensor([[0.0], [float("inf")], [1.0]]), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="single class"):
        logme(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="max_iter=0"):
        logme(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), max_iter=0)
