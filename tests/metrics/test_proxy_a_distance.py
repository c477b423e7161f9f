import pytest
import torch

from lt_transfer.metrics import ProxyADistance, linear_domain_error, proxy_a_distance


def _gauss(n: int, d: int, shift: float, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def test_near_zero_for_one_distribution():
    pad = proxy_a_distance(_gauss(400, 16, 0.0, 0), _gauss(400, 16, 0.0, 1))
    assert 0.0 <= pad.item() < 0.3


def test_near_two_for_separable_domains():
    pad = proxy_a_distance(_gauss(300, 16, 0.0, 0), _gauss(300, 16, 3.0, 1))
    assert pad.item() > 1.9


def test_grows_with_the_shift():
    pads = [proxy_a_distance(_gauss(300, 8, 0.0, 0), _gauss(300, 8, s, 1)).item() for s in (0.0, 0.3, 1.0)]
    assert pads[0] < pads[1] < pads[2]


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_metric_equals_functional_and_caps_samples():
    s, t = _gauss(120, 4, 0.0, 0), _gauss(80, 4, 0.7, 1)
    metric = ProxyADistance(max_samples=None)
    for chunk in s.split(50):
        metric.update(source=chunk)
    metric.update(target=t)
    assert metric.compute().item() == pytest.approx(proxy_a_distance(s, t).item())
    capped = ProxyADistance(max_samples=30)
    capped.update(source=s, target=t)
    assert torch.isfinite(capped.compute())
    assert torch.isnan(ProxyADistance().compute())


def test_validation():
    with pytest.raises(ValueError, match="same width"):
        linear_domain_error(torch.zeros(10, 3), torch.zeros(10, 4))
    with pytest.raises(ValueError, match="at least 4 target"):
        linear_domain_error(torch.zeros(10, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="max_samples=2"):
        ProxyADistance(max_samples=2)


def test_compute_reads_gathered_tensor_states():
    """After a DDP gather the ``cat`` states are single tensors, not lists (the bug: ``not tensor``)."""
    s, t = _gauss(60, 4, 0.0, 0), _gauss(50, 4, 3.0, 1)
    metric = ProxyADistance(max_samples=None)
    metric.source_features, metric.target_features = s, t  # what torchmetrics' sync leaves behind
    assert metric.compute() == proxy_a_distance(s, t)
    empty = ProxyADistance(max_samples=None)
    empty.source_features, empty.target_features = torch.zeros(0, 4), t  # a gathered state without rows
    assert torch.isnan(empty.compute())
