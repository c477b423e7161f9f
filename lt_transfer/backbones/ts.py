"""1-D convolutional backbones for time series: FCN, ResNet-1D (Wang et al. 2017) and InceptionTime.

Each maps a batch of series ``(N, C, L)`` to pooled features ``(N, num_features)`` by global
average pooling over time, so any length works and every module, callback and score built on
:class:`~lt_transfer.backbones.base.Backbone` (fine-tuning modes, freezing,
``ProgressiveUnfreezing``, ``FeatureCache``, ``DomainAdaptationModule``, the transferability
scores) takes them unchanged. One layer group per convolution block, input → output:

* :class:`FCNBackbone`: three conv blocks (conv → BatchNorm → ReLU; 128/256/128 filters,
  kernels 8/5/3), groups ``block1``..``block3`` (Wang, Yan & Oates, "Time series classification
  from scratch with deep neural networks: a strong baseline", IJCNN 2017);
* :class:`ResNet1DBackbone`: three residual blocks of three convolutions each (64/128/128
  filters), groups ``block1``..``block3`` (same paper);
* :class:`InceptionTimeBackbone`: six Inception modules with a residual shortcut every three,
  groups ``inception1``..``inception6`` (a shortcut belongs to the module it is added after;
  Ismail Fawaz et al., "InceptionTime: finding AlexNet for time series classification", 2020).

Weights (``weights=``): ``None`` (random initialisation) or a state-dict file read by the one
weight resolver (:mod:`lt_transfer.backbones.weights`: ``torch.load(weights_only=True)`` or
safetensors, checked key by key). The file may hold the network itself
(``torch.save(backbone.model.state_dict(), path)``), the backbone
(``torch.save(backbone.state_dict(), path)``: keys ``model.*``) or a Lightning checkpoint of an
lt_transfer module whose ``backbone`` is one of these (keys ``backbone.model.*``; the rest, such
as the head, is ignored). ``build_backbone("ts/fcn" | "ts/resnet1d" | "ts/inception",
in_channels=...)`` builds them from a spec string (:func:`build_ts_backbone`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lt_transfer.backbones.base import Backbone
from lt_transfer.backbones.weights import ResolvedWeights, check_state_dict, read_state_dict, resolve_weights

__all__ = [
    "TS_BACKBONES",
    "FCNBackbone",
    "InceptionTimeBackbone",
    "ResNet1DBackbone",
    "TimeSeriesBackbone",
    "build_ts_backbone",
]

#: Key prefixes under which a saved file may hold the network's own keys, most specific first:
#: a checkpoint of an lt_transfer module, then a saved :class:`Backbone`.
_SAVED_PREFIXES = ("backbone.model.", "model.")


def _positive_int(owner: str, argument: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}({argument}={value!r}) must be an int >= 1.")
    return value


def _positive_ints(
    owner: str, argument: str, value: Sequence[int], count: int | None = None
) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, (list, tuple)) else ()
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{owner}({argument}={value!r}) must be a non-empty sequence of ints >= 1.")
    if count is not None and len(values) != count:
        raise ValueError(f"{owner}({argument}={value!r}) must have {count} entries (one per block).")
    return values


def _network_state(state: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """The entries of ``state`` that belong to ``model``: as they are, or under a saved prefix."""
    own = set(model.state_dict())
    if own & set(state):
        return dict(state)
    for prefix in _SAVED_PREFIXES:
        inner = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        if inner:
            return inner
    return dict(state)


class _SameConv1d(nn.Conv1d):
    """A stride-1 convolution that keeps the length ("same" padding, the extra zero on the right
    for even kernels, as ``padding="same"`` does) without the copy PyTorch warns about."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)
        self._padding = ((kernel_size - 1) // 2, kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self._padding))


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        _SameConv1d(in_channels, out_channels, kernel_size),
        nn.BatchNorm1d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _global_pool() -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten())


def _block_network(
    owner: str, in_channels: int, filters: Sequence[int], make_block: Callable[[int, int, int], nn.Module]
) -> tuple[nn.Sequential, int, list[tuple[str, tuple[str, ...]]]]:
    """``block1..3`` (``make_block(index, in, out)``) then the pooling; the width; one group per block."""
    channels = _positive_int(owner, "in_channels", in_channels)
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    filters = _positive_ints(owner, "filters", filters, 3)
    for index, width in enumerate(filters):
        blocks[f"block{index + 1}"] = make_block(index, channels, width)
        channels = width
    blocks["pool"] = _global_pool()
    groups = [(name, (name,)) for name in blocks if name != "pool"]
    return nn.Sequential(blocks), channels, groups


class TimeSeriesBackbone(Backbone):
    """A :class:`Backbone` for series ``(N, in_channels, L)``: checks the input, reads the weights.

    Subclasses build the network; this class loads ``weights`` (see the module docstring) and
    sets ``pretrained`` from it. Inside :func:`~lt_transfer.backbones.architecture_only` (a
    checkpoint is being loaded) the file is not read.

    Args:
        model: the network (input ``(N, C, L)`` → ``(N, num_features)``).
        num_features: width of the features.
        groups: layer groups (see :class:`Backbone`).
        name: spec name, e.g. ``"ts/fcn"``.
        in_channels: channels of the input series (1 for univariate series).
        weights: ``None`` or a state-dict file / ``"pkg://<package>/<file>"``.

    Raises:
        ValueError: a weights file that does not fit the network (named with the file).
        FileNotFoundError: no such weights file.

    Example:
        >>> import torch
        >>> backbone = FCNBackbone(in_channels=2, filters=(4, 8, 4))
        >>> backbone(torch.zeros(3, 2, 50)).shape, backbone.pretrained
        (torch.Size([3, 4]), False)
    """

    def __init__(
        self,
        model: nn.Module,
        num_features: int,
        groups: Sequence[tuple[str, Sequence[str]]],
        name: str,
        in_channels: int,
        weights: str | os.PathLike[str] | None = None,
    ) -> None:
        resolved = resolve_weights(weights, caller=type(self).__name__)
        super().__init__(model, num_features, groups, name=name, pretrained=resolved.pretrained)
        self.in_channels = in_channels
        if resolved.file is not None:
            self._load(resolved)

    def _load(self, weights: ResolvedWeights) -> None:
        assert weights.file is not None
        state = _network_state(read_state_dict(weights.file, weights.label), self.model)
        check_state_dict(self.model, state, source=weights.describe(), architecture=self.name)
        self.model.load_state_dict(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(N, num_features)`` of series ``(N, in_channels, L)``."""
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"{type(self).__name__} ({self.name}, in_channels={self.in_channels}) expects series of "
                f"shape (N, {self.in_channels}, length), got {shape}. Stack equal-length series (pad or "
                "resample them: TimeSeriesClassificationDataModule(length=...)); add the channel axis of "
                "univariate series with x.unsqueeze(1)."
            )
        return self.model(x)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, {super().extra_repr()}"


class FCNBackbone(TimeSeriesBackbone):
    """The fully convolutional network (FCN) of Wang et al. 2017 without its softmax layer.

    ``[conv(k) → BatchNorm → ReLU] × 3 → global average pooling``, "same" padding, so the
    length is kept until the pooling. Layer groups ``block1``, ``block2``, ``block3``.

    Args:
        in_channels: channels of the input series.
        filters: filters of the three blocks (paper: 128, 256, 128).
        kernel_sizes: kernel sizes of the three blocks (paper: 8, 5, 3).
        weights: ``None`` or a state-dict file (see the module docstring).

    Example:
        >>> import torch
        >>> backbone = FCNBackbone(filters=(8, 16, 8))
        >>> backbone(torch.zeros(2, 1, 24)).shape, [g.name for g in backbone.layer_groups()]
        (torch.Size([2, 8]), ['block1', 'block2', 'block3'])
    """

    def __init__(
        self,
        in_channels: int = 1,
        filters: tuple[int, ...] = (128, 256, 128),
        kernel_sizes: tuple[int, ...] = (8, 5, 3),
        weights: str | None = None,
    ) -> None:
        kernels = _positive_ints(type(self).__name__, "kernel_sizes", kernel_sizes, 3)
        network, width, groups = _block_network(
            type(self).__name__, in_channels, filters, lambda i, cin, cout: _conv_bn(cin, cout, kernels[i])
        )
        super().__init__(network, width, groups, "ts/fcn", in_channels, weights)


class _ResidualBlock(nn.Module):
    """Three convolutions (BatchNorm, ReLU between) plus a shortcut (1×1 conv + BN, or BN)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int]) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * len(kernel_sizes)
        self.convs = nn.Sequential(
            *(
                _conv_bn(widths[i], widths[i + 1], kernel, relu=i < len(kernel_sizes) - 1)
                for i, kernel in enumerate(kernel_sizes)
            )
        )
        if in_channels != out_channels:
            projection = nn.Conv1d(in_channels, out_channels, 1)
            self.shortcut = nn.Sequential(projection, nn.BatchNorm1d(out_channels))
        else:
            self.shortcut = nn.Sequential(nn.BatchNorm1d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.convs(x) + self.shortcut(x))


class ResNet1DBackbone(TimeSeriesBackbone):
    """The 1-D ResNet of Wang et al. 2017 without its softmax layer.

    Three residual blocks; each has three convolutions (kernels 8, 5, 3; BatchNorm after each,
    ReLU after the first two) and a shortcut (a 1×1 convolution + BatchNorm when the width
    changes, else BatchNorm) added before the final ReLU. Then global average pooling. Layer
    groups ``block1``, ``block2``, ``block3``.

    Args:
        in_channels: channels of the input series.
        filters: widths of the three blocks (paper: 64, 128, 128).
        kernel_sizes: kernel sizes of the three convolutions inside each block (paper: 8, 5, 3).
        weights: ``None`` or a state-dict file (see the module docstring).

    Example:
        >>> import torch
        >>> backbone = ResNet1DBackbone(in_channels=3, filters=(4, 8, 8))
        >>> backbone(torch.zeros(2, 3, 30)).shape, len(backbone.layer_groups())
        (torch.Size([2, 8]), 3)
    """

    def __init__(
        self,
        in_channels: int = 1,
        filters: tuple[int, ...] = (64, 128, 128),
        kernel_sizes: tuple[int, ...] = (8, 5, 3),
        weights: str | None = None,
    ) -> None:
        kernels = _positive_ints(type(self).__name__, "kernel_sizes", kernel_sizes)
        network, width, groups = _block_network(
            type(self).__name__, in_channels, filters, lambda i, cin, cout: _ResidualBlock(cin, cout, kernels)
        )
        super().__init__(network, width, groups, "ts/resnet1d", in_channels, weights)


class _InceptionModule(nn.Module):
    """Bottleneck, parallel convolutions of several kernel sizes and a max-pool branch, concatenated."""

    def __init__(self, in_channels: int, filters: int, kernel_sizes: Sequence[int], bottleneck: int) -> None:
        super().__init__()
        use_bottleneck = bottleneck > 0 and in_channels > 1
        self.bottleneck = (
            nn.Conv1d(in_channels, bottleneck, 1, bias=False) if use_bottleneck else nn.Identity()
        )
        width = bottleneck if use_bottleneck else in_channels
        self.convs = nn.ModuleList(_SameConv1d(width, filters, k, bias=False) for k in kernel_sizes)
        self.pool_branch = nn.Sequential(
            nn.MaxPool1d(3, stride=1, padding=1), nn.Conv1d(in_channels, filters, 1, bias=False)
        )
        self.norm = nn.BatchNorm1d(filters * (len(kernel_sizes) + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.bottleneck(x)
        branches = [conv(reduced) for conv in self.convs] + [self.pool_branch(x)]
        return F.relu(self.norm(torch.cat(branches, dim=1)))


class _InceptionNetwork(nn.Module):
    """``inception1..N`` modules; after every third one, ``shortcutK`` adds the block's input."""

    def __init__(
        self, in_channels: int, depth: int, filters: int, kernel_sizes: Sequence[int], bottleneck: int,
        residual: bool,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.residual = residual
        width = filters * (len(kernel_sizes) + 1)
        channels = block_input = in_channels
        for index in range(1, depth + 1):
            module = _InceptionModule(channels, filters, kernel_sizes, bottleneck)
            self.add_module(f"inception{index}", module)
            channels = width
            if residual and index % 3 == 0:
                shortcut = nn.Sequential(nn.Conv1d(block_input, width, 1, bias=False), nn.BatchNorm1d(width))
                self.add_module(f"shortcut{index // 3}", shortcut)
                block_input = width
        self.pool = _global_pool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block_input = x
        for index in range(1, self.depth + 1):
            x = getattr(self, f"inception{index}")(x)
            if self.residual and index % 3 == 0:
                x = F.relu(x + getattr(self, f"shortcut{index // 3}")(block_input))
                block_input = x
        return self.pool(x)


class InceptionTimeBackbone(TimeSeriesBackbone):
    """One InceptionTime network (Ismail Fawaz et al. 2020) without its softmax layer.

    ``depth`` Inception modules: a 1×1 bottleneck (for inputs with more than one channel),
    parallel convolutions of ``kernel_sizes`` and a max-pool → 1×1 branch, concatenated
    (``filters × (len(kernel_sizes) + 1)`` channels), BatchNorm, ReLU; a residual shortcut
    (1×1 conv + BatchNorm) every three modules; global average pooling. The paper ensembles five
    such networks; this is one. Layer groups ``inception1``..``inception<depth>`` (shortcut ``k``
    belongs to module ``3k``).

    Args:
        in_channels: channels of the input series.
        depth: number of Inception modules (paper: 6).
        filters: filters per branch (paper: 32; the output width is 4× that).
        kernel_sizes: kernel sizes of the parallel convolutions (paper: 40, 20, 10; odd sizes
            here so that "same" padding is symmetric).
        bottleneck: bottleneck width (paper: 32); 0 disables it.
        residual: add the shortcuts.
        weights: ``None`` or a state-dict file (see the module docstring).

    Example:
        >>> import torch
        >>> backbone = InceptionTimeBackbone(in_channels=2, depth=3, filters=4, bottleneck=4)
        >>> backbone(torch.zeros(2, 2, 40)).shape, [g.name for g in backbone.layer_groups()]
        (torch.Size([2, 16]), ['inception1', 'inception2', 'inception3'])
    """

    def __init__(
        self,
        in_channels: int = 1,
        depth: int = 6,
        filters: int = 32,
        kernel_sizes: tuple[int, ...] = (39, 19, 9),
        bottleneck: int = 32,
        residual: bool = True,
        weights: str | None = None,
    ) -> None:
        owner = type(self).__name__
        in_channels = _positive_int(owner, "in_channels", in_channels)
        depth = _positive_int(owner, "depth", depth)
        filters = _positive_int(owner, "filters", filters)
        kernel_sizes = _positive_ints(owner, "kernel_sizes", kernel_sizes)
        if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 0:
            raise ValueError(f"{owner}(bottleneck={bottleneck!r}) must be an int >= 0 (0: no bottleneck).")
        network = _InceptionNetwork(in_channels, depth, filters, kernel_sizes, bottleneck, bool(residual))
        groups = []
        for index in range(1, depth + 1):
            prefixes = [f"inception{index}"]
            if residual and index % 3 == 0:
                prefixes.append(f"shortcut{index // 3}")
            groups.append((f"inception{index}", prefixes))
        width = filters * (len(kernel_sizes) + 1)
        super().__init__(network, width, groups, "ts/inception", in_channels, weights)


#: The spec names of ``build_backbone("ts/<name>")`` and their classes.
TS_BACKBONES: dict[str, type[TimeSeriesBackbone]] = {
    "fcn": FCNBackbone,
    "resnet1d": ResNet1DBackbone,
    "inception": InceptionTimeBackbone,
}


def build_ts_backbone(name: str, weights: str | None = None, **model_kwargs: Any) -> TimeSeriesBackbone:
    """Build the time-series backbone ``name`` (``"fcn"``, ``"resnet1d"`` or ``"inception"``).

    Args:
        name: a key of :data:`TS_BACKBONES`.
        weights: ``None`` or a state-dict file (see the module docstring).
        **model_kwargs: the class's arguments, e.g. ``in_channels=6`` or ``filters=(64, 128, 64)``.

    Raises:
        ValueError: an unknown name (the message lists the known ones) or bad arguments.

    Example:
        >>> build_ts_backbone("resnet1d", in_channels=6).num_features
        128
        >>> build_ts_backbone("lstm")
        Traceback (most recent call last):
        ...
        ValueError: build_backbone(name='ts/lstm'): unknown time-series backbone; choose one of \
['ts/fcn', 'ts/resnet1d', 'ts/inception'].
    """
    if name not in TS_BACKBONES:
        raise ValueError(
            f"build_backbone(name='ts/{name}'): unknown time-series backbone; choose one of "
            f"{[f'ts/{known}' for known in TS_BACKBONES]}."
        )
    try:
        return TS_BACKBONES[name](weights=weights, **model_kwargs)
    except TypeError as error:
        raise TypeError(f"build_backbone(name='ts/{name}', ...): {error}") from error
