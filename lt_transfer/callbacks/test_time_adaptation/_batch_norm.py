"""The BatchNorm layers a test-time adaptation touches, and a snapshot that puts them back.

TENT and AdaBN change only BatchNorm layers: their affine parameters (TENT), running
statistics, momentum, train/eval mode and the parameters' ``requires_grad``. A
:class:`BatchNormSnapshot` records all of that for every layer and restores it exactly, in place
(the tensors keep their identity, so optimizers and DDP keep working on them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["BatchNormSnapshot", "batch_norm_layers", "load_tensors", "require_batch_norm"]


def batch_norm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``module`` (``BatchNorm1d/2d/3d``, ``SyncBatchNorm``), in module order.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4))
        >>> [type(layer).__name__ for layer in batch_norm_layers(net)]
        ['BatchNorm2d']
    """
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def require_batch_norm(
    module: nn.Module, who: str, *, affine: bool = False, running_stats: bool = False
) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers ``who`` can adapt, or a clear error when the model has none.

    Args:
        module: the model.
        who: the callback's name, for the message.
        affine: keep only layers with affine parameters (TENT adapts them).
        running_stats: keep only layers that track running statistics (AdaBN re-estimates them).

    Raises:
        ValueError: no such layer, saying what the callback needs.

    Example:
        >>> require_batch_norm(nn.Linear(2, 2), "TENT", affine=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: TENT needs BatchNorm layers with affine parameters ...
    """
    layers = [
        layer
        for layer in batch_norm_layers(module)
        if (layer.affine or not affine) and (layer.track_running_stats or not running_stats)
    ]
    if not layers:
        what = "with affine parameters (affine=True)" if affine else "that keep running statistics"
        why = (
            "it adapts only their scale and shift, normalising each test batch with its own statistics"
            if affine
            else "it re-estimates their running statistics on the target data"
        )
        raise ValueError(
            f"{who} needs BatchNorm layers {what} (nn.BatchNorm1d/2d/3d or nn.SyncBatchNorm): {why}. "
            f"{type(module).__name__} has {len(batch_norm_layers(module))} BatchNorm layers and none "
            f"qualifies; use a model with BatchNorm (e.g. LeNetBackbone(batch_norm=True)) or another "
            "adaptation method."
        )
    return layers


@dataclass
class _LayerState:
    training: bool
    momentum: float | None
    tensors: dict[str, torch.Tensor]
    requires_grad: dict[str, bool]


class BatchNormSnapshot:
    """Everything a test-time adaptation may change in some BatchNorm layers, restorable in place.

    Args:
        layers: the BatchNorm layers to record.

    Example:
        >>> layer = nn.BatchNorm1d(2)
        >>> snapshot = BatchNormSnapshot([layer])
        >>> _ = layer.train()(torch.randn(8, 2) + 5)  # moves the running mean
        >>> snapshot.restore()
        >>> layer.running_mean.tolist(), layer.training
        ([0.0, 0.0], True)
    """

    def __init__(self, layers: list[nn.modules.batchnorm._BatchNorm]) -> None:
        self.layers = list(layers)
        # outside inference mode (test hooks run inside it): the copies are ordinary tensors
        with torch.inference_mode(False), torch.no_grad():
            self._states = [
                _LayerState(
                    layer.training,
                    layer.momentum,
                    {k: t.detach().clone() for k, t in _tensors(layer).items()},
                    {k: p.requires_grad for k, p in layer.named_parameters(recurse=False)},
                )
                for layer in self.layers
            ]

    def statistics(self) -> list[dict[str, torch.Tensor]]:
        """Copies of the recorded running statistics (``running_mean``, ``running_var``, ...), per layer."""
        return [
            {k: t.clone() for k, t in state.tensors.items() if k not in ("weight", "bias")}
            for state in self._states
        ]

    def restore(self, values: bool = True, modes: bool = True) -> None:
        """Put the layers back: ``values`` (parameters and running statistics) and ``modes``
        (train/eval, momentum, ``requires_grad``)."""
        with torch.inference_mode(False), torch.no_grad():
            for layer, state in zip(self.layers, self._states, strict=True):
                if values:
                    load_tensors(layer, state.tensors)
                if modes:
                    layer.train(state.training)
                    layer.momentum = state.momentum
                    for key, param in layer.named_parameters(recurse=False):
                        param.requires_grad_(state.requires_grad[key])


def _tensors(layer: nn.modules.batchnorm._BatchNorm) -> dict[str, torch.Tensor]:
    tensors = dict(layer.named_parameters(recurse=False))
    tensors.update((k, b) for k, b in layer.named_buffers(recurse=False) if b is not None)
    return tensors


def load_tensors(layer: nn.modules.batchnorm._BatchNorm, values: dict[str, torch.Tensor]) -> None:
    """Copy ``values`` (by name: ``weight``, ``running_mean``, ...) into the layer's tensors, in place.

    Example:
        >>> layer = nn.BatchNorm1d(2)
        >>> mean = layer.running_mean
        >>> load_tensors(layer, {"running_mean": torch.tensor([1.0, 2.0])})
        >>> layer.running_mean is mean, layer.running_mean.tolist()
        (True, [1.0, 2.0])
    """
    with torch.inference_mode(False), torch.no_grad():
        current = _tensors(layer)
        for key, value in values.items():
            current[key].copy_(value)
