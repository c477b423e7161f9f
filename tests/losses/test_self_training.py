"""Confidence-thresholded pseudo-labels (FixMatch) and class-balanced thresholds, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lt_transfer.losses import (
    SelfTrainingLoss,
    confident_pseudo_labels,
    flexmatch_thresholds,
    self_training_loss,
)


def _weak() -> torch.Tensor:
    return torch.log(torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]]))


def test_fixmatch_loss_matches_hand_computation() -> None:
    strong = torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.0, math.log(3.0)]])
    # tau = 0.75: examples 1 (class 0, 0.9) and 3 (class 1, 0.8) pass, example 2 (0.5) does not.
    # CE(strong_1, 0) = log 2; CE(strong_3, 1) = -log(3/4); mean over all 3 examples
    expected = (math.log(2.0) - math.log(0.75)) / 3
    assert self_training_loss(_weak(), strong, threshold=0.75).item() == pytest.approx(expected, rel=1e-6)
    labels, mask = confident_pseudo_labels(_weak(), threshold=0.75)
    assert labels.tolist() == [0, 0, 1] and mask.tolist() == [True, False, True]
    assert self_training_loss(_weak(), strong, threshold=0.95).item() == 0.0  # nothing is confident


def test_same_logits_twice_is_self_training_with_gradient_through_one_side() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.1], [-1.0, 3.0]], requires_grad=True)
    self_training_loss(logits, logits, threshold=0.8).backward()
    # pseudo-labels are constants: d/dz mean_b mask_b CE(z_b, y_b) = mask_b (softmax(z_b) - onehot) / B
    probs = logits.detach().softmax(1)
    mask = probs.max(1).values >= 0.8  # examples 1 (0.88) and 3 (0.98)
    expected = (probs - torch.nn.functional.one_hot(probs.argmax(1), 2)) * mask.unsqueeze(1) / 3
    torch.testing.assert_close(logits.grad, expected)


def test_flexmatch_thresholds_match_hand_computation() -> None:
    # sigma = (0.5, 0.25), unused 0.25: beta = sigma / max(0.5, 0.25) = (1, 0.5); M(x) = x / (2 - x)
    torch.testing.assert_close(
        flexmatch_thresholds(torch.tensor([0.5, 0.25]), 0.25, 0.9), torch.tensor([0.9, 0.9 * 0.5 / 1.5])
    )
    # warm-up: most examples still unused (0.85) normalise the learning effects
    beta = [0.1 / 0.85, 0.05 / 0.85]
    expected = [0.9 * b / (2 - b) for b in beta]
    assert flexmatch_thresholds(torch.tensor([0.1, 0.05]), 0.85, 0.9).tolist() == pytest.approx(expected)
    labels, mask = confident_pseudo_labels(
        torch.log(torch.tensor([[0.6, 0.4], [0.4, 0.6]])), 0.9, class_thresholds=torch.tensor([0.9, 0.3])
    )
    assert mask.tolist() == [False, True]  # 0.6 < 0.9 for class 0, 0.6 >= 0.3 for class 1


def test_class_balanced_module_updates_its_statistics_in_training_only() -> None:
    loss_fn = SelfTrainingLoss(threshold=0.8, class_balanced=True, num_classes=2, momentum=0.5)
    weak = torch.log(torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.85, 0.15], [0.6, 0.4]]))
    # first call: thresholds 0 (nothing learned), so all 4 examples are pseudo-labelled
    strong = torch.zeros(4, 2)
    assert loss_fn(weak, strong).item() == pytest.approx(math.log(2.0))
    # update: confident (>= 0.8) shares (2/4, 1/4), unused 1/4; EMA with momentum 0.5 from (0, 0), 1:
    torch.testing.assert_close(loss_fn.learning_effect, torch.tensor([0.25, 0.125]))
    assert loss_fn.unused.item() == pytest.approx(0.625)
    # beta = (0.25, 0.125) / 0.625 = (0.4, 0.2); tau_c = 0.8 * (0.4 / 1.6, 0.2 / 1.8)
    torch.testing.assert_close(loss_fn.class_thresholds(), torch.tensor([0.2, 0.8 / 9]))
    state = {k: v.clone() for k, v in loss_fn.state_dict().items()}
    loss_fn.eval()
    loss_fn(weak, strong)  # validation never moves the thresholds
    assert all(torch.equal(loss_fn.state_dict()[k], v) for k, v in state.items())
    resumed = SelfTrainingLoss(threshold=0.8, class_balanced=True, num_classes=2, momentum=0.5)
    resumed.load_state_dict(state)
    torch.testing.assert_close(resumed.class_thresholds(), loss_fn.class_thresholds())
    fixed = SelfTrainingLoss(threshold=0.8)
    assert fixed.class_thresholds() is None and fixed.state_dict() == {}


@pytest.mark.parametrize("threshold", [0.0, 1.0, 1.5, -0.1])
def test_threshold_outside_open_unit_interval_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match=rf"threshold={threshold!r}\) must lie in \(0, 1\)"):
        self_training_loss(_weak(), _weak(), threshold=threshold)
    with pytest.raises(ValueError, match="must lie in"):
        SelfTrainingLoss(threshold=threshold)


def test_self_training_bad_arguments() -> None:
    with pytest.raises(ValueError, match="needs num_classes >= 2"):
        SelfTrainingLoss(class_balanced=True)
    with pytest.raises(ValueError, match="only apply with class_balanced=True"):
        SelfTrainingLoss(num_classes=3)
    with pytest.raises(ValueError, match="momentum=1.0"):
        SelfTrainingLoss(class_balanced=True, num_classes=3, momentum=1.0)
    with pytest.raises(ValueError, match="same shape"):
        self_training_loss(torch.zeros(3, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="one threshold per class"):
        confident_pseudo_labels(torch.zeros(3, 2), class_thresholds=torch.zeros(3))


def test_self_training_is_float32_under_autocast() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = self_training_loss(_weak().bfloat16(), torch.zeros(3, 2).bfloat16(), threshold=0.75)
    assert value.dtype == torch.float32 and value.item() == pytest.approx(2 * math.log(2.0) / 3, rel=1e-3)
