"""How the teacher of :class:`~lt_transfer.DistillationModule` sees the training batch.

Beyer et al., "Knowledge distillation: A good teacher is patient and consistent" (CVPR 2022):
the teacher should see exactly the view the student sees, augmentation included ("consistent
teaching"), and mixing the images of a batch (mixup/cutmix) and feeding the mixed images to
both networks ("function matching") lets the student match the teacher's function between
the training images too. This file owns:

* :func:`declared_augmentation`: whether the training data is augmented, read from the
  DataModule's own ``augment`` setting (``DigitsDataModule``, ``ImageFolderDataModule``);
* :func:`mix_views`: the mixup/cutmix view of a batch (:class:`MixedViews`), drawn from a seed
  derived from trainer counters (:func:`step_seed`), so a resumed run mixes as an
  uninterrupted one;
* :func:`mixed_cross_entropy`: the label loss of a mixed batch (each image's labels weighted
  by their share of the mix; unlabelled images add nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lt_transfer.batches import Input

__all__ = ["MixedViews", "declared_augmentation", "mix_views", "mixed_cross_entropy", "step_seed"]

_NO_AUGMENTATION = (None, False, "none", "None", "")


def declared_augmentation(datamodule: Any) -> str | None:
    """``"<DataModule>(augment=...)"`` when the DataModule declares training augmentation, else ``None``.

    Read from the DataModule's ``augment`` hyper-parameter (or attribute): explicit, cheap, and
    free of sample loading. Loaders without such a DataModule are not inspected; the
    teacher-output cache then still finds augmentation by its per-epoch check.

    Example:
        >>> from lt_transfer import DigitsDataModule
        >>> declared_augmentation(DigitsDataModule("sklearn_digits", augment="light"))
        "DigitsDataModule(augment='light')"
        >>> declared_augmentation(DigitsDataModule("sklearn_digits")) is None
        True
    """
    if datamodule is None:
        return None
    hparams = getattr(datamodule, "hparams", None)
    value = hparams.get("augment") if hasattr(hparams, "get") else None
    if value is None:
        value = getattr(datamodule, "augment", None)
    if value in _NO_AUGMENTATION or not isinstance(value, str):
        return None
    return f"{type(datamodule).__name__}(augment={value!r})"


def step_seed(base: int, *counters: int) -> int:
    """A seed for one training batch, from a run's base seed and counters (epoch, batch, rank).

    Example:
        >>> step_seed(0, 1, 3, 0) == step_seed(0, 1, 3, 0), step_seed(0, 1, 3, 0) == step_seed(0, 1, 3, 1)
        (True, False)
    """
    return int(np.random.SeedSequence([base % 2**63, *counters]).generate_state(1)[0])


@dataclass(frozen=True)
class MixedViews:
    """A mixed batch: ``x = lam * inputs + (1 - lam) * inputs[partner]`` (mixup) or pasted boxes (cutmix).

    Attributes:
        x: the mixed input, fed to student and teacher alike.
        partner: ``(N,)`` index of the image mixed into each one.
        lam: the share of each image's own content (for cutmix, its exact area share).

    Example:
        >>> views = MixedViews(torch.zeros(2, 3), partner=torch.tensor([1, 0]), lam=0.7)
        >>> views.partner.tolist(), views.lam
        ([1, 0], 0.7)
    """

    x: torch.Tensor
    partner: torch.Tensor
    lam: float


def mix_views(x: Input, kind: str, alpha: float, seed: int) -> MixedViews:
    """Mix a batch with a random permutation of itself (mixup or cutmix), reproducibly from ``seed``.

    Args:
        x: ``(N, ...)`` floating-point inputs (``(N, C, H, W)`` images for cutmix).
        kind: ``"mixup"`` (Zhang et al. 2018) or ``"cutmix"`` (Yun et al. 2019).
        alpha: the mixing weight is drawn from ``Beta(alpha, alpha)``.
        seed: seed of the weight, the permutation and the box.

    Raises:
        TypeError: ``x`` is not a floating-point tensor (e.g. a tokenizer dict).
        ValueError: cutmix of inputs that are not ``(N, C, H, W)`` images.

    Example:
        >>> x = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
        >>> views = mix_views(x, "mixup", 1.0, seed=0)
        >>> torch.allclose(views.x, views.lam * x + (1 - views.lam) * x[views.partner])
        True
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(
            "DistillationModule(teaching='function_matching') mixes floating-point input tensors; the "
            f"batch input is {type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype}. Use "
            "teaching='consistent' (or None) for token ids and other discrete inputs."
        )
    rng = np.random.default_rng(seed)
    lam = float(rng.beta(alpha, alpha))
    partner = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    if kind == "mixup":
        return MixedViews(lam * x + (1.0 - lam) * x[partner], partner, lam)
    if x.ndim != 4:
        raise ValueError(
            f"DistillationModule(mix='cutmix') pastes boxes into (N, C, H, W) images; got inputs of shape "
            f"{tuple(x.shape)}. Use mix='mixup'."
        )
    height, width = x.shape[-2:]
    cut = np.sqrt(1.0 - lam)
    box_h, box_w = int(round(height * cut)), int(round(width * cut))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(cy - box_h // 2, 0), min(cy + (box_h - box_h // 2), height)
    left, right = max(cx - box_w // 2, 0), min(cx + (box_w - box_w // 2), width)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[partner][..., top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    return MixedViews(mixed, partner, lam)


def mixed_cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, views: MixedViews, ignore_index: int
) -> tuple[torch.Tensor, int]:
    """Cross-entropy of a mixed batch against both labels of each image, weighted by their share.

    Row ``n`` has target weight ``lam`` on ``y[n]`` and ``1 - lam`` on ``y[partner[n]]``; an
    unlabelled image (``ignore_index``) contributes no weight. The loss is the weighted sum of
    the per-label cross-entropies divided by the total weight, so it equals plain
    cross-entropy when every row mixes an image with itself.

    Returns:
        ``(loss, rows)``: the loss (0 when no row has a labelled part) and the number of rows
        with a labelled part.

    Example:
        >>> views = MixedViews(torch.zeros(2, 3), torch.tensor([1, 0]), 0.75)
        >>> logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
        >>> loss, rows = mixed_cross_entropy(logits, torch.tensor([0, -1]), views, ignore_index=-1)
        >>> rows, round(float(loss), 4)  # row 0: 0.75 x CE(label 0); row 1: 0.25 x CE(label 0)
        (2, 0.7395)
    """
    log_p = F.log_softmax(logits.float(), dim=-1)
    total = log_p.new_zeros(())
    weight = log_p.new_zeros(len(y))
    for labels, share in ((y, views.lam), (y[views.partner], 1.0 - views.lam)):
        labelled = labels != ignore_index
        picked = log_p.gather(1, torch.where(labelled, labels, 0).unsqueeze(1)).squeeze(1)
        total = total - share * (picked * labelled).sum()
        weight = weight + share * labelled
    rows = int((weight > 0).sum())
    if rows == 0:
        return total, 0
    return total / weight.sum(), rows
