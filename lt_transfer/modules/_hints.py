"""Hint capture for :class:`~lt_transfer.DistillationModule`: intermediate outputs by layer name.

The FitNets hint loss (Romero et al. 2015) compares an intermediate student layer with an
intermediate teacher layer. :func:`capture_outputs` records the outputs of named
sub-modules during one forward pass (forward hooks, removed on exit);
:func:`output_width` infers a layer's channel count for the hint projection.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from lt_transfer.backbones import Backbone

__all__ = ["capture_outputs", "output_width"]


def output_width(module: nn.Module) -> int | None:
    """Channel count (features) of ``module``'s output, or ``None`` when it cannot be inferred.

    Known for :class:`~lt_transfer.Backbone`, Linear, convolution and normalisation layers,
    and a ``Sequential`` ending in one of them (not across a ``Flatten``).

    Example:
        >>> output_width(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())), output_width(nn.ReLU())
        (4, None)
    """
    if isinstance(module, Backbone):
        return module.num_features
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    if isinstance(module, nn.Sequential):
        for child in reversed(list(module)):
            if isinstance(child, nn.Flatten):
                return None
            width = output_width(child)
            if width is not None:
                return width
    return None


@contextmanager
def capture_outputs(layers: Mapping[str, tuple[nn.Module, str]]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of named sub-modules while the block runs.

    Args:
        layers: ``{role: (model, sub-module name)}``; the output of
            ``model.get_submodule(name)`` is stored under ``role`` (the first element of a
            tuple output).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> with capture_outputs({"hidden": (net, "0")}) as store:
        ...     _ = net(torch.zeros(4, 2))
        >>> store["hidden"].shape
        torch.Size([4, 3])
    """
    store: dict[str, torch.Tensor] = {}
    handles = []
    for role, (model, name) in layers.items():

        def hook(_module: nn.Module, _inputs: Any, output: Any, role: str = role) -> None:
            store[role] = output[0] if isinstance(output, (tuple, list)) else output

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()
