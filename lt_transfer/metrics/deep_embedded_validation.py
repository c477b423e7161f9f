"""Deep embedded validation (DEV): the target risk estimated from labelled *source* samples.

You, Wang, Long & Jordan ("Towards Accurate Model Selection in Deep Unsupervised Domain
Adaptation", ICML 2019) reweight the per-sample losses :math:`\\ell_i` of the source
validation set by the density ratio :math:`w_i = p_T(f_i) / p_S(f_i)` of the features and
reduce the variance of that importance-weighted estimate with a control variate
(:math:`\\mathbb E_S[w] = 1`):

.. math::
    L_i = w_i \\ell_i, \\qquad
    \\eta = -\\frac{\\widehat{\\mathrm{Cov}}(L, w)}{\\widehat{\\mathrm{Var}}(w)}, \\qquad
    \\mathrm{DEV} = \\overline{L} + \\eta\\,\\overline{w} - \\eta.

The density ratio comes from a domain classifier trained on source-vs-target features:
:math:`w = \\frac{N_S}{N_T} \\cdot \\frac{p(\\mathrm{target} \\mid f)}{p(\\mathrm{source} \\mid f)}`
(the factor undoes the classifier's class prior). The paper picks an MLP discriminator;
here it is an L2-regularised logistic regression (scikit-learn, standardised features),
fitted on the source validation features themselves (the paper fits on training features;
a linear, regularised model keeps the overfitting small). When all weights are equal
(:math:`\\widehat{\\mathrm{Var}}(w) = 0`) the correction is dropped (:math:`\\eta = 0`).

DEV is a risk: lower is better (``mode="min"``). Pass per-sample losses such as
``F.cross_entropy(logits, y, reduction="none")`` or 0/1 errors
``(logits.argmax(1) != y).float()`` (DEV then estimates the target error rate). It needs
labelled source validation data; plain source validation accuracy (the baseline
validator) is just accuracy on the source validation loader.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torchmetrics import Metric

from lt_transfer.metrics._checks import check_features
from lt_transfer.metrics._states import concatenated

__all__ = ["DeepEmbeddedValidation", "deep_embedded_validation", "density_ratio_weights", "dev_risk"]


def dev_risk(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Control-variate DEV risk from per-sample source losses and density-ratio weights.

    Args:
        losses: ``(N,)`` per-sample losses of the source validation samples.
        weights: ``(N,)`` density ratios :math:`p_T / p_S` of the same samples.

    Raises:
        ValueError: on mismatched or non-1-D inputs, fewer than 2 samples, or NaN/Inf.

    Example:
        >>> dev_risk(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([2.0, 1.0, 1.0, 0.5]))
        tensor(0.4737)
    """
    losses = losses.detach().to("cpu", torch.float64).flatten()
    weights = weights.detach().to("cpu", torch.float64).flatten()
    if len(losses) != len(weights) or len(losses) < 2:
        raise ValueError(
            f"dev_risk needs per-sample losses and weights of the same length >= 2, got {len(losses)} "
            f"losses and {len(weights)} weights."
        )
    if not (torch.isfinite(losses).all() and torch.isfinite(weights).all()):
        raise ValueError("dev_risk: losses or weights hold NaN/Inf values; check the model's outputs.")
    weighted = weights * losses
    centred_w = weights - weights.mean()
    var_w = centred_w.pow(2).sum()
    eta = -(centred_w * (weighted - weighted.mean())).sum() / var_w if var_w > 0 else var_w.new_zeros(())
    return (weighted.mean() + eta * weights.mean() - eta).float()


def density_ratio_weights(
    source_features: torch.Tensor, target_features: torch.Tensor, c: float = 1.0
) -> torch.Tensor:
    """Density ratios :math:`p_T(f)/p_S(f)` at the source features, from a logistic regression.

    Args:
        source_features: ``(N_s, D)`` source features (the weights are returned for these).
        target_features: ``(N_t, D)`` target features.
        c: inverse L2 regularisation strength of the domain classifier.

    Raises:
        ValueError: on mismatched shapes, NaN/Inf, fewer than 2 samples per domain, ``c <= 0``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> source = torch.randn(200, 2, generator=g)
        >>> w = density_ratio_weights(source, torch.randn(200, 2, generator=g) + 1.0)
        >>> bool(w[source.sum(1) > 2].mean() > 1 > w[source.sum(1) < -2].mean())
        True
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    check_features(source_features, "source_features", "density_ratio_weights")
    check_features(target_features, "target_features", "density_ratio_weights")
    if source_features.shape[1] != target_features.shape[1]:
        raise ValueError(
            f"density_ratio_weights: source features have width {source_features.shape[1]} but target "
            f"features {target_features.shape[1]}; use the same feature extractor for both domains."
        )
    if len(source_features) < 2 or len(target_features) < 2:
        raise ValueError(
            f"density_ratio_weights needs at least 2 samples per domain, got {len(source_features)} "
            f"source and {len(target_features)} target samples."
        )
    if not c > 0:
        raise ValueError(f"density_ratio_weights(c={c!r}) must be > 0 (inverse regularisation strength).")
    s = source_features.detach().double().cpu().numpy()
    t = target_features.detach().double().cpu().numpy()
    x = np.concatenate([s, t])
    y = np.concatenate([np.zeros(len(s)), np.ones(len(t))])  # 1 = target
    scaler = StandardScaler().fit(x)
    classifier = LogisticRegression(C=c, tol=1e-10, max_iter=10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning on separable domains is expected
        classifier.fit(scaler.transform(x), y)
    log_odds = classifier.decision_function(scaler.transform(s))  # log p(target|f) / p(source|f)
    return torch.from_numpy(np.exp(log_odds) * len(s) / len(t))


def deep_embedded_validation(
    source_features: torch.Tensor,
    source_losses: torch.Tensor,
    target_features: torch.Tensor,
    c: float = 1.0,
) -> torch.Tensor:
    """DEV: target risk estimated from source validation losses (lower is better).

    Args:
        source_features: ``(N_s, D)`` features of the labelled source validation samples.
        source_losses: ``(N_s,)`` per-sample losses (or 0/1 errors) of the same samples.
        target_features: ``(N_t, D)`` features of unlabelled target samples.
        c: inverse L2 regularisation strength of the logistic-regression domain classifier.

    Raises:
        ValueError: as :func:`density_ratio_weights` and :func:`dev_risk`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> source, target = torch.randn(300, 2, generator=g), torch.randn(300, 2, generator=g) + 1.0
        >>> errors = (source.sum(1) > 1).float()  # the model fails where the target lies
        >>> round(errors.mean().item(), 2)  # source error
        0.25
        >>> round(deep_embedded_validation(source, errors, target).item(), 2)  # true target error: 0.78
        0.75
    """
    losses = source_losses.detach().flatten()
    if len(losses) != len(source_features):
        raise ValueError(
            f"deep_embedded_validation: {len(losses)} source losses for {len(source_features)} source "
            "features; pass one loss per source validation sample (reduction='none')."
        )
    return dev_risk(losses, density_ratio_weights(source_features, target_features, c))


class DeepEmbeddedValidation(Metric):
    """DEV over a validation epoch (lower is better); needs labelled source validation data.

    ``update`` takes source features with their per-sample losses, target features, or
    both, so it fits a validation step that sees one domain per dataloader. Everything is
    kept in ``cat`` states (gathered from all processes under DDP), and ``compute`` is
    :func:`deep_embedded_validation` on all samples.

    Args:
        c: inverse L2 regularisation strength of the domain classifier.

    Raises:
        ValueError: ``c <= 0``; in ``update``, source features without losses (or the
            reverse) or mismatched lengths; at ``compute``, one domain missing.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> source, target = torch.randn(300, 2, generator=g), torch.randn(300, 2, generator=g) + 1.0
        >>> metric = DeepEmbeddedValidation()
        >>> metric.update(source_features=source, source_losses=(source.sum(1) > 1).float())
        >>> metric.update(target_features=target)
        >>> round(metric.compute().item(), 2)
        0.75
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, c: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not c > 0:
            raise ValueError(f"DeepEmbeddedValidation(c={c!r}) must be > 0 (inverse L2 regularisation).")
        self.c = c
        self.add_state("source_features", [], dist_reduce_fx="cat")
        self.add_state("source_losses", [], dist_reduce_fx="cat")
        self.add_state("target_features", [], dist_reduce_fx="cat")

    def update(
        self,
        source_features: torch.Tensor | None = None,
        source_losses: torch.Tensor | None = None,
        target_features: torch.Tensor | None = None,
    ) -> None:
        """Add ``(N_s, D)`` source features with ``(N_s,)`` losses, ``(N_t, D)`` target features, or both."""
        if (source_features is None) != (source_losses is None):
            raise ValueError(
                "DeepEmbeddedValidation.update: pass source_features and source_losses together (one "
                "loss per source validation sample, e.g. F.cross_entropy(logits, y, reduction='none'))."
            )
        if source_features is None and target_features is None:
            raise ValueError(
                "DeepEmbeddedValidation.update needs source_features with source_losses, target_features, "
                "or both."
            )
        if source_features is not None:
            losses = source_losses.detach().flatten().float()
            if len(losses) != len(source_features):
                raise ValueError(
                    f"DeepEmbeddedValidation.update: {len(losses)} source losses for "
                    f"{len(source_features)} source features; pass reduction='none' losses."
                )
            self.source_features.append(source_features.detach().flatten(1).float())
            self.source_losses.append(losses)
        if target_features is not None:
            self.target_features.append(target_features.detach().flatten(1).float())

    def compute(self) -> torch.Tensor:
        """The DEV risk; NaN when nothing was seen."""
        source, target = concatenated(self.source_features), concatenated(self.target_features)
        if source is None and target is None:
            return torch.tensor(float("nan"))
        if source is None:
            raise ValueError(
                "DeepEmbeddedValidation needs labelled source validation data: call "
                "update(source_features=..., source_losses=...) on the source validation loader too, or "
                "pick a validator that needs only target data (SND, BNM, InformationMaximization)."
            )
        if target is None:
            raise ValueError(
                "DeepEmbeddedValidation got no target features: call update(target_features=...) on the "
                "target validation loader."
            )
        return deep_embedded_validation(source, concatenated(self.source_losses), target, self.c)
