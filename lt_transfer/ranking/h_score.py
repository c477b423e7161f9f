"""H-score: how much of the feature covariance the class-conditional means explain.

Bao, Li, Huang, Wang & Wornell ("An Information-Theoretic Approach to Transferability in
Task Transfer Learning", ICIP 2019) score features :math:`f` for labels :math:`y` by

.. math::
    H(f) = \\operatorname{tr}\\big(\\operatorname{cov}(f)^{-1}\\,
    \\operatorname{cov}(\\mathbb E[f \\mid y])\\big),

the discriminability of the features for a linear classifier. With many feature
dimensions and few samples :math:`\\operatorname{cov}(f)` is badly conditioned and the
score is dominated by estimation noise; Ibrahim, Ponomareva & Mazumder ("Newer is Not
Always Better: Rethinking Transferability Metrics, Their Peculiarities, Stability and
Performance", ECML PKDD 2022) therefore shrink it with the Ledoit-Wolf estimator
(Ledoit & Wolf, "A well-conditioned estimator for large-dimensional covariance matrices",
J. Multivariate Anal. 2004) and scale the between-class covariance by the same factor:

.. math::
    H_\\alpha(f) = \\operatorname{tr}\\big(\\Sigma_\\alpha^{-1} (1-\\alpha)\\,
    \\operatorname{cov}(\\mathbb E[f \\mid y])\\big), \\qquad
    \\Sigma_\\alpha = (1-\\alpha)\\operatorname{cov}(f) + \\alpha\\,\\mu I,\\;
    \\mu = \\operatorname{tr}\\operatorname{cov}(f) / D,

with the shrinkage :math:`\\alpha` that Ledoit-Wolf estimates from the data. That
regularised version is the default (``regularized=True``); ``regularized=False`` gives
Bao et al.'s score (with a pseudo-inverse). Both covariances are the biased (``1/N``)
estimates. Higher is better; the value lies in :math:`[0, \\min(D, C-1)]`.
"""

from __future__ import annotations

import torch

from lt_transfer.ranking._inputs import ArrayLike, as_features, as_labels

__all__ = ["h_score", "ledoit_wolf_shrinkage"]


def ledoit_wolf_shrinkage(centred: torch.Tensor) -> float:
    """Ledoit-Wolf shrinkage :math:`\\alpha \\in [0, 1]` towards :math:`\\mu I` for centred ``(N, D)`` rows.

    .. math::
        \\alpha = \\frac{\\min(\\bar\\beta, \\delta)}{\\delta}, \\quad
        \\delta = \\tfrac1D \\lVert S - \\mu I \\rVert_F^2, \\quad
        \\bar\\beta = \\tfrac{1}{N^2 D} \\sum_i \\lVert x_i x_i^\\top - S \\rVert_F^2,

    with :math:`S = X^\\top X / N` (0 when :math:`\\delta = 0`).

    Example:
        >>> x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-2.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
        >>> round(ledoit_wolf_shrinkage(x), 4)  # min(0.53125, 0.5625) / 0.5625
        0.9444
    """
    n, d = centred.shape
    cov = centred.T @ centred / n
    mu = torch.trace(cov) / d
    delta = ((cov - mu * torch.eye(d, dtype=cov.dtype)) ** 2).sum() / d
    beta = ((centred**2).sum(1).pow(2).sum() / n - (cov**2).sum()) / (n * d)
    return 0.0 if delta <= 0 else float(torch.minimum(beta, delta) / delta)


def h_score(features: ArrayLike, labels: ArrayLike, regularized: bool = True) -> float:
    """(Shrinkage-regularised) H-score of ``(N, D)`` features for class labels (higher is better).

    Args:
        features: ``(N, D)`` features of the target samples from the candidate model.
        labels: ``(N,)`` class indices ``0..C-1``.
        regularized: Ledoit-Wolf shrinkage of the covariance (Ibrahim et al. 2022); ``False``
            for Bao et al.'s original score.

    Raises:
        ValueError: NaN/Inf features, a single class, fewer samples than classes, bad shapes.

    Example:
        >>> features = torch.tensor([[0.0], [2.0], [4.0], [6.0]])  # variance 5
        >>> h_score(features, torch.tensor([0, 0, 1, 1]))  # class means 1 and 5: between-class variance 4
        0.8
    """
    f = as_features(features, "h_score")
    y, num_classes = as_labels(labels, len(f), "h_score")
    n, d = f.shape
    f = f - f.mean(0)
    cov = f.T @ f / n
    one_hot = torch.nn.functional.one_hot(y, num_classes).double()
    counts = one_hot.sum(0)
    class_means = one_hot.T @ f / counts[:, None]  # (C, D), centred: their weighted mean is 0
    between = class_means.T @ (class_means * (counts / n)[:, None])
    if regularized:
        shrinkage = ledoit_wolf_shrinkage(f)
        mu = torch.trace(cov) / d
        cov = (1 - shrinkage) * cov + shrinkage * mu * torch.eye(d, dtype=cov.dtype)
        between = (1 - shrinkage) * between
    return float(torch.trace(torch.linalg.pinv(cov, hermitian=True) @ between))
