import math

import pytest
import torch

from lt_transfer.metrics import InformationMaximization, information_maximization, prediction_entropy


def test_confident_diverse_is_max_and_collapsed_is_zero():
    diverse = 20 * torch.eye(4)
    collapsed = 20 * torch.eye(4)[[0, 0, 0, 0]]
    assert information_maximization(diverse).item() == pytest.approx(math.log(4), abs=1e-4)
    assert information_maximization(collapsed).item() == pytest.approx(0.0, abs=1e-4)
    # entropy alone cannot tell the two apart: both are confident
    assert prediction_entropy(diverse).item() == pytest.approx(prediction_entropy(collapsed).item(), abs=1e-6)


def test_class_equals_functional_over_batches():
    logits = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    metric = InformationMaximization(num_classes=3, normalize=True)
    for chunk in logits.split(9):
        metric.update(chunk)
    expected = information_maximization(logits, normalize=True).item()
    assert metric.compute().item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_validation():
    with pytest.raises(ValueError, match="num_classes=1"):
        InformationMaximization(num_classes=1)
    metric = InformationMaximization(num_classes=3)
    with pytest.raises(ValueError, match="4 classes"):
        metric.update(torch.zeros(2, 4))
    assert torch.isnan(InformationMaximization(num_classes=2).compute())
