import importlib
import math

import numpy as np
import pytest
import torch

from lt_transfer.metrics import SoftNeighborhoodDensity, soft_neighborhood_density

# the package exports a function of the module's name, so fetch the module itself
snd_module = importlib.import_module("lt_transfer.metrics.soft_neighborhood_density")


def _binary_entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_hand_computed_three_samples(temperature):
    # embeddings [1, 0], [1, 1]/sqrt2, [0, 1]: the middle sample has two neighbours at cosine
    # 1/sqrt2 (a uniform neighbour distribution, entropy log 2); each end sample has one
    # neighbour at cosine 1/sqrt2 and one at 0 (a two-way softmax: binary entropy).
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    p_near = 1.0 / (1.0 + math.exp(-math.sqrt(0.5) / temperature))
    expected = (2 * _binary_entropy(p_near) + math.log(2)) / 3
    value = soft_neighborhood_density(probs, temperature=temperature, from_logits=False)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_matches_a_numpy_loop_and_chunking(monkeypatch):
    logits = torch.randn(37, 4, generator=torch.Generator().manual_seed(0)) * 3
    p = np.exp(logits.double().numpy())
    p /= p.sum(1, keepdims=True)
    e = p / np.linalg.norm(p, axis=1, keepdims=True)
    entropies = []
    for i in range(len(e)):
        sims = np.array([e[i] @ e[j] / 0.05 for j in range(len(e)) if j != i])
        q = np.exp(sims - sims.max())
        q /= q.sum()
        entropies.append(-(q * np.log(q)).sum())
    expected = float(np.mean(entropies))
    assert soft_neighborhood_density(logits).item() == pytest.approx(expected, rel=1e-5)
    monkeypatch.setattr(snd_module, "_CHUNK", 5)
    assert soft_neighborhood_density(logits).item() == pytest.approx(expected, rel=1e-5)


def test_collapse_reaches_log_n_minus_one():
    collapsed = torch.tensor([[3.0, 0.0, 0.0]]).repeat(10, 1)
    assert soft_neighborhood_density(collapsed).item() == pytest.approx(math.log(9), rel=1e-6)


def test_class_equals_functional_over_batches():
    logits = torch.randn(50, 3, generator=torch.Generator().manual_seed(1)) * 2
    metric = SoftNeighborhoodDensity(temperature=0.1)
    for chunk in logits.split(16):
        metric.update(chunk)
    expected = soft_neighborhood_density(logits, temperature=0.1).item()
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_bad_input():
    with pytest.raises(ValueError, match="at least as many target samples as classes.*got 3 samples for 5"):
        soft_neighborhood_density(torch.randn(3, 5))
    with pytest.raises(ValueError, match="at least 2"):
        soft_neighborhood_density(torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="temperature=0"):
        soft_neighborhood_density(torch.randn(4, 2), temperature=0)
    with pytest.raises(ValueError, match="temperature=-1"):
        SoftNeighborhoodDensity(temperature=-1)
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        soft_neighborhood_density(torch.randn(4))
    metric = SoftNeighborhoodDensity()
    metric.update(torch.randn(2, 4))
    with pytest.raises(ValueError, match="SoftNeighborhoodDensity needs at least as many"):
        metric.compute()
    assert torch.isnan(SoftNeighborhoodDensity().compute())
