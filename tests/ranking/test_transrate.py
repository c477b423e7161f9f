import math

import numpy as np
import pytest
import torch

from lt_transfer.ranking import transrate


def test_hand_computed_one_dimension():
    # [0, 0, 3] centred is [-1, -1, 2]; eps = 1: R = log(1 + 6/3) / 2, and the class rates are
    # log(1 + 2/2) / 2 and log(1 + 4/1) / 2
    expected = 0.5 * math.log(3) - (0.5 * math.log(2) + 0.5 * math.log(5)) / 2
    assert transrate(torch.tensor([[0.0], [0.0], [3.0]]), torch.tensor([0, 0, 1]), eps=1.0) == pytest.approx(
        expected, rel=1e-12
    )


def test_two_balanced_classes_with_equal_spread_score_zero():
    # the documented peculiarity: the centred class means are +-mu and add the same term to each class
    features = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]])
    assert transrate(features, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("n", "d"), [(30, 5), (8, 20)])
def test_matches_the_feature_space_log_determinants(n, d):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    z = rng.normal(size=(n, d)) + 3 * np.eye(2)[labels] @ rng.normal(size=(2, d))
    z = z - z.mean(0)

    def rate(rows: np.ndarray) -> float:
        return 0.5 * np.linalg.slogdet(np.eye(d) + rows.T @ rows / (len(rows) * 1e-2))[1]

    expected = rate(z) - np.mean([rate(z[labels == c]) for c in range(2)])
    assert transrate(torch.tensor(z), torch.tensor(labels), eps=1e-2) == pytest.approx(expected, rel=1e-9)


def test_bad_input():
    with pytest.raises(ValueError, match="eps=0"):
        transrate(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), eps=0)
