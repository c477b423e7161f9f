"""SmallCNNBackbone: a compact CNN trained from scratch, the deployment student of distillation.

A :class:`~lt_transfer.backbones.base.Backbone` of a few ``3×3 conv → BatchNorm → ReLU →
max-pool`` blocks and global average pooling, optionally behind an average-pooling of the
input (the student then works at a lower resolution than its teacher, on the same images).
Built from plain YAML (``class_path: lt_transfer.backbones.SmallCNNBackbone``), so a
distillation recipe can name it as the student's backbone; ``pretrained=False``.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from lt_transfer.backbones.base import Backbone

__all__ = ["SmallCNNBackbone"]


class SmallCNNBackbone(Backbone):
    """A small CNN for fast CPU inference, as a :class:`Backbone` (trained from scratch).

    ``[avg-pool input_pool×input_pool] → (conv 3×3 → BN → ReLU → max-pool 2) per width →
    global avg-pool``. Layer groups: ``block1``, ``block2``, ... (one per width, input →
    output); the block outputs are ``(N, C, H, W)`` maps, so ``backbone.model.block2`` can be
    an attention-transfer layer of :class:`~lt_transfer.DistillationModule`. The last block
    pools only globally. The input side must be at least ``input_pool * 2 ** (len(widths) - 1)``.

    Args:
        in_channels: input channels (3 for ImageNet-style inputs).
        widths: output channels of each block (at least one).
        input_pool: average-pooling factor applied to the input first (1: none). With
            ``input_pool=2`` a 64 px image is processed at 32 px, at a quarter of the cost.
        batch_norm: BatchNorm after each convolution.

    Example:
        >>> import torch
        >>> backbone = SmallCNNBackbone(widths=(8, 16), input_pool=2)
        >>> backbone(torch.zeros(2, 3, 64, 64)).shape, [g.name for g in backbone.layer_groups()]
        (torch.Size([2, 16]), ['block1', 'block2'])
        >>> backbone.model.block1(torch.zeros(1, 3, 32, 32)).shape  # a spatial map
        torch.Size([1, 8, 16, 16])
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: tuple[int, ...] | list[int] = (16, 32, 64),
        input_pool: int = 2,
        batch_norm: bool = True,
    ) -> None:
        widths = tuple(widths)
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"SmallCNNBackbone(in_channels={in_channels!r}) must be an int >= 1.")
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(
                f"SmallCNNBackbone(widths={list(widths)!r}) must list at least one channel count, each an "
                "int >= 1, e.g. [16, 32, 64]."
            )
        if isinstance(input_pool, bool) or not isinstance(input_pool, int) or input_pool < 1:
            raise ValueError(
                f"SmallCNNBackbone(input_pool={input_pool!r}) must be an int >= 1 (1: no input pooling)."
            )
        if not isinstance(batch_norm, bool):
            raise TypeError(f"SmallCNNBackbone(batch_norm={batch_norm!r}) must be True or False.")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if input_pool > 1:
            layers["input_pool"] = nn.AvgPool2d(input_pool)
        channels = in_channels
        for i, width in enumerate(widths, start=1):
            block: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1, bias=not batch_norm)]
            if batch_norm:
                block.append(nn.BatchNorm2d(width))
            block.append(nn.ReLU(inplace=True))
            if i < len(widths):
                block.append(nn.MaxPool2d(2))
            layers[f"block{i}"] = nn.Sequential(*block)
            channels = width
        layers["pool"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        names = [f"block{i}" for i in range(1, len(widths) + 1)]
        super().__init__(nn.Sequential(layers), widths[-1], [(n, (n,)) for n in names], name="small_cnn")
