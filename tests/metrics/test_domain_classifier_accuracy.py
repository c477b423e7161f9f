import pytest
import torch

from lt_transfer.losses.adversarial import domain_accuracy
from lt_transfer.metrics import DomainClassifierAccuracy, domain_classifier_accuracy


def test_matches_dann_convention_and_is_balanced():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(10, generator=g), torch.randn(90, generator=g)
    assert domain_classifier_accuracy(s, t).item() == pytest.approx(domain_accuracy(s, t).item())
    # a discriminator that always says "target" is at chance however unbalanced the counts are
    assert domain_classifier_accuracy(-torch.ones(10), -torch.ones(90)).item() == pytest.approx(0.5)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_accumulates_domains_from_separate_updates():
    metric = DomainClassifierAccuracy()
    metric.update(source_logits=torch.tensor([[1.0], [2.0]]))
    assert torch.isnan(metric.compute())  # only one domain seen yet
    metric.update(target_logits=torch.tensor([[-1.0], [3.0]]))
    assert metric.compute().item() == pytest.approx(0.75)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_validation():
    with pytest.raises(ValueError, match="one domain logit"):
        DomainClassifierAccuracy().update(source_logits=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="source_logits, target_logits or both"):
        DomainClassifierAccuracy().update()
