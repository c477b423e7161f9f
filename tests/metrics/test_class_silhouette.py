import importlib

import numpy as np
import pytest
import torch
from sklearn.metrics import silhouette_score

from lt_transfer.metrics import ClassSilhouette, class_silhouette

# the package exports a function of the module's name, so fetch the module itself
silhouette_module = importlib.import_module("lt_transfer.metrics.class_silhouette")


def _one_hot(labels: list[int], num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(labels), num_classes).float()


def test_hand_computed_two_clusters():
    # clusters {0, 1} and {4, 5} on a line: a = 1 everywhere; b = 4.5 (ends) or 3.5 (inner points)
    features = torch.tensor([[0.0], [1.0], [4.0], [5.0]])
    expected = (3.5 / 4.5 + 2.5 / 3.5) / 2
    assert class_silhouette(features, _one_hot([0, 0, 1, 1], 2)).item() == pytest.approx(expected, rel=1e-6)


def test_hand_computed_singleton_counts_zero():
    # {0, 1} and the singleton {10}: s = (10 - 1)/10, (9 - 1)/9 and 0 for the singleton
    features = torch.tensor([[0.0], [1.0], [10.0]])
    expected = (0.9 + 8 / 9 + 0.0) / 3
    assert class_silhouette(features, _one_hot([0, 0, 1], 2)).item() == pytest.approx(expected, rel=1e-6)


def test_collapsed_predictions_score_minus_one():
    features = torch.randn(8, 3)
    assert class_silhouette(features, _one_hot([2] * 8, 3)).item() == -1.0


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_matches_sklearn_and_chunking(distance, monkeypatch):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(90, 6, generator=g)
    logits = 2 * features[:, :4] + torch.randn(90, 4, generator=g)
    expected = silhouette_score(features.double().numpy(), logits.argmax(1).numpy(), metric=distance)
    assert class_silhouette(features, logits, distance).item() == pytest.approx(expected, rel=1e-5)
    monkeypatch.setattr(silhouette_module, "_CHUNK", 7)
    assert class_silhouette(features, logits, distance).item() == pytest.approx(expected, rel=1e-5)


def test_class_equals_functional_over_batches():
    g = torch.Generator().manual_seed(3)
    features = torch.randn(60, 5, generator=g)
    logits = features[:, :3] + 0.5 * torch.randn(60, 3, generator=g)
    metric = ClassSilhouette(distance="cosine")
    for f, p in zip(features.split(25), logits.split(25), strict=True):
        metric.update(f, p)
    expected = class_silhouette(features, logits, "cosine").item()
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)
    assert np.isfinite(expected)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_bad_input():
    with pytest.raises(ValueError, match="got 3 samples for 4 classes"):
        class_silhouette(torch.randn(3, 2), torch.randn(3, 4))
    with pytest.raises(ValueError, match="2 NaN/Inf"):
        class_silhouette(torch.tensor([[float("nan")], [float("inf")], [0.0]]), torch.randn(3, 2))
    with pytest.raises(ValueError, match="distance='manhattan'"):
        ClassSilhouette(distance="manhattan")
    with pytest.raises(ValueError, match="N=4 feature rows"):
        class_silhouette(torch.randn(4, 2), torch.randn(3, 2))
    metric = ClassSilhouette()
    metric.update(torch.randn(2, 3), torch.randn(2, 5))
    with pytest.raises(ValueError, match="ClassSilhouette needs at least as many target samples"):
        metric.compute()
    assert torch.isnan(ClassSilhouette().compute())
