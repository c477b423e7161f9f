"""SHOT's centroid pseudo-labels: a case worked out by hand, a loop-based reference, shards summed."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from lt_transfer.losses import ShotCentroids, nearest_centroid_labels, shot_centroids, shot_pseudo_labels

FEATURES = torch.tensor([[1.0, 0.0], [0.96, 0.28], [0.0, 1.0], [0.28, 0.96]])  # unit vectors
PROBS = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.1, 0.9], [0.2, 0.8]])


def test_centroids_fix_a_classifier_error_worked_by_hand() -> None:
    # soft centroids: c0 ∝ 0.9 a + 0.4 b + 0.1 c + 0.2 d ∝ (1.34, 0.404), at 16.8°;
    #                 c1 ∝ 0.1 a + 0.6 b + 0.9 c + 0.8 d ∝ (0.90, 1.836), at 63.9°.
    # b lies at 16.3° and d at 73.7°: b joins class 0 although the classifier says 1.
    # refinement: c0 ∝ a + b (8.1°), c1 ∝ c + d (81.9°): the labels stay (0, 0, 1, 1).
    assert PROBS.argmax(1).tolist() == [0, 1, 1, 1]
    assert shot_pseudo_labels(FEATURES, PROBS.log(), refinement_rounds=0).tolist() == [0, 0, 1, 1]
    assert shot_pseudo_labels(FEATURES, PROBS.log()).tolist() == [0, 0, 1, 1]
    # the scale of a feature vector does not matter (cosine distance, normalised features)
    scaled = FEATURES * torch.tensor([[3.0], [0.5], [2.0], [7.0]])
    assert shot_pseudo_labels(scaled, PROBS.log()).tolist() == [0, 0, 1, 1]


def _reference(features: list[list[float]], probs: list[list[float]], rounds: int) -> list[int]:
    def unit(v: list[float]) -> list[float]:
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    def nearest(x: list[float], centroids: dict[int, list[float]]) -> int:
        return max(centroids, key=lambda k: sum(a * b for a, b in zip(x, unit(centroids[k]), strict=True)))

    xs = [unit(f) for f in features]
    classes = len(probs[0])
    predicted = {max(range(classes), key=lambda k: p[k]) for p in probs}
    dims = range(len(xs[0]))
    centroids = {
        k: [sum(p[k] * x[d] for p, x in zip(probs, xs, strict=True)) / sum(p[k] for p in probs) for d in dims]
        for k in predicted
    }
    labels = [nearest(x, centroids) for x in xs]
    for _ in range(rounds):
        members = {k: [x for x, y in zip(xs, labels, strict=True) if y == k] for k in set(labels)}
        centroids = {k: [sum(x[d] for x in m) / len(m) for d in dims] for k, m in members.items()}
        labels = [nearest(x, centroids) for x in xs]
    return labels


@pytest.mark.parametrize("seed", range(5))
def test_matches_a_loop_based_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(12, 3, generator=gen)
    logits = torch.randn(12, 4, generator=gen) * 2
    probs = logits.softmax(1).tolist()
    for rounds in (0, 1, 2):
        expected = _reference(features.tolist(), probs, rounds)
        assert shot_pseudo_labels(features, logits, rounds).tolist() == expected


def test_a_class_no_example_predicts_receives_no_label() -> None:
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    logits = torch.tensor([[3.0, 0.0, 2.9], [3.0, 0.0, 2.0], [3.0, 0.0, 2.9]])  # nobody predicts 1 or 2
    labels = shot_pseudo_labels(features, logits)
    assert labels.tolist() == [0, 0, 0] and labels.dtype == torch.int64


def test_shot_pseudo_labels_bad_inputs_and_precision() -> None:
    with pytest.raises(ValueError, match="same N"):
        shot_pseudo_labels(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="pool feature maps first"):
        shot_pseudo_labels(torch.zeros(3, 2, 4, 4), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="refinement_rounds=-1"):
        shot_pseudo_labels(FEATURES, PROBS.log(), refinement_rounds=-1)
    features = FEATURES.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        labels = shot_pseudo_labels(features.bfloat16(), PROBS.log().bfloat16())
    assert labels.tolist() == [0, 0, 1, 1] and not labels.requires_grad


def test_centroids_summed_over_shards_equal_the_whole_set() -> None:
    """all_reduce sums the per-class statistics: two shards (two threads) get the whole set's centroids."""
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(11, 3, generator=gen)
    logits = torch.randn(11, 4, generator=gen) * 2
    shards = [(features[:6], logits[:6]), (features[6:], logits[6:])]
    barrier = threading.Barrier(2)
    slots: list[torch.Tensor | None] = [None, None]
    results: list[ShotCentroids | None] = [None, None]

    def run(rank: int) -> None:
        def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
            slots[rank] = tensor
            barrier.wait()
            total = slots[0] + slots[1]
            barrier.wait()  # both have read the slots before the next call overwrites them
            return total

        results[rank] = shot_centroids(*shards[rank], refinement_rounds=2, all_reduce=all_reduce)

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    whole = shot_centroids(features, logits, refinement_rounds=2)
    for result in results:
        assert result is not None
        torch.testing.assert_close(result.centroids, whole.centroids)
        assert result.candidates.tolist() == whole.candidates.tolist()
    labels = nearest_centroid_labels(features, *whole)
    assert labels.tolist() == shot_pseudo_labels(features, logits, refinement_rounds=2).tolist()


def test_nearest_centroid_labels_skips_classes_that_are_not_candidates() -> None:
    centroids = torch.tensor([[1.0, 0.0], [0.9, 0.1]])
    features = torch.tensor([[0.9, 0.12], [1.0, 0.0]])
    assert nearest_centroid_labels(features, centroids, torch.tensor([True, True])).tolist() == [1, 0]
    assert nearest_centroid_labels(features, centroids, torch.tensor([True, False])).tolist() == [0, 0]
