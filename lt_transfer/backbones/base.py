"""The backbone contract: :class:`Backbone` (features + ordered layer groups) and :class:`LayerGroup`.

A :class:`Backbone` wraps a network whose classification head is removed. It maps an input
batch to pooled feature vectors of width :attr:`Backbone.num_features` and lists its *layer
groups* ordered input → output. Layer groups are the unit for freezing, progressive
unfreezing and per-layer learning rates (the timm ``group_matcher`` idea, expressed as
parameter-name prefixes: :func:`matches_prefix`).

Builders live next to this file: :mod:`lt_transfer.backbones.torchvision`,
:mod:`lt_transfer.backbones.hf`, :mod:`lt_transfer.backbones.lenet`, and
:func:`lt_transfer.backbones.build.build_backbone` for spec strings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lt_transfer.backbones.preprocessing import Preprocessing

__all__ = ["Backbone", "LayerGroup", "matches_prefix"]


def matches_prefix(name: str, prefixes: Sequence[str]) -> bool:
    """Whether the parameter (or module) ``name`` lies under one of ``prefixes``.

    A name matches a prefix when it equals it or starts with ``prefix + "."``, so
    ``"layer1"`` matches ``"layer1.0.conv1.weight"`` but not ``"layer10.weight"``.

    Example:
        >>> matches_prefix("layer1.0.conv1.weight", ["stem", "layer1"])
        True
        >>> matches_prefix("layer10.weight", ["layer1"])
        False
    """
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _children_with_parameters(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    return [
        (f"{prefix}{name}", child)
        for name, child in module.named_children()
        if any(True for _ in child.parameters())
    ]


def _default_groups(model: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    """Direct parameters (``"params"``), then each child holding parameters; one Sequential is split."""
    direct = [n for n, _ in model.named_parameters(recurse=False)]
    children = _children_with_parameters(model, "")
    while not direct and len(children) == 1 and isinstance(children[0][1], nn.Sequential):
        name, only = children[0]
        inner = _children_with_parameters(only, f"{name}.")
        own = any(True for _ in only.parameters(recurse=False))
        if own or (len(inner) == 1 and not isinstance(inner[0][1], nn.Sequential)):
            break
        children = inner
    groups = [(name, (name,)) for name, _ in children]
    return [("params", tuple(direct)), *groups] if direct else groups


@dataclass(frozen=True)
class LayerGroup:
    """A named, ordered slice of a backbone: the unit of freezing and per-layer lr.

    Attributes:
        name: readable name, e.g. ``"layer3"`` or ``"features.7"``.
        named_parameters: ``(qualified name, parameter)`` pairs, in model order.
        modules: the sub-modules the group consists of (used to switch BatchNorm and
            dropout to eval mode when the group is frozen).

    Example:
        >>> from lt_transfer.backbones import build_backbone
        >>> backbone = build_backbone("torchvision/resnet18")
        >>> [group.name for group in backbone.layer_groups()]
        ['stem', 'layer1', 'layer2', 'layer3', 'layer4']
    """

    name: str
    named_parameters: tuple[tuple[str, nn.Parameter], ...]
    modules: tuple[nn.Module, ...] = field(default=())

    def parameters(self) -> Iterator[nn.Parameter]:
        """Yield the group's parameters."""
        for _, param in self.named_parameters:
            yield param

    def num_parameters(self) -> int:
        """Number of scalar parameters in the group."""
        return sum(param.numel() for param in self.parameters())


class Backbone(nn.Module):
    """A feature extractor (input → ``(N, num_features)``) with ordered layer groups.

    Args:
        model: the network with its classification head already removed. Its forward must
            return pooled features of shape ``(N, num_features)``.
        num_features: width of the feature vector.
        groups: ordered input → output list of ``(group name, parameter-name prefixes)``.
            A parameter belongs to a group when its name equals a prefix or starts with
            ``prefix + "."``. Every parameter of ``model`` must belong to exactly one group.
            ``None`` makes each direct child that holds parameters a group.
            A model whose only such child is an ``nn.Sequential`` (e.g. ``nn.Sequential(
            mobilenet_v2().features, pooling)``) is split into that Sequential's children
            instead (``"0.0"``, ``"0.1"``, ...), again while the result is one Sequential.
        name: a readable name for messages and logs.
        pretrained: whether ``model`` holds pretrained weights. Modules use it for defaults
            that depend on it (the backbone learning-rate scale).
        preprocessing: the input the weights expect (size, crop, mean/std); ``None`` (the
            default for plain modules) means unknown: image data modules then use the
            ImageNet defaults. Spec-string builders set it (see
            :mod:`lt_transfer.backbones.preprocessing`).

    Raises:
        ValueError: if ``num_features`` is not positive, or the groups miss or repeat
            parameters.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> trunk = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten())
        >>> backbone = Backbone(trunk, num_features=4)
        >>> backbone(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 4])
        >>> [group.name for group in backbone.layer_groups()]
        ['0']
        >>> blocks = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
        >>> wrapped = Backbone(nn.Sequential(blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4)
        >>> [group.name for group in wrapped.layer_groups()]
        ['0.0', '0.2']
    """

    def __init__(
        self,
        model: nn.Module,
        num_features: int,
        groups: Sequence[tuple[str, Sequence[str]]] | None = None,
        name: str = "custom",
        pretrained: bool = False,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"Backbone(model=...) must be an nn.Module, got {type(model).__name__}.")
        if int(num_features) <= 0:
            raise ValueError(f"Backbone(num_features={num_features!r}) must be a positive feature width.")
        self.model = model
        self.num_features = int(num_features)
        self.name = name
        self.pretrained = bool(pretrained)
        if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
            raise TypeError(
                "Backbone(preprocessing=...) must be a Preprocessing or None, got "
                f"{type(preprocessing).__name__}."
            )
        self.preprocessing = preprocessing
        if groups is None:
            groups = _default_groups(model)
        self._group_spec: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
            (group_name, tuple(prefixes)) for group_name, prefixes in groups
        )
        self._check_groups()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return pooled features of shape ``(N, num_features)``."""
        return self.model(x)

    def layer_groups(self) -> list[LayerGroup]:
        """Return the layer groups ordered input → output.

        Each parameter of the backbone appears in exactly one group; groups are computed
        fresh on every call, so they always reference the live parameters.
        """
        named_params = list(self.model.named_parameters())
        named_modules = list(self.model.named_modules())
        result = []
        for group_name, prefixes in self._group_spec:
            params = tuple((f"model.{n}", p) for n, p in named_params if matches_prefix(n, prefixes))
            modules = tuple(m for n, m in named_modules if n and n in prefixes)
            result.append(LayerGroup(group_name, params, modules))
        return result

    def model_config(self) -> dict[str, Any] | None:
        """The config needed to rebuild the architecture without its files, or ``None``.

        Checkpoints store it (a Hugging Face model's config); the architecture of other
        backbones follows from the module's hyper-parameters.

        Example:
            >>> from torch import nn
            >>> Backbone(nn.Linear(4, 4), num_features=4).model_config() is None
            True
        """
        return None

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, num_features={self.num_features}, groups={len(self._group_spec)}, "
            f"pretrained={self.pretrained}"
        )

    def _check_groups(self) -> None:
        if not self._group_spec:
            raise ValueError(
                f"Backbone {self.name!r} has no layer groups: the model has no parameters "
                "or `groups` is empty. Pass groups=[(name, [parameter prefixes]), ...]."
            )
        seen: dict[str, str] = {}
        for name, _ in self.model.named_parameters():
            owners = [g for g, prefixes in self._group_spec if matches_prefix(name, prefixes)]
            if not owners:
                raise ValueError(
                    f"Backbone {self.name!r}: parameter {name!r} is in no layer group. "
                    f"Groups: {[g for g, _ in self._group_spec]}. Add its prefix to `groups`."
                )
            if len(owners) > 1:
                raise ValueError(
                    f"Backbone {self.name!r}: parameter {name!r} is in several layer groups "
                    f"{owners}; each parameter must be in exactly one."
                )
            seen[name] = owners[0]
        empty = [g for g, _ in self._group_spec if g not in seen.values()]
        if empty:
            raise ValueError(
                f"Backbone {self.name!r}: layer groups {empty} match no parameter; check their prefixes."
            )
