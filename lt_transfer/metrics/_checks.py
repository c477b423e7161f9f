"""Input checks shared by the label-free validators: sample counts and feature matrices."""

from __future__ import annotations

import torch

__all__ = ["check_enough_samples", "check_features"]


def check_enough_samples(num_samples: int, num_classes: int, name: str) -> None:
    """Raise unless there are at least ``max(num_classes, 2)`` target samples.

    A validator computed on fewer samples than classes cannot see every class and says
    nothing reliable about the model; two samples are the least for a neighbourhood.

    Raises:
        ValueError: naming the validator, both counts and the fix.

    Example:
        >>> check_enough_samples(10, 3, "snd")
        >>> check_enough_samples(2, 3, "snd")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: snd needs at least as many target samples as classes (and at least 2), got 2 samples ...
    """
    if num_samples < max(num_classes, 2):
        raise ValueError(
            f"{name} needs at least as many target samples as classes (and at least 2), got "
            f"{num_samples} samples for {num_classes} classes; validate on more target data (a larger "
            "validation split or limit_val_batches)."
        )


def check_features(features: torch.Tensor, argument: str, name: str) -> None:
    """Raise unless ``features`` is a finite ``(N, D)`` matrix.

    Raises:
        ValueError: on another shape or NaN/Inf values.

    Example:
        >>> check_features(torch.zeros(3, 2), "features", "silhouette")
        >>> check_features(torch.zeros(3), "features", "silhouette")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: silhouette: features must be an (N, D) matrix, got shape (3,); ...
    """
    if features.dim() != 2:
        raise ValueError(
            f"{name}: {argument} must be an (N, D) matrix, got shape {tuple(features.shape)}; flatten or "
            "pool the features first."
        )
    bad = int((~torch.isfinite(features)).sum())
    if bad:
        raise ValueError(f"{name}: {argument} holds {bad} NaN/Inf values; check the model's outputs.")
