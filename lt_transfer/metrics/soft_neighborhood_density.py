"""Soft neighbourhood density (SND): are the target predictions densely clustered?

Saito, Kim, Teterwak, Sclaroff, Darrell & Saenko ("Tune it the Right Way: Unsupervised
Validation of Domain Adaptation via Soft Neighborhood Density", ICCV 2021) embed each target
sample by its L2-normalised softmax output :math:`e_i = p_i / \\lVert p_i \\rVert`, turn the
cosine similarities to all *other* samples into a neighbour distribution with temperature
:math:`T` and average its entropy:

.. math::
    q_{ij} = \\frac{\\exp(e_i^\\top e_j / T)}{\\sum_{k \\ne i} \\exp(e_i^\\top e_k / T)}
    \\quad (j \\ne i), \\qquad
    \\mathrm{SND} = -\\frac{1}{N} \\sum_{i=1}^{N} \\sum_{j \\ne i} q_{ij} \\log q_{ij}.

A model whose target predictions form dense clusters has many close neighbours per sample:
a high entropy. Higher is better (``mode="max"`` in ``ModelCheckpoint``/``EarlyStopping``).
The paper uses :math:`T = 0.05` (our default). Self-similarity is excluded exactly (the
paper's code sets it to :math:`-1/T` instead, a difference below :math:`e^{-20}`).

Caveats: the value grows with :math:`\\log(N-1)`, so compare checkpoints on the same target
set; a collapsed model (the same prediction everywhere) also reaches the maximum
:math:`\\log(N-1)`, so pair SND with
:class:`~lt_transfer.metrics.InformationMaximization` or
:class:`~lt_transfer.metrics.BatchNuclearNorm`, which penalise collapse.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from lt_transfer.metrics._checks import check_enough_samples
from lt_transfer.metrics._states import concatenated
from lt_transfer.metrics.prediction_entropy import probabilities

__all__ = ["SoftNeighborhoodDensity", "soft_neighborhood_density"]

_CHUNK = 1024  # rows of the (N, N) similarity matrix held at once


def _snd(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    embedding = torch.nn.functional.normalize(probs.double(), dim=1)
    total = embedding.new_zeros(())
    for start in range(0, len(embedding), _CHUNK):
        rows = embedding[start : start + _CHUNK]
        logits = rows @ embedding.T / temperature
        own = torch.arange(start, start + len(rows), device=logits.device)
        logits[torch.arange(len(rows), device=logits.device), own] = float("-inf")
        total = total + torch.special.entr(logits.softmax(dim=1)).sum()
    return (total / len(embedding)).float()


def _check_temperature(temperature: float, name: str) -> None:
    if not temperature > 0:
        raise ValueError(f"{name}(temperature={temperature!r}) must be > 0 (the paper uses 0.05).")


def soft_neighborhood_density(
    preds: torch.Tensor, temperature: float = 0.05, from_logits: bool = True, validate_args: bool = True
) -> torch.Tensor:
    """SND of ``(N, C)`` target predictions (nats; higher is better).

    Costs :math:`O(N^2 C)` time and :math:`O(1024 \\cdot N)` memory.

    Args:
        preds: ``(N, C)`` logits, or probabilities with ``from_logits=False``.
        temperature: softmax temperature :math:`T` of the neighbour distribution.
        from_logits: apply a softmax first.
        validate_args: check the shape, the temperature and that ``N >= max(C, 2)``.

    Raises:
        ValueError: on a non-``(N, C)`` input, ``temperature <= 0`` or fewer samples than
            classes.

    Example:
        >>> clustered = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)  # two tight clusters
        >>> spread = torch.tensor([[1.0, 0.0], [0.8, 0.2], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8], [0.0, 1.0]])
        >>> soft_neighborhood_density(clustered, from_logits=False)  # two equal neighbours each: log 2
        tensor(0.6931)
        >>> soft_neighborhood_density(spread, from_logits=False)
        tensor(0.6104)
    """
    probs = probabilities(preds, from_logits, validate_args)
    if validate_args:
        _check_temperature(temperature, "soft_neighborhood_density")
        check_enough_samples(len(probs), probs.shape[1], "soft_neighborhood_density")
    return _snd(probs, temperature)


class SoftNeighborhoodDensity(Metric):
    """SND over a validation epoch of target predictions (no labels; higher is better).

    Keeps the probabilities (a ``cat`` state, gathered from every process under DDP), so
    the epoch value equals :func:`soft_neighborhood_density` on all target samples.

    Args:
        temperature: softmax temperature :math:`T` (0.05 in the paper).
        from_logits: inputs are logits rather than probabilities.
        validate_args: check input shapes.

    Raises:
        ValueError: ``temperature <= 0``; at ``compute``, fewer target samples than classes.

    Example:
        >>> metric = SoftNeighborhoodDensity()
        >>> metric.update(torch.tensor([[5.0, -5.0]] * 3))
        >>> metric.update(torch.tensor([[-5.0, 5.0]] * 3))
        >>> metric.compute()  # each sample has two identical neighbours: log 2
        tensor(0.6931)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self, temperature: float = 0.05, from_logits: bool = True, validate_args: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        _check_temperature(temperature, "SoftNeighborhoodDensity")
        self.temperature = temperature
        self.from_logits = from_logits
        self.validate_args = validate_args
        self.add_state("probs", [], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor) -> None:
        """Add a batch of ``(N, C)`` target logits (or probabilities)."""
        self.probs.append(probabilities(preds, self.from_logits, self.validate_args))

    def compute(self) -> torch.Tensor:
        """SND of every target sample seen; NaN when nothing was seen."""
        probs = concatenated(self.probs)
        if probs is None:
            return torch.tensor(float("nan"))
        check_enough_samples(len(probs), probs.shape[1], "SoftNeighborhoodDensity")
        return _snd(probs, self.temperature)
