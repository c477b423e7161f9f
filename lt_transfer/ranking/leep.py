"""LEEP: how well the source classifier's outputs predict the target labels.

Nguyen, Hassner, Seeger & Archambeau ("LEEP: A New Measure to Evaluate Transferability of
Learned Representations", ICML 2020) run the *source* classifier :math:`\\theta` on the
target samples, form the empirical joint distribution of source labels :math:`z` and target
labels :math:`y`,

.. math::
    \\hat P(y, z) = \\frac1N \\sum_{i: y_i = y} \\theta(x_i)_z, \\qquad
    \\hat P(y \\mid z) = \\frac{\\hat P(y, z)}{\\sum_{y'} \\hat P(y', z)},

and score the log-likelihood of the "expected empirical predictor":

.. math::
    \\mathrm{LEEP} = \\frac1N \\sum_i \\log \\sum_z \\hat P(y_i \\mid z)\\, \\theta(x_i)_z.

It is at most 0; higher is better. It needs the candidate's source classification head
(its logits or probabilities on the target samples), so it does not apply to headless
feature extractors.
"""

from __future__ import annotations

import torch

from lt_transfer.ranking._inputs import ArrayLike, as_labels, as_source_probs

__all__ = ["leep"]


def leep(source_probs: ArrayLike, labels: ArrayLike, from_logits: bool = False) -> float:
    """LEEP of source-classifier outputs ``(N, C_s)`` for target labels ``(N,)`` (higher is better).

    Args:
        source_probs: ``(N, C_s)`` source-class probabilities of the target samples (or logits
            with ``from_logits=True``).
        labels: ``(N,)`` target class indices ``0..C-1``.
        from_logits: apply a softmax to ``source_probs`` first.

    Raises:
        ValueError: rows that are not distributions (pass ``from_logits=True`` for logits),
            NaN/Inf, a single class, fewer samples than classes.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
        >>> round(leep(probs, torch.tensor([0, 1, 0])), 4)
        -0.4087
    """
    theta = as_source_probs(source_probs, from_logits, "leep")
    y, num_classes = as_labels(labels, len(theta), "leep")
    joint = torch.nn.functional.one_hot(y, num_classes).double().T @ theta / len(theta)  # (C, C_s)
    marginal = joint.sum(0, keepdim=True)
    conditional = torch.where(marginal > 0, joint / marginal.clamp_min(1e-300), 0.0)
    expected = (theta * conditional[y]).sum(1)
    return float(torch.log(expected).mean())
