"""Domain-classifier accuracy: how well a discriminator tells source from target.

In adversarial domain adaptation (DANN; Ganin & Lempitsky, "Unsupervised Domain Adaptation
by Backpropagation", ICML 2015) a discriminator predicts the domain of each feature
vector. Its accuracy on held-out data needs no class labels: 0.5 means the features of
the two domains are indistinguishable (aligned), 1.0 means fully separable. The accuracy
is *balanced* (mean of the per-domain accuracies) so it is 0.5 at chance whatever the
ratio of source to target samples.

Convention (as in :func:`lt_transfer.losses.adversarial.domain_adversarial_loss`): the
discriminator outputs one logit per sample, positive = source, negative = target.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

__all__ = ["DomainClassifierAccuracy", "domain_classifier_accuracy"]


def _flat(logits: torch.Tensor, name: str, validate_args: bool) -> torch.Tensor:
    logits = logits.detach()
    if validate_args and logits.dim() > 1 and logits.shape[-1] != 1:
        raise ValueError(
            f"DomainClassifierAccuracy: {name} must hold one domain logit per sample ((N,) or (N, 1)), "
            f"got shape {tuple(logits.shape)}."
        )
    return logits.reshape(-1)


def domain_classifier_accuracy(
    source_logits: torch.Tensor, target_logits: torch.Tensor, threshold: float = 0.0
) -> torch.Tensor:
    """Balanced accuracy of a source(+)/target(−) discriminator.

    .. math::
        \\mathrm{acc} = \\tfrac12\\big(\\Pr[s(x_s) > t] + \\Pr[s(x_t) \\le t]\\big)

    Args:
        source_logits: ``(N_s,)`` or ``(N_s, 1)`` discriminator outputs on source features.
        target_logits: ``(N_t,)`` or ``(N_t, 1)`` outputs on target features.
        threshold: decision threshold (0 for logits, 0.5 for probabilities).

    Example:
        >>> domain_classifier_accuracy(torch.tensor([2.0, -1.0]), torch.tensor([-3.0, -2.0]))
        tensor(0.7500)
    """
    s = _flat(source_logits, "source_logits", True)
    t = _flat(target_logits, "target_logits", True)
    if s.numel() == 0 or t.numel() == 0:
        raise ValueError(
            f"domain_classifier_accuracy: needs samples of both domains, got {s.numel()} source and "
            f"{t.numel()} target logits."
        )
    return 0.5 * ((s > threshold).float().mean() + (t <= threshold).float().mean())


class DomainClassifierAccuracy(Metric):
    """Balanced domain-discriminator accuracy accumulated over an epoch (0.5 = aligned).

    ``update`` takes the source logits, the target logits, or both, so it fits a validation
    step that sees one domain per dataloader. States are sums (exact under DDP).

    Args:
        threshold: decision threshold (0 for logits, 0.5 for probabilities).
        validate_args: check input shapes.

    Example:
        >>> metric = DomainClassifierAccuracy()
        >>> metric.update(source_logits=torch.tensor([2.0, -1.0]))
        >>> metric.update(target_logits=torch.tensor([-3.0, -2.0, -1.0, 4.0]))
        >>> metric.compute()
        tensor(0.6250)
    """

    is_differentiable = False
    higher_is_better = False  # for the feature extractor: lower (0.5) = better aligned
    full_state_update = False

    def __init__(self, threshold: float = 0.0, validate_args: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold = float(threshold)
        self.validate_args = validate_args
        for name in ("source_correct", "source_total", "target_correct", "target_total"):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self, source_logits: torch.Tensor | None = None, target_logits: torch.Tensor | None = None
    ) -> None:
        """Add discriminator outputs of source samples, target samples, or both."""
        if source_logits is None and target_logits is None:
            raise ValueError("DomainClassifierAccuracy.update needs source_logits, target_logits or both.")
        if source_logits is not None:
            s = _flat(source_logits, "source_logits", self.validate_args)
            self.source_correct += (s > self.threshold).sum()
            self.source_total += s.numel()
        if target_logits is not None:
            t = _flat(target_logits, "target_logits", self.validate_args)
            self.target_correct += (t <= self.threshold).sum()
            self.target_total += t.numel()

    def compute(self) -> torch.Tensor:
        """Balanced accuracy; NaN until both domains were seen."""
        if self.source_total == 0 or self.target_total == 0:
            return torch.tensor(float("nan"))
        return (
            0.5 * (self.source_correct / self.source_total + self.target_correct / self.target_total).float()
        )
