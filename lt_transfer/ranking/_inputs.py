"""Input checks and conversions shared by the transferability scores, and the held-out split."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["as_features", "as_labels", "as_source_probs", "stratified_split"]

ArrayLike = torch.Tensor | np.ndarray


def as_features(features: ArrayLike, name: str, argument: str = "features") -> torch.Tensor:
    """A finite ``(N, D)`` float64 CPU copy of ``features``.

    Raises:
        ValueError: on another shape or NaN/Inf values (with their count).

    Example:
        >>> as_features(np.ones((2, 3), dtype=np.float32), "logme").dtype
        torch.float64
    """
    x = torch.as_tensor(features).detach().to("cpu", torch.float64)
    if x.dim() != 2:
        raise ValueError(
            f"{name}: {argument} must be an (N, D) matrix, got shape {tuple(x.shape)}; flatten or pool "
            "the features first."
        )
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(
            f"{name}: {argument} hold {bad} NaN/Inf values; check the candidate model (e.g. run it in "
            "float32 rather than float16)."
        )
    return x


def as_labels(labels: ArrayLike, num_samples: int, name: str) -> tuple[torch.Tensor, int]:
    """Check class indices ``0..C-1`` (every class present, at least 2) and return them with ``C``.

    Raises:
        ValueError: non-integer or non-1-D labels, a length other than ``num_samples``, a
            single class, fewer samples than classes, or classes without samples.

    Example:
        >>> as_labels(torch.tensor([1, 0, 1]), 3, "logme")
        (tensor([1, 0, 1]), 2)
    """
    y = torch.as_tensor(labels).detach().cpu()
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(
            f"{name}: labels must be a 1-D tensor of integer class indices, got dtype {y.dtype} and shape "
            f"{tuple(y.shape)}."
        )
    if len(y) != num_samples:
        raise ValueError(f"{name}: {len(y)} labels for {num_samples} samples; pass one label per sample.")
    if len(y) and int(y.min()) < 0:
        raise ValueError(f"{name}: labels must be class indices >= 0, got {int(y.min())}.")
    present = torch.unique(y)
    if len(present) < 2:
        raise ValueError(
            f"{name}: the labels hold a single class ({present.tolist()}); transferability is measured "
            "on a target task with at least 2 classes."
        )
    num_classes = int(y.max()) + 1
    if len(y) < num_classes:
        raise ValueError(
            f"{name}: fewer samples ({len(y)}) than classes ({num_classes}); score a larger labelled "
            "target sample."
        )
    if len(present) < num_classes:
        missing = sorted(set(range(num_classes)) - set(present.tolist()))
        raise ValueError(
            f"{name}: classes {missing[:10]} have no samples; labels must be 0..C-1 with every class "
            "present (relabel with torch.unique(labels, return_inverse=True)[1])."
        )
    return y.long(), num_classes


def as_source_probs(source_probs: ArrayLike, from_logits: bool, name: str) -> torch.Tensor:
    """``(N, C_s)`` float64 probabilities of the source classifier (softmax of logits if asked).

    Raises:
        ValueError: as :func:`as_features`, or rows that are not distributions.

    Example:
        >>> as_source_probs(torch.zeros(1, 2), from_logits=True, name="leep")
        tensor([[0.5000, 0.5000]], dtype=torch.float64)
    """
    p = as_features(source_probs, name, "source_probs")
    if from_logits:
        return p.softmax(dim=1)
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype), atol=1e-3):
        raise ValueError(
            f"{name}: source_probs rows must be probability distributions (>= 0, summing to 1); pass "
            "from_logits=True for the source classifier's logits."
        )
    return p / p.sum(1, keepdim=True)


def stratified_split(
    labels: torch.Tensor,
    num_classes: int,
    test_fraction: float,
    seed: int = 0,
    name: str = "stratified_split",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded stratified train/held-out indices: ``round(n_c * test_fraction)`` of each class held out.

    Each class keeps at least one sample on both sides.

    Raises:
        ValueError: ``test_fraction`` outside ``(0, 1)`` or a class with fewer than 2 samples.

    Example:
        >>> train, test = stratified_split(torch.tensor([0, 0, 0, 0, 1, 1]), num_classes=2, test_fraction=0.5)
        >>> sorted(train.tolist() + test.tolist()), len(test)
        ([0, 1, 2, 3, 4, 5], 3)
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"{name}(test_fraction={test_fraction!r}) must be in (0, 1).")
    counts = torch.bincount(labels, minlength=num_classes)
    if int(counts.min()) < 2:
        small = int(counts.argmin())
        raise ValueError(
            f"{name}: class {small} has {int(counts[small])} sample(s); a held-out accuracy needs at least 2 "
            "samples of every class."
        )
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in range(num_classes):
        members = torch.nonzero(labels == c)[:, 0]
        members = members[torch.randperm(len(members), generator=generator)]
        n_test = min(max(1, round(len(members) * test_fraction)), len(members) - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return torch.cat(train), torch.cat(test)
