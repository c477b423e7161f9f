import math

import pytest
import torch

from lt_transfer.ranking import nce


def test_hand_computed():
    # P(z=0, y=0) = P(z=0, y=1) = 1/4, P(z=1, y=1) = 1/2; P(z=0) = P(z=1) = 1/2
    expected = 0.25 * math.log(0.5) + 0.25 * math.log(0.5) + 0.5 * math.log(1.0)
    assert nce(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])) == pytest.approx(expected, rel=1e-12)


def test_deterministic_and_independent_labels():
    assert nce(torch.tensor([5, 5, 7, 7]), torch.tensor([1, 1, 0, 0])) == pytest.approx(0.0, abs=1e-12)
    assert nce(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])) == pytest.approx(
        -math.log(2), rel=1e-12
    )


def test_source_outputs_are_reduced_to_their_argmax():
    logits = torch.tensor([[2.0, 0.0], [3.0, 1.0], [0.0, 1.0], [-1.0, 4.0]])
    assert nce(logits, torch.tensor([0, 1, 1, 1])) == nce(
        torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])
    )
    with pytest.raises(ValueError, match="nce: source_preds must be"):
        nce(torch.zeros(4, 2, 2), torch.tensor([0, 1, 1, 1]))
    with pytest.raises(ValueError, match="source_preds hold 1 NaN/Inf"):
        nce(torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), torch.tensor([0, 1]))
