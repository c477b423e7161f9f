import math

import numpy as np
import pytest
import torch

from lt_transfer.ranking import leep


def test_hand_computed():
    theta = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    y = np.array([0, 1, 0])
    joint = np.zeros((2, 2))  # P(y, z)
    for i in range(3):
        joint[y[i]] += theta[i] / 3
    conditional = joint / joint.sum(0)  # P(y | z)
    expected = np.mean(
        [math.log(sum(conditional[y[i], z] * theta[i, z] for z in range(2))) for i in range(3)]
    )
    assert expected == pytest.approx(-0.4087, abs=1e-4)  # worked out on paper as well
    assert leep(torch.tensor(theta), torch.tensor(y)) == pytest.approx(expected, rel=1e-9)


def test_source_labels_that_determine_the_target_labels_give_zero():
    one_hot = torch.eye(3)[[0, 1, 2, 2, 1]]
    assert leep(one_hot, torch.tensor([2, 0, 1, 1, 0])) == pytest.approx(0.0, abs=1e-12)


def test_logits_need_from_logits():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    assert leep(logits, labels, from_logits=True) == pytest.approx(leep(logits.softmax(1), labels), rel=1e-6)
    with pytest.raises(ValueError, match="pass from_logits=True"):
        leep(logits, labels)
