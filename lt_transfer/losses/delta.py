"""DELTA: keep the fine-tuned feature maps close to the pretrained ones, channel by channel.

Li, Xiong, Wang, Huan, Chen, Liu, Huan & Ji, "DELTA: DEep Learning Transfer using Feature
Map with Attention for Convolutional Networks" (ICLR 2019). For a layer with feature maps
:math:`FM_j(x) \\in \\mathbb R^{H \\times W}` (channel :math:`j`) of the network being fine-tuned
(:math:`w`) and of the frozen pretrained network (:math:`w^0`), the behavioural regulariser is

.. math::

    \\Omega(w) = \\frac1N \\sum_{i=1}^{N} \\sum_{j=1}^{C} a_j\\,
        \\bigl\\lVert FM_j(x_i; w) - FM_j(x_i; w^0) \\bigr\\rVert_2^2 ,

summed over the regularised layers (call :func:`delta_loss` once per layer and add). The
attention :math:`a_j` says how much the target task needs channel :math:`j`: DELTA measures
the increase of the task loss when the channel's output of the *pretrained* network is set to
zero, and normalises the increases with a softmax over channels,

.. math::

    a_j = \\operatorname{softmax}_j\\bigl(L(FM^{(-j)}) - L(FM)\\bigr),

where :math:`FM^{(-j)}` is the map with channel :math:`j` zeroed; the weights sum to 1
(:func:`delta_channel_attention`). The paper evaluates them per example; here they are
**computed once**, from the loss increases averaged over the examples given (e.g. a large
batch of the training set at fit start), and kept fixed: a simpler variant of the paper's
per-example weights. Without attention the weights are uniform, :math:`1/C` (a plain
feature-map distance). DELTA adds L2 on the new head
(:math:`\\beta` of :mod:`lt_transfer.losses.l2sp`) and scales :math:`\\Omega` by its own
:math:`\\alpha`; both are left to the caller. Computed in float32 under AMP.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lt_transfer.losses._float32 import float32

__all__ = ["DELTALoss", "delta_channel_attention", "delta_loss"]


def _check_maps(features: torch.Tensor, where: str, name: str = "features") -> None:
    if features.ndim < 3:
        raise ValueError(
            f"{where}: {name} of shape {tuple(features.shape)} have no spatial map; DELTA needs the "
            "(N, C, H, W) feature maps of a convolutional layer (taken before global pooling, e.g. "
            "with a forward hook on the backbone's last layer group), not pooled (N, D) vectors."
        )


def delta_loss(
    features: torch.Tensor,
    pretrained_features: torch.Tensor,
    channel_weights: torch.Tensor | None = None,
    validate_args: bool = True,
) -> torch.Tensor:
    """Attention-weighted feature-map distance to the pretrained network (one layer).

    Args:
        features: ``(N, C, H, W)`` (or ``(N, C, *spatial)``) maps of the network being trained.
        pretrained_features: the same layer's maps from the frozen pretrained network, same
            shape; no gradient flows into them.
        channel_weights: ``(C,)`` attention :math:`a_j` (:func:`delta_channel_attention`);
            ``None`` is uniform ``1/C``.
        validate_args: check shapes.

    Returns:
        A scalar: the weighted squared distance summed over channels and positions, averaged
        over the batch.

    Raises:
        ValueError: inputs without spatial maps, different shapes, or weights that are not
            ``(C,)``.

    Example:
        >>> current = torch.zeros(1, 2, 1, 2)
        >>> pretrained = torch.tensor([[[[1.0, 1.0]], [[2.0, 0.0]]]])  # distances 2 and 4
        >>> delta_loss(current, pretrained, torch.tensor([0.75, 0.25]))  # 0.75·2 + 0.25·4
        tensor(2.5000)
    """
    if validate_args:
        _check_maps(features, "delta_loss")
        if features.shape != pretrained_features.shape:
            raise ValueError(
                f"delta_loss: features {tuple(features.shape)} and pretrained_features "
                f"{tuple(pretrained_features.shape)} must have the same shape (the same layer of the "
                "same architecture, on the same batch)."
            )
        if channel_weights is not None and channel_weights.shape != (features.shape[1],):
            raise ValueError(
                f"delta_loss: channel_weights of shape {tuple(channel_weights.shape)} must be "
                f"({features.shape[1]},), one weight per channel of the feature maps."
            )
    diff = float32(features) - float32(pretrained_features.detach())
    per_channel = diff.pow(2).flatten(2).sum(-1)  # (N, C)
    if channel_weights is None:
        return per_channel.mean(1).mean()
    weights = channel_weights.detach().to(device=per_channel.device, dtype=per_channel.dtype)
    return (per_channel * weights).sum(1).mean()


def delta_channel_attention(
    feature_maps: torch.Tensor,
    target: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    validate_args: bool = True,
) -> torch.Tensor:
    """DELTA's channel attention: softmax over channels of the loss increase when zeroed.

    .. math::

        a_j = \\operatorname{softmax}_j\\Bigl(\\frac1N \\sum_i L\\bigl(h(FM^{(-j)}_i), y_i\\bigr)
            - \\frac1N \\sum_i L\\bigl(h(FM_i), y_i\\bigr)\\Bigr)

    where :math:`FM^{(-j)}` is the map with channel :math:`j` set to zero and :math:`h` the
    rest of the pretrained network with a head fitted to the target task (DELTA fits the
    head on frozen pretrained features first). Call it on the pretrained network's maps, in
    eval mode; for several batches pass one large batch (the increases are averaged over it).

    Args:
        feature_maps: ``(N, C, *spatial)`` maps of the pretrained network at the layer.
        target: ``(N,)`` labels for ``loss_fn``.
        head: maps the feature maps to logits (e.g. global pooling + the linear head).
        loss_fn: mean loss over the batch (cross-entropy by default).
        validate_args: check shapes.

    Returns:
        ``(C,)`` float32 weights that sum to 1 (no gradient).

    Example:
        >>> head = lambda maps: maps.mean((2, 3)) @ torch.tensor([[4.0, -4.0], [0.0, 0.0]])
        >>> maps = torch.ones(2, 2, 3, 3)  # channel 0 decides the class, channel 1 is unused
        >>> weights = delta_channel_attention(maps, torch.tensor([0, 0]), head)
        >>> bool(weights[0] > weights[1]), round(float(weights.sum()), 6)
        (True, 1.0)
    """
    if validate_args:
        _check_maps(feature_maps, "delta_channel_attention", "feature_maps")
    with torch.no_grad():
        maps = float32(feature_maps.detach())
        baseline = loss_fn(float32(head(maps)), target)
        increases = []
        for channel in range(maps.shape[1]):
            masked = maps.clone()
            masked[:, channel] = 0
            increases.append(loss_fn(float32(head(masked)), target) - baseline)
        return torch.stack(increases).float().softmax(0)


class DELTALoss(nn.Module):
    """DELTA feature-map regulariser for one layer, its channel attention kept as a buffer.

    The attention starts uniform (``1/C``); set it once with :meth:`set_channel_weights`
    (e.g. from :func:`delta_channel_attention` at fit start). As a buffer it is saved in
    checkpoints, so a resumed run keeps the weights computed at the start.

    Args:
        num_channels: channel count ``C`` of the regularised layer.
        validate_args: check shapes on every call.

    Example:
        >>> loss_fn = DELTALoss(num_channels=2)
        >>> loss_fn(torch.zeros(1, 2, 1, 2), torch.ones(1, 2, 1, 2))  # mean over channels of 2
        tensor(2.)
        >>> loss_fn.set_channel_weights(torch.tensor([1.0, 0.0]))
        >>> loss_fn(torch.zeros(1, 2, 1, 2), torch.tensor([[[[0.0, 0.0]], [[3.0, 3.0]]]]))
        tensor(0.)
    """

    channel_weights: torch.Tensor

    def __init__(self, num_channels: int, validate_args: bool = True) -> None:
        super().__init__()
        if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"DELTALoss(num_channels={num_channels!r}) must be a positive channel count.")
        self.num_channels = num_channels
        self.validate_args = validate_args
        self.register_buffer("channel_weights", torch.full((num_channels,), 1.0 / num_channels))

    def set_channel_weights(self, weights: torch.Tensor) -> None:
        """Store the ``(C,)`` channel attention (non-negative; it is used as given)."""
        if weights.shape != (self.num_channels,) or bool((weights < 0).any()):
            raise ValueError(
                f"DELTALoss(num_channels={self.num_channels}).set_channel_weights: expected "
                f"{self.num_channels} non-negative weights, got shape {tuple(weights.shape)}."
            )
        with torch.no_grad():
            self.channel_weights.copy_(weights.detach())

    def forward(self, features: torch.Tensor, pretrained_features: torch.Tensor) -> torch.Tensor:
        """Return the weighted distance between current and pretrained maps ``(N, C, ...)``."""
        return delta_loss(features, pretrained_features, self.channel_weights, self.validate_args)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}"
