import numpy as np
import pytest
import torch

import lt_transfer.ranking.knn as knn_module
from lt_transfer.ranking import knn_accuracy, linear_probe_accuracy, stratified_split


def test_stratified_split_is_seeded_and_per_class():
    labels = torch.tensor([0] * 6 + [1] * 4)
    train, test = stratified_split(labels, 2, 0.5, seed=3, name="t")
    assert sorted(torch.cat([train, test]).tolist()) == list(range(10))
    assert torch.bincount(labels[test]).tolist() == [3, 2]
    again = stratified_split(labels, 2, 0.5, seed=3, name="t")
    assert torch.equal(again[1], test)
    assert not torch.equal(stratified_split(labels, 2, 0.5, seed=4, name="t")[1], test)


def test_linear_probe_on_constant_features_predicts_the_majority_class():
    # 6 + 4 samples, half held out per class: the probe trains on 3 + 2 samples, sees no signal and
    # predicts class 0 everywhere: 3 of the 5 held-out samples are right
    features = torch.zeros(10, 3)
    labels = torch.tensor([0] * 6 + [1] * 4)
    assert linear_probe_accuracy(features, labels, test_fraction=0.5) == pytest.approx(0.6)


def test_linear_probe_on_separable_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    features = 5 * torch.nn.functional.one_hot(labels).float() + torch.randn(60, 3, generator=g) * 0.1
    assert linear_probe_accuracy(features, labels) == 1.0


@pytest.mark.parametrize(("k", "distance"), [(1, "euclidean"), (2, "euclidean"), (3, "cosine")])
def test_knn_matches_a_brute_force_vote(k, distance, monkeypatch):
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 3
    x = rng.normal(size=(40, 4)) + np.eye(3, 4)[labels]
    train, test = (t.numpy() for t in stratified_split(torch.tensor(labels), 3, 0.25, 0, "knn"))
    if distance == "cosine":
        x_n = x / np.linalg.norm(x, axis=1, keepdims=True)
        dist = 1 - x_n[test] @ x_n[train].T
    else:
        dist = np.linalg.norm(x[test][:, None] - x[train][None], axis=2)
    correct = 0
    for row, truth in zip(dist, labels[test], strict=True):
        nearest = labels[train][np.argsort(row, kind="stable")[:k]]
        counts = np.bincount(nearest, minlength=3)
        tied = [c for c in range(3) if counts[c] == counts.max()]
        predicted = next(c for c in nearest if c in tied)  # ties: the class of the nearest tied neighbour
        correct += predicted == truth
    expected = correct / len(test)
    monkeypatch.setattr(knn_module, "_CHUNK", 4)  # several chunks of held-out samples
    assert knn_accuracy(torch.tensor(x), torch.tensor(labels), k=k, distance=distance) == pytest.approx(
        expected
    )


def test_knn_tie_goes_to_the_nearest_class():
    # one training sample per class; the held-out samples sit nearer their own class's sample
    features = torch.tensor([[0.0], [0.4], [1.0], [0.7]])
    labels = torch.tensor([0, 0, 1, 1])
    assert knn_accuracy(features, labels, k=2, test_fraction=0.5, distance="euclidean") in (0.5, 1.0)
    train, test = stratified_split(labels, 2, 0.5, 0, "knn")
    nearest_train = [int(train[(features[train, 0] - features[i, 0]).abs().argmin()]) for i in test.tolist()]
    expected = float(
        np.mean([labels[j] == labels[i] for i, j in zip(test.tolist(), nearest_train, strict=True)])
    )
    assert knn_accuracy(features, labels, k=2, test_fraction=0.5, distance="euclidean") == expected


def test_bad_input():
    with pytest.raises(ValueError, match="class 1 has 1 sample"):
        knn_accuracy(torch.randn(4, 2), torch.tensor([0, 0, 0, 1]))
    with pytest.raises(ValueError, match="k=0"):
        knn_accuracy(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), k=0)
    with pytest.raises(ValueError, match="distance='l1'"):
        knn_accuracy(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), distance="l1")
    with pytest.raises(ValueError, match="test_fraction=1"):
        linear_probe_accuracy(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), test_fraction=1)
    with pytest.raises(ValueError, match="c=0"):
        linear_probe_accuracy(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), c=0)
