"""Parameter groups for transfer learning, expressed as data.

Discriminative learning rates (a lower rate for pretrained layers, decaying layer by layer
towards the input, as in ULMFiT, Howard & Ruder 2018, and BEiT/timm's layer-wise decay) are
stored as an ``lr_scale`` entry on each optimizer param group; :func:`apply_lr_scales` turns
them into learning rates once the optimizer exists, *before* any scheduler reads them.
Biases and normalisation weights go to groups with ``weight_decay=0`` (Loshchilov & Hutter,
"Decoupled Weight Decay Regularization", 2019, and common practice since).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from torch import nn
from torch.optim import Optimizer

__all__ = [
    "NORM_LAYER_TYPES",
    "PRETRAINED_BACKBONE_LR_SCALE",
    "no_decay_parameter_ids",
    "layerwise_lr_scales",
    "param_groups_for",
    "apply_lr_scales",
    "resolve_backbone_lr_scale",
    "resolve_layer_decay",
]

#: The backbone learning-rate scale used when none is given and the backbone is pretrained.
PRETRAINED_BACKBONE_LR_SCALE = 0.1

NORM_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def no_decay_parameter_ids(module: nn.Module) -> set[int]:
    """Identities of the parameters that take no weight decay: biases and norm weights.

    Parameters are compared by identity (``id``), never by value, so two equal-valued
    tensors (fresh BatchNorm weights are all ones) are never confused.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        >>> ids = no_decay_parameter_ids(net)
        >>> [name for name, p in net.named_parameters() if id(p) in ids]
        ['0.bias', '1.weight', '1.bias']
    """
    ids: set[int] = set()
    for submodule in module.modules():
        is_norm = isinstance(submodule, NORM_LAYER_TYPES)
        for name, param in submodule.named_parameters(recurse=False):
            if is_norm or name == "bias" or name.endswith("_bias"):
                ids.add(id(param))
    return ids


def layerwise_lr_scales(num_groups: int, backbone_lr_scale: float, layer_decay: float) -> list[float]:
    """Learning-rate scales for ``num_groups`` layer groups ordered input → output.

    The group nearest the head gets ``backbone_lr_scale``; each step towards the input
    multiplies by ``layer_decay``: ``scale_i = backbone_lr_scale * layer_decay ** (n - 1 - i)``.

    Example:
        >>> layerwise_lr_scales(3, backbone_lr_scale=0.1, layer_decay=0.5)
        [0.025, 0.05, 0.1]
    """
    if num_groups < 0:
        raise ValueError(f"num_groups={num_groups} must be >= 0.")
    if backbone_lr_scale < 0:
        raise ValueError(f"backbone_lr_scale={backbone_lr_scale} must be >= 0.")
    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay={layer_decay} must be in (0, 1]; 1 disables the decay.")
    return [backbone_lr_scale * layer_decay ** (num_groups - 1 - i) for i in range(num_groups)]


def resolve_backbone_lr_scale(value: float | None, pretrained: bool, owner: str = "") -> float:
    """The backbone learning-rate scale to use: ``value``, or the default when it is ``None``.

    The default is :data:`PRETRAINED_BACKBONE_LR_SCALE` (0.1) for a pretrained backbone (a
    lower rate keeps the pretrained features) and 1.0 for one trained from scratch.

    Args:
        value: the scale the user gave, or ``None``.
        pretrained: whether the backbone holds pretrained weights (``Backbone.pretrained``).
        owner: who asks, for error messages (e.g. ``"TransferClassifier"``).

    Raises:
        ValueError: a negative or non-finite scale.

    Example:
        >>> resolve_backbone_lr_scale(None, pretrained=True), resolve_backbone_lr_scale(None, False)
        (0.1, 1.0)
        >>> resolve_backbone_lr_scale(0.3, pretrained=True)
        0.3
    """
    if value is None:
        return PRETRAINED_BACKBONE_LR_SCALE if pretrained else 1.0
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"{owner}(backbone_lr_scale={value!r}) must be a finite number >= 0 (1.0 = the head's lr), "
            "or None for the default (0.1 for a pretrained backbone, 1.0 otherwise)."
        )
    return float(value)


def resolve_layer_decay(value: float | None, owner: str = "") -> float:
    """The layer-wise lr decay to use: ``value``, or 1.0 (no decay) when it is ``None``.

    Raises:
        ValueError: a value outside ``(0, 1]``.

    Example:
        >>> resolve_layer_decay(None), resolve_layer_decay(0.8)
        (1.0, 0.8)
    """
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{owner}(layer_decay={value!r}) must be in (0, 1]; 1 (or None) disables the decay.")
    return float(value)


def param_groups_for(
    name: str,
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    lr_scale: float,
    no_decay_ids: set[int],
) -> list[dict]:
    """Split parameters into a decay group and a no-decay group that share ``lr_scale``.

    Frozen parameters (``requires_grad=False``) are left out; empty groups are dropped.
    Decay groups carry no ``weight_decay`` key, so the optimizer's own default applies;
    no-decay groups set ``weight_decay=0.0``. Every group carries a readable ``name``
    (shown by ``LearningRateMonitor``) and its ``lr_scale``.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> groups = param_groups_for("head", net.named_parameters(), 1.0,
        ...                           no_decay_parameter_ids(net))
        >>> [(g["name"], len(g["params"]), g.get("weight_decay")) for g in groups]
        [('head', 1, None), ('head.no_decay', 1, 0.0)]
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, param in named_parameters:
        if not param.requires_grad:
            continue
        (no_decay if id(param) in no_decay_ids else decay).append(param)
    groups = []
    if decay:
        groups.append({"name": name, "params": decay, "lr_scale": float(lr_scale)})
    if no_decay:
        groups.append(
            {
                "name": f"{name}.no_decay",
                "params": no_decay,
                "lr_scale": float(lr_scale),
                "weight_decay": 0.0,
            }
        )
    return groups


def apply_lr_scales(optimizer: Optimizer, groups: Sequence[dict] | None = None) -> None:
    """Multiply each group's ``lr`` by its ``lr_scale`` (once; marks the group as scaled).

    Call it right after building the optimizer and before building any lr scheduler, so the
    scheduler records the scaled rates as ``initial_lr``.

    Example:
        >>> import torch
        >>> params = [nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))]
        >>> opt = torch.optim.SGD([{"params": [params[0]], "lr_scale": 0.1},
        ...                        {"params": [params[1]]}], lr=1.0)
        >>> apply_lr_scales(opt)
        >>> [g["lr"] for g in opt.param_groups]
        [0.1, 1.0]
    """
    for group in groups if groups is not None else optimizer.param_groups:
        if group.get("lr_scaled"):
            continue
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        group["lr_scaled"] = True
