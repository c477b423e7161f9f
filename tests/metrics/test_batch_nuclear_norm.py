import math

import numpy as np
import pytest
import torch

from lt_transfer.metrics import BatchNuclearNorm, BNMLoss, batch_nuclear_norm, bnm_loss


def test_hand_computed():
    # P^T P = [[1.25, 0.25], [0.25, 1.25]]: eigenvalues 1.5 and 1, singular values sqrt(1.5), 1
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    expected = (math.sqrt(1.5) + 1.0) / 3
    assert batch_nuclear_norm(probs, from_logits=False).item() == pytest.approx(expected, rel=1e-6)


def test_confident_balanced_beats_collapsed_and_uncertain():
    n, c = 12, 3
    balanced = 30 * torch.eye(c).repeat(n // c, 1)
    collapsed = 30 * torch.eye(c)[[0] * n]
    assert batch_nuclear_norm(balanced).item() == pytest.approx(math.sqrt(c / n), rel=1e-5)
    assert batch_nuclear_norm(collapsed).item() == pytest.approx(1 / math.sqrt(n), rel=1e-5)
    uniform = batch_nuclear_norm(torch.zeros(n, c))  # rank 1, singular value sqrt(n c) / c
    assert uniform.item() == pytest.approx(1 / math.sqrt(n * c), rel=1e-5)


def test_matches_numpy_svd_and_class_over_batches():
    logits = torch.randn(41, 5, generator=torch.Generator().manual_seed(0)) * 2
    p = logits.double().softmax(1).numpy()
    expected = float(np.linalg.svd(p, compute_uv=False).sum() / len(p))
    assert batch_nuclear_norm(logits).item() == pytest.approx(expected, rel=1e-6)
    metric = BatchNuclearNorm(num_classes=5)
    for chunk in logits.split(10):
        metric.update(chunk)
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)


def test_loss_is_the_negated_differentiable_value_for_any_batch_size():
    logits = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert bnm_loss(logits).item() == pytest.approx(-batch_nuclear_norm(logits).item(), rel=1e-6)
    assert torch.autograd.gradcheck(bnm_loss, (logits.clone().requires_grad_(),))
    few = torch.randn(2, 5, requires_grad=True)  # fewer samples than classes is fine for a loss
    BNMLoss()(few).backward()
    assert torch.isfinite(few.grad).all()
    half = bnm_loss(torch.randn(4, 3).half())
    assert half.dtype == torch.float32


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_bad_input():
    with pytest.raises(ValueError, match="got 2 samples for 3 classes"):
        batch_nuclear_norm(torch.randn(2, 3))
    with pytest.raises(ValueError, match="num_classes=1"):
        BatchNuclearNorm(num_classes=1)
    metric = BatchNuclearNorm(num_classes=3)
    with pytest.raises(ValueError, match="4 classes"):
        metric.update(torch.zeros(5, 4))
    metric.update(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="BatchNuclearNorm needs at least as many target samples"):
        metric.compute()
    with pytest.raises(ValueError, match="bnm_loss"):
        bnm_loss(torch.zeros(3))
    assert torch.isnan(BatchNuclearNorm(num_classes=2).compute())
