import math

import numpy as np
import pytest
import torch

from lt_transfer.metrics import (
    DeepEmbeddedValidation,
    deep_embedded_validation,
    density_ratio_weights,
    dev_risk,
)


def test_dev_risk_hand_computed():
    losses = np.array([1.0, 0.0, 0.0, 1.0])
    weights = np.array([2.0, 1.0, 1.0, 0.5])
    weighted = weights * losses
    eta = -np.cov(weighted, weights)[0, 1] / np.var(weights, ddof=1)
    expected = weighted.mean() + eta * weights.mean() - eta
    assert expected == pytest.approx(0.625 - 1.4375 / 1.1875 * 0.125)  # worked out on paper
    assert dev_risk(torch.tensor(losses), torch.tensor(weights)).item() == pytest.approx(expected, rel=1e-6)


def test_dev_risk_with_equal_weights_is_the_mean_loss():
    losses = torch.tensor([0.5, 1.5, 2.5])
    assert dev_risk(losses, torch.full((3,), 2.0)).item() == pytest.approx(3.0)  # eta = 0: mean(w * l)


def test_weights_approach_the_true_density_ratio():
    # source N(0, 1), target N(mu, 1): p_T/p_S = exp(mu x - mu^2 / 2), linear in x in log space,
    # so the logistic regression is well specified
    g = torch.Generator().manual_seed(0)
    mu = 0.8
    source = torch.randn(4000, 1, generator=g)
    target = torch.randn(3000, 1, generator=g) + mu
    weights = density_ratio_weights(source, target, c=100.0)
    true = torch.exp(mu * source[:, 0].double() - mu * mu / 2)
    central = source[:, 0].abs() < 2
    assert (weights[central] / true[central] - 1).abs().median().item() < 0.05
    assert weights.mean().item() == pytest.approx(1.0, abs=0.05)


def test_dev_tracks_the_target_risk_and_not_the_source_risk():
    g = torch.Generator().manual_seed(1)
    source = torch.randn(2000, 2, generator=g)
    target = torch.randn(2000, 2, generator=g) + 1.0
    errors = (source.sum(1) > 1).float()
    true_target_error = 0.5 * math.erfc(-1 / math.sqrt(2) / math.sqrt(2))  # P(N(2, 2) > 1)
    assert errors.mean().item() == pytest.approx(1 - true_target_error, abs=0.03)
    dev = deep_embedded_validation(source, errors, target).item()
    assert dev == pytest.approx(true_target_error, abs=0.05)
    same = deep_embedded_validation(source, errors, torch.randn(2000, 2, generator=g))
    assert same.item() == pytest.approx(errors.mean().item(), abs=0.03)


def test_class_equals_functional_over_batches():
    g = torch.Generator().manual_seed(2)
    source = torch.randn(90, 3, generator=g)
    losses = torch.rand(90, generator=g)
    target = torch.randn(70, 3, generator=g) + 0.5
    metric = DeepEmbeddedValidation(c=0.5)
    for features, loss in zip(source.split(40), losses.split(40), strict=True):
        metric.update(source_features=features, source_losses=loss)
    for t in target.split(30):
        metric.update(target_features=t)
    expected = deep_embedded_validation(source, losses, target, c=0.5).item()
    assert metric.compute().item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_bad_input():
    metric = DeepEmbeddedValidation()
    metric.update(target_features=torch.randn(8, 2))
    with pytest.raises(ValueError, match="needs labelled source validation data"):
        metric.compute()
    only_source = DeepEmbeddedValidation()
    only_source.update(source_features=torch.randn(8, 2), source_losses=torch.rand(8))
    with pytest.raises(ValueError, match="no target features"):
        only_source.compute()
    with pytest.raises(ValueError, match="source_features and source_losses together"):
        metric.update(source_features=torch.randn(4, 2))
    with pytest.raises(ValueError, match="3 source losses for 4 source features"):
        metric.update(source_features=torch.randn(4, 2), source_losses=torch.rand(3))
    with pytest.raises(ValueError, match="3 source losses for 4 source features"):
        deep_embedded_validation(torch.randn(4, 2), torch.rand(3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="width 2 but target features 3"):
        density_ratio_weights(torch.randn(4, 2), torch.randn(4, 3))
    with pytest.raises(ValueError, match="target_features holds 1 NaN/Inf"):
        density_ratio_weights(torch.randn(4, 2), torch.tensor([[0.0, float("nan")], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="at least 2 samples per domain"):
        density_ratio_weights(torch.randn(1, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="c=0"):
        DeepEmbeddedValidation(c=0)
    with pytest.raises(ValueError, match="same length >= 2"):
        dev_risk(torch.rand(3), torch.rand(2))
    assert torch.isnan(DeepEmbeddedValidation().compute())
