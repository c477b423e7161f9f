"""LeNetBackbone: the LeNet-size digit network of the DANN paper's MNIST experiments.

A :class:`~lt_transfer.backbones.base.Backbone` with three layer groups (``conv1``, ``conv2``,
``fc``), trained from scratch (``pretrained=False``): the default feature extractor of
:class:`~lt_transfer.DomainAdaptationModule` (``backbone="lenet"``).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from lt_transfer.backbones.base import Backbone

__all__ = ["LeNetBackbone"]


class LeNetBackbone(Backbone):
    """LeNet-size CNN for digits (DANN paper, MNIST → MNIST-M), as a :class:`Backbone`.

    ``conv 5×5 (32) → BN → ReLU → max-pool → conv 5×5 (48) → BN → ReLU → max-pool →
    adaptive avg-pool 4×4 → FC (num_features) → ReLU``. Layer groups: ``conv1``,
    ``conv2``, ``fc``. Any input side ≥ 16 px works (28 px: the pooling is exact).

    ``batch_norm=False`` drops the BatchNorm layers, as in the paper's network (Ganin et al.,
    JMLR 2016, Fig. 4: no normalisation layers). With BatchNorm and
    ``DomainAdaptationModule(joint_forward=True)`` each batch is normalised with mixed
    source + target statistics.

    Args:
        in_channels: input channels (3 for the colour MNIST-M-style shift).
        num_features: width of the feature vector; ``None``: no FC layer, the features are
            the flattened ``48 × 4 × 4 = 768`` conv maps, as in the paper.
        batch_norm: BatchNorm after each convolution.

    Example:
        >>> import torch
        >>> backbone = LeNetBackbone()
        >>> backbone(torch.zeros(2, 3, 28, 28)).shape, [g.name for g in backbone.layer_groups()]
        (torch.Size([2, 128]), ['conv1', 'conv2', 'fc'])
    """

    def __init__(self, in_channels: int = 3, num_features: int | None = 128, batch_norm: bool = True) -> None:
        if in_channels < 1 or (num_features is not None and num_features < 1):
            raise ValueError(
                f"LeNetBackbone(in_channels={in_channels}, num_features={num_features}): both must be >= 1."
            )
        if not isinstance(batch_norm, bool):
            raise TypeError(f"LeNetBackbone(batch_norm={batch_norm!r}) must be True or False.")

        def norm(channels: int) -> list[nn.Module]:
            return [nn.BatchNorm2d(channels)] if batch_norm else []

        model = nn.Sequential(
            OrderedDict(
                conv1=nn.Sequential(
                    nn.Conv2d(in_channels, 32, 5), *norm(32), nn.ReLU(inplace=True), nn.MaxPool2d(2)
                ),
                conv2=nn.Sequential(
                    nn.Conv2d(32, 48, 5),
                    *norm(48),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                    nn.AdaptiveAvgPool2d(4),
                ),
                fc=nn.Sequential(nn.Flatten(), nn.Linear(48 * 16, num_features), nn.ReLU(inplace=True))
                if num_features is not None
                else nn.Flatten(),
            )
        )
        groups = ("conv1", "conv2", "fc") if num_features is not None else ("conv1", "conv2")
        width = num_features if num_features is not None else 48 * 16
        super().__init__(model, width, [(n, (n,)) for n in groups], name="lenet")
