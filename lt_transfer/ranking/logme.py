"""LogME: the log marginal evidence of a Bayesian linear model on the candidate's features.

You, Liu, Wang & Long ("LogME: Practical Assessment of Pre-trained Models for Transfer
Learning", ICML 2021) score features :math:`F \\in \\mathbb R^{N \\times D}` by how well a
linear model :math:`y = F w + \\epsilon`, with prior :math:`w \\sim \\mathcal N(0,
\\alpha^{-1} I)` and noise :math:`\\epsilon \\sim \\mathcal N(0, \\beta^{-1} I)`, explains the
labels, with :math:`\\alpha, \\beta` set to maximise the evidence:

.. math::
    \\log p(y \\mid F, \\alpha, \\beta) = \\frac D2 \\log\\alpha + \\frac N2 \\log\\beta
    - \\frac\\alpha2 \\lVert m\\rVert^2 - \\frac\\beta2 \\lVert Fm - y\\rVert^2
    - \\frac12 \\log\\lvert A\\rvert - \\frac N2 \\log 2\\pi,

with :math:`A = \\alpha I + \\beta F^\\top F` and the posterior mean :math:`m = \\beta A^{-1}
F^\\top y`. MacKay's fixed-point iteration,
:math:`\\gamma = \\sum_j \\frac{\\beta\\sigma_j}{\\alpha + \\beta\\sigma_j}`,
:math:`\\alpha \\leftarrow \\gamma / \\lVert m\\rVert^2`,
:math:`\\beta \\leftarrow (N - \\gamma) / \\lVert Fm - y\\rVert^2`
(:math:`\\sigma_j` the eigenvalues of :math:`F^\\top F`), finds the maximum. For
classification each class's one-hot column is a target; LogME is the evidence averaged
over classes and divided by :math:`N`. Higher is better. Everything runs in float64 in the
eigenbasis of the smaller of :math:`F^\\top F` and :math:`F F^\\top`, so one iteration costs
:math:`O(\\min(N, D)\\,C)`.
"""

from __future__ import annotations

import math

import torch

from lt_transfer.ranking._inputs import ArrayLike, as_features, as_labels

__all__ = ["logme"]


def _terms(lam: torch.Tensor, sigma: torch.Tensor, z2: torch.Tensor, y2: torch.Tensor):
    """gamma, ||m||^2 and ||Fm - y||^2 for each class at lam = alpha / beta."""
    shrink = lam + sigma
    gamma = (sigma / shrink).sum(0)
    m2 = (z2 / shrink**2).sum(0)
    residual = y2 - (z2 * (2 * lam + sigma) / shrink**2).sum(0)
    return gamma, m2, residual.clamp_min(1e-300)


def logme(features: ArrayLike, labels: ArrayLike, tol: float = 1e-8, max_iter: int = 1000) -> float:
    """LogME of ``(N, D)`` features for integer class labels (higher is better).

    Args:
        features: ``(N, D)`` features of the target samples from the candidate model.
        labels: ``(N,)`` class indices ``0..C-1``.
        tol: stop when ``alpha / beta`` changes by less than this (relative) for every class.
        max_iter: most fixed-point iterations.

    Raises:
        ValueError: NaN/Inf features, a single class, fewer samples than classes, bad shapes.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> labels = torch.arange(60) % 3
        >>> informative = torch.nn.functional.one_hot(labels).double() * 3 + torch.randn(60, 3, generator=g)
        >>> noise = torch.randn(60, 3, generator=g)
        >>> logme(informative, labels) > logme(noise, labels)
        True
    """
    f = as_features(features, "logme")
    y, num_classes = as_labels(labels, len(f), "logme")
    if not tol > 0 or max_iter < 1:
        raise ValueError(f"logme(tol={tol!r}, max_iter={max_iter!r}): need tol > 0 and max_iter >= 1.")
    n, d = f.shape
    targets = torch.nn.functional.one_hot(y, num_classes).double()
    if d <= n:
        sigma, vectors = torch.linalg.eigh(f.T @ f)
        z2 = (vectors.T @ (f.T @ targets)) ** 2
    else:
        sigma, vectors = torch.linalg.eigh(f @ f.T)
        z2 = sigma.clamp_min(0.0)[:, None] * (vectors.T @ targets) ** 2
    sigma = sigma.clamp_min(0.0)[:, None]  # (r, 1); the other D - r eigenvalues are 0
    y2 = targets.sum(0)
    alpha = torch.ones(num_classes, dtype=torch.float64)
    beta = torch.ones(num_classes, dtype=torch.float64)
    for _ in range(max_iter):
        lam = alpha / beta
        gamma, m2, residual = _terms(lam, sigma, z2, y2)
        alpha = (gamma / m2.clamp_min(1e-300)).clamp(1e-12, 1e12)
        beta = ((n - gamma) / residual).clamp(1e-12, 1e12)
        if ((alpha / beta - lam).abs() / lam).max() < tol:
            break
    _, m2, residual = _terms(alpha / beta, sigma, z2, y2)
    log_det = torch.log(alpha + beta * sigma).sum(0) + (d - len(sigma)) * torch.log(alpha)
    evidence = (
        d / 2 * torch.log(alpha)
        + n / 2 * torch.log(beta)
        - alpha / 2 * m2
        - beta / 2 * residual
        - log_det / 2
        - n / 2 * math.log(2 * math.pi)
    )
    return float(evidence.mean() / n)
