"""Freeze and unfreeze parts of a model by attribute path, parameter-name regex or layer group.

Layer groups are the unit of progressive unfreezing (ULMFiT, Howard & Ruder, "Universal
Language Model Fine-tuning for Text Classification", ACL 2018). For a module with a
:class:`~lt_transfer.Backbone` (e.g. :class:`~lt_transfer.TransferClassifier`) they come
from :meth:`Backbone.layer_groups`; for any other module, ``backbone="attr.path"`` names a
sub-module whose direct children (those holding parameters) become the groups, input →
output in registration order.

Parameters are always compared by identity, never by value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from torch import nn

from lt_transfer.backbones import LayerGroup

__all__ = ["resolve_layer_groups", "freeze", "unfreeze"]


def _describe_children(module: nn.Module, depth: int = 2) -> list[str]:
    names = []
    for name, _ in module.named_modules():
        if name and name.count(".") < depth:
            names.append(name)
    return names


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def resolve_layer_groups(module: nn.Module, backbone: str | None = None) -> tuple[str, list[LayerGroup]]:
    """Find the layer groups (input → output) of ``module``'s backbone.

    Args:
        module: any ``nn.Module`` (typically a ``LightningModule``).
        backbone: attribute path of the backbone inside ``module`` (``"encoder"``,
            ``"model.features"``). ``None`` uses ``module.backbone``. If the backbone has a
            ``layer_groups()`` method (a :class:`~lt_transfer.Backbone`) its groups are used;
            otherwise each direct child holding parameters is a group (parameters owned by
            the backbone module itself form a first group named ``"params"``).

    Returns:
        ``(prefix, groups)``: ``prefix`` is the backbone's attribute path (used to name
        optimizer param groups ``f"{prefix}.{group.name}"``); parameter names in the groups
        are qualified from ``module``.

    Raises:
        ValueError: when the attribute does not exist (the message lists what does) or holds
            no parameters.

    Example:
        >>> from torch import nn
        >>> net = nn.Module()
        >>> net.encoder = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3))
        >>> net.head = nn.Linear(3, 1)
        >>> prefix, groups = resolve_layer_groups(net, "encoder")
        >>> prefix, [g.name for g in groups], [n for n, _ in groups[1].named_parameters]
        ('encoder', ['0', '2'], ['encoder.2.weight', 'encoder.2.bias'])
    """
    path = "backbone" if backbone is None else backbone
    if not isinstance(path, str):
        raise ValueError(f"backbone={backbone!r} must be an attribute path string ('' = the module) or None.")
    try:
        sub = module.get_submodule(path)
    except AttributeError as error:
        hint = "" if backbone is not None else " (backbone=None looks for `module.backbone`)"
        raise ValueError(
            f"backbone={path!r}{hint}: {type(module).__name__} has no such sub-module. "
            f"It has: {_describe_children(module)}. Pass the attribute path of the part to "
            "unfreeze, e.g. backbone='feature_extractor'."
        ) from error
    groups: list[LayerGroup] = []
    layer_groups = getattr(sub, "layer_groups", None)
    if callable(layer_groups):
        for group in layer_groups():
            named = tuple((_join(path, name), param) for name, param in group.named_parameters)
            groups.append(LayerGroup(group.name, named, tuple(group.modules)))
    else:
        direct = tuple((_join(path, n), p) for n, p in sub.named_parameters(recurse=False))
        if direct:
            groups.append(LayerGroup("params", direct, ()))
        for child_name, child in sub.named_children():
            named = tuple((_join(path, f"{child_name}.{n}"), p) for n, p in child.named_parameters())
            if named:
                groups.append(LayerGroup(child_name, named, (child,)))
    if not groups:
        raise ValueError(
            f"backbone={path!r}: {type(sub).__name__} holds no parameters, so there is nothing "
            "to freeze or unfreeze; point `backbone` at the pretrained part of the model."
        )
    return path, groups


def _select(
    module: nn.Module,
    path: str | None,
    pattern: str | re.Pattern[str] | None,
    groups: int | Sequence[int] | None,
    backbone: str | None,
    caller: str,
) -> tuple[list[tuple[str, nn.Parameter]], list[nn.Module]]:
    given = [
        name
        for name, value in (("path", path), ("pattern", pattern), ("groups", groups))
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"{caller}(): pass only one of path, pattern and groups, got {given}.")
    if path is not None:
        try:
            sub = module.get_submodule(path)
        except AttributeError as error:
            raise ValueError(
                f"{caller}(path={path!r}): {type(module).__name__} has no such sub-module. "
                f"It has: {_describe_children(module)}."
            ) from error
        prefix = f"{path}." if path else ""
        return [(prefix + n, p) for n, p in sub.named_parameters()], [sub]
    if pattern is not None:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        selected = [(n, p) for n, p in module.named_parameters() if regex.search(n)]
        if not selected:
            raise ValueError(
                f"{caller}(pattern={regex.pattern!r}) matches no parameter name of "
                f"{type(module).__name__}; names look like "
                f"{[n for n, _ in module.named_parameters()][:5]}."
            )
        return selected, []
    if groups is not None:
        _, layer_groups = resolve_layer_groups(module, backbone)
        indices = [groups] if isinstance(groups, int) else list(groups)
        count = len(layer_groups)
        selected, modules = [], []
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, int) or not -count <= index < count:
                raise ValueError(
                    f"{caller}(groups={groups!r}): index {index!r} is out of range; there are "
                    f"{count} layer groups {[g.name for g in layer_groups]} (negative indices "
                    "count from the output end)."
                )
            group = layer_groups[index]
            selected += list(group.named_parameters)
            modules += list(group.modules)
        return selected, modules
    return list(module.named_parameters()), [module]


def freeze(
    module: nn.Module,
    path: str | None = None,
    *,
    pattern: str | re.Pattern[str] | None = None,
    groups: int | Sequence[int] | None = None,
    backbone: str | None = None,
    frozen_mode: Literal["eval", "train"] = "eval",
) -> list[str]:
    """Stop training part of ``module``: ``requires_grad=False`` and eval mode.

    Select what to freeze with exactly one of ``path`` (attribute path of a sub-module),
    ``pattern`` (regular expression searched in parameter names) or ``groups`` (layer-group
    index or indices, see :func:`resolve_layer_groups`); with none of them the whole module
    is frozen. Selected sub-modules are put in ``frozen_mode``: ``"eval"`` (BatchNorm keeps and
    uses its running statistics, dropout is off) or ``"train"`` (their mode is left as it is).
    A ``pattern`` selects parameters, not modules, so it changes no mode. Note that
    ``module.train()`` resets the modes; :class:`~lt_transfer.TransferClassifier` and
    :class:`~lt_transfer.callbacks.ProgressiveUnfreezing` re-apply eval mode themselves.

    Returns:
        The qualified names of the selected parameters.

    Raises:
        ValueError: several selectors, an unknown path, a pattern that matches nothing, a
            group index out of range, a ``frozen_mode`` other than ``"eval"``/``"train"``.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 1))
        >>> freeze(net, "1")
        ['1.weight', '1.bias']
        >>> net[1].training, net[1].weight.requires_grad
        (False, False)
        >>> freeze(net, pattern=r"^0\\.")
        ['0.weight', '0.bias']
        >>> [n for n, p in net.named_parameters() if p.requires_grad]
        ['2.weight', '2.bias']
    """
    if frozen_mode not in ("eval", "train"):
        raise ValueError(
            f"freeze(frozen_mode={frozen_mode!r}) must be 'eval' (BatchNorm keeps its running statistics, "
            "dropout off) or 'train' (modes left as they are)."
        )
    selected, modules = _select(module, path, pattern, groups, backbone, "freeze")
    for _, param in selected:
        param.requires_grad_(False)
    if frozen_mode == "eval":
        for sub in modules:
            sub.eval()
    return [name for name, _ in selected]


def unfreeze(
    module: nn.Module,
    path: str | None = None,
    *,
    pattern: str | re.Pattern[str] | None = None,
    groups: int | Sequence[int] | None = None,
    backbone: str | None = None,
) -> list[str]:
    """Make part of ``module`` trainable again: ``requires_grad=True`` and, if ``module`` is
    in training mode, train mode for the selected sub-modules.

    Selection works as in :func:`freeze`. Newly trainable parameters are *not* in any
    optimizer: add them yourself, or use
    :class:`~lt_transfer.callbacks.ProgressiveUnfreezing`, which also keeps lr schedulers,
    checkpoints and DDP correct.

    Returns:
        The qualified names of the selected parameters.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> _ = freeze(net)
        >>> unfreeze(net, groups=-1, backbone="")
        ['1.weight', '1.bias']
    """
    selected, modules = _select(module, path, pattern, groups, backbone, "unfreeze")
    for _, param in selected:
        param.requires_grad_(True)
    if module.training:
        for sub in modules:
            sub.train()
    return [name for name, _ in selected]
