"""Backbone adapter: split any model into ``features`` + ``head`` and list its layer groups.

A :class:`Backbone` wraps a pretrained network with its classification head removed. It
maps an input batch to pooled feature vectors of width :attr:`Backbone.num_features` and
lists its *layer groups* ordered input → output. Layer groups are the unit for freezing,
progressive unfreezing and per-layer learning rates (the timm ``group_matcher`` idea,
expressed as parameter-name prefixes).

:func:`build_backbone` builds one from a spec string (``"torchvision/<model>"``) or from
a plain ``nn.Module`` with an explicit head attribute.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lt_transfer.resources import PACKAGE_SCHEME, resolve_package_uri

__all__ = ["Backbone", "LayerGroup", "build_backbone", "SUPPORTED_TORCHVISION_FAMILIES"]

_WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")


@dataclass(frozen=True)
class LayerGroup:
    """A named, ordered slice of a backbone: the unit of freezing and per-layer lr.

    Attributes:
        name: readable name, e.g. ``"layer3"`` or ``"features.7"``.
        named_parameters: ``(qualified name, parameter)`` pairs, in model order.
        modules: the sub-modules the group consists of (used to switch BatchNorm and
            dropout to eval mode when the group is frozen).

    Example:
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
        name: a readable name for messages and logs.
        pretrained: whether ``model`` holds pretrained weights. Modules use it for defaults
            that depend on it (the backbone learning-rate scale).

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
    """

    def __init__(
        self,
        model: nn.Module,
        num_features: int,
        groups: Sequence[tuple[str, Sequence[str]]] | None = None,
        name: str = "custom",
        pretrained: bool = False,
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
        if groups is None:
            groups = [
                (child_name, (child_name,))
                for child_name, child in model.named_children()
                if any(True for _ in child.parameters())
            ]
            direct = [n for n, _ in model.named_parameters(recurse=False)]
            if direct:
                groups = [("params", tuple(direct)), *groups]
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
            params = tuple((f"model.{n}", p) for n, p in named_params if _matches_any(n, prefixes))
            modules = tuple(m for n, m in named_modules if n and n in prefixes)
            result.append(LayerGroup(group_name, params, modules))
        return result

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
            owners = [g for g, prefixes in self._group_spec if _matches_any(name, prefixes)]
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


def _matches_any(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# --------------------------------------------------------------------------------------
# torchvision families: where the head is and how the trunk splits into groups.
# --------------------------------------------------------------------------------------

SUPPORTED_TORCHVISION_FAMILIES = (
    "ResNet (resnet*, resnext*, wide_resnet*)",
    "MobileNetV2 (mobilenet_v2)",
    "MobileNetV3 (mobilenet_v3_*)",
    "EfficientNet (efficientnet_b*, efficientnet_v2_*)",
    "ConvNeXt (convnext_*)",
    "DenseNet (densenet*)",
    "VisionTransformer (vit_*)",
    "RegNet (regnet_*)",
)


@dataclass(frozen=True)
class _Split:
    head: str  # attribute path of the final classification Linear
    groups: list[tuple[str, tuple[str, ...]]]


def _torchvision_split(model: nn.Module) -> _Split | None:
    from torchvision import models as tvm

    if isinstance(model, tvm.ResNet):
        groups = [("stem", ("conv1", "bn1"))]
        groups += [(f"layer{i}", (f"layer{i}",)) for i in range(1, 5)]
        return _Split("fc", groups)
    if isinstance(model, tvm.RegNet):
        blocks = [n for n, _ in model.trunk_output.named_children()]
        groups = [("stem", ("stem",))] + [(b, (f"trunk_output.{b}",)) for b in blocks]
        return _Split("fc", groups)
    if isinstance(model, (tvm.MobileNetV2, tvm.EfficientNet)):
        return _Split("classifier.1", _indexed_groups(model.features, "features"))
    if isinstance(model, tvm.MobileNetV3):
        groups = _indexed_groups(model.features, "features") + [("pre_logits", ("classifier.0",))]
        return _Split("classifier.3", groups)
    if isinstance(model, tvm.ConvNeXt):
        groups = _indexed_groups(model.features, "features") + [("norm", ("classifier.0",))]
        return _Split("classifier.2", groups)
    if isinstance(model, tvm.DenseNet):
        names = [n for n, _ in model.features.named_children()]
        groups: list[tuple[str, tuple[str, ...]]] = [
            ("stem", tuple(f"features.{n}" for n in ("conv0", "norm0")))
        ]
        blocks = [n for n in names if n.startswith("denseblock")]
        for block in blocks:
            index = block.removeprefix("denseblock")
            members = [block]
            if f"transition{index}" in names:
                members.append(f"transition{index}")
            if block == blocks[-1] and "norm5" in names:
                members.append("norm5")
            groups.append((block, tuple(f"features.{m}" for m in members)))
        return _Split("classifier", groups)
    if isinstance(model, tvm.VisionTransformer):
        groups = [("embed", ("conv_proj", "class_token", "encoder.pos_embedding"))]
        groups += [(n, (f"encoder.layers.{n}",)) for n, _ in model.encoder.layers.named_children()]
        last = ["encoder.ln"]
        if hasattr(model.heads, "pre_logits"):
            last.append("heads.pre_logits")
        groups.append(("norm", tuple(last)))
        return _Split("heads.head", groups)
    return None


def _indexed_groups(sequential: nn.Module, prefix: str) -> list[tuple[str, tuple[str, ...]]]:
    return [
        (f"{prefix}.{n}", (f"{prefix}.{n}",))
        for n, child in sequential.named_children()
        if any(True for _ in child.parameters())
    ]


def _remove_head(model: nn.Module, head_path: str) -> int:
    """Replace the module at ``head_path`` (and a dropout right before it) by Identity.

    Returns the head's input width.
    """
    parent_path, _, attr = head_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    head = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
    if not isinstance(head, nn.Linear):
        raise TypeError(
            f"Expected a Linear classification head at {head_path!r}, found {type(head).__name__}."
        )
    width = head.in_features
    if attr.isdigit():
        index = int(attr)
        parent[index] = nn.Identity()
        if index > 0 and isinstance(parent[index - 1], nn.Dropout):
            parent[index - 1] = nn.Identity()
    else:
        setattr(parent, attr, nn.Identity())
    return width


def _load_weight_file(model: nn.Module, path: Path, spec: str, head_path: str) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"weights={str(path)!r}: could not read a state dict from this file ({error})."
        ) from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights={str(path)!r}: the file holds a {type(state).__name__}, not a state dict.")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    head_keys = [k for k in missing if _matches_any(k, [head_path])]
    if unexpected or len(missing) != len(head_keys):
        raise ValueError(
            f"weights={str(path)!r} does not match the architecture {spec!r}: "
            f"{len(missing) - len(head_keys)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}). Pass a state dict "
            f"saved from the same torchvision model, or the matching backbone name."
        )
    shape_errors = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if shape_errors:
        raise ValueError(
            f"weights={str(path)!r} does not match the architecture {spec!r}: shape "
            f"mismatch in {len(shape_errors)} tensors, e.g. {shape_errors[:2]}."
        )
    model.load_state_dict(state, strict=not head_keys)


def _looks_like_path(weights: str) -> bool:
    return (
        os.sep in weights
        or "/" in weights
        or weights.endswith(_WEIGHT_FILE_SUFFIXES)
        or os.path.exists(weights)
    )


def _build_torchvision(name: str, weights: str | None, **kwargs: object) -> Backbone:
    from torchvision import models as tvm

    spec = f"torchvision/{name}"
    available = tvm.list_models()
    if name not in available:
        close = [m for m in available if m.split("_")[0] in name or name in m][:8]
        raise ValueError(
            f"build_backbone(name={spec!r}): torchvision has no model {name!r}. "
            f"Similar names: {close or available[:8]}. "
            "Use a name from torchvision.models.list_models()."
        )
    file_path: Path | None = None
    enum_weights = None
    if weights is not None:
        if weights.startswith(PACKAGE_SCHEME):
            file_path = resolve_package_uri(weights)
        elif _looks_like_path(weights):
            file_path = Path(weights).expanduser()
            if not file_path.is_file():
                raise FileNotFoundError(
                    f"build_backbone(weights={weights!r}): no such file. Pass an existing "
                    "state-dict path, a torchvision weights name such as 'DEFAULT', or None."
                )
        else:
            enum_cls = tvm.get_model_weights(name)
            names = ["DEFAULT", *enum_cls.__members__]
            if weights not in names:
                raise ValueError(
                    f"build_backbone(weights={weights!r}): {name} has no such weights. "
                    f"Choose one of {names}, a local .pth path, or None."
                )
            enum_weights = enum_cls[weights] if weights != "DEFAULT" else enum_cls.DEFAULT
    model = tvm.get_model(name, weights=enum_weights, **kwargs)
    split = _torchvision_split(model)
    if split is None:
        raise ValueError(
            f"build_backbone(name={spec!r}): cannot find the classification head of "
            f"{type(model).__name__}. Supported families: {', '.join(SUPPORTED_TORCHVISION_FAMILIES)}. "
            "For other models build it yourself and call "
            "build_backbone(model, head='<attribute path of the final Linear>') or "
            "Backbone(model_without_head, num_features=..., groups=[...])."
        )
    if file_path is not None:
        _load_weight_file(model, file_path, spec, split.head)
    width = _remove_head(model, split.head)
    return Backbone(model, width, split.groups, name=spec, pretrained=weights is not None)


def _build_from_module(
    model: nn.Module, head: str | None, num_features: int | None, pretrained: bool
) -> Backbone:
    if head is None and num_features is None:
        raise ValueError(
            f"build_backbone(model) got a {type(model).__name__} without a split: pass "
            "head='<attribute path of the final Linear>' (it is removed and its in_features "
            "becomes num_features), or num_features=<width> if the model already returns "
            "features."
        )
    if head is not None:
        try:
            model.get_submodule(head)
        except AttributeError as error:
            children = [n for n, _ in model.named_children()]
            raise ValueError(
                f"build_backbone(head={head!r}): {type(model).__name__} has no such "
                f"sub-module. Its children are {children}."
            ) from error
        width = _remove_head(model, head)
        if num_features is not None and num_features != width:
            raise ValueError(
                f"build_backbone(num_features={num_features}) disagrees with the head "
                f"{head!r}, whose in_features is {width}; drop num_features."
            )
        num_features = width
    assert num_features is not None
    return Backbone(model, num_features, name=type(model).__name__, pretrained=pretrained)


def build_backbone(
    name: str | nn.Module,
    weights: str | None = None,
    *,
    head: str | None = None,
    num_features: int | None = None,
    pretrained: bool = False,
    **model_kwargs: object,
) -> Backbone:
    """Build a :class:`Backbone` from a spec string or a plain module.

    Args:
        name: ``"torchvision/<model>"`` (any :func:`torchvision.models.get_model` name),
            ``"hf/<hub name, local folder or pkg://package/folder>"`` (a Hugging Face encoder,
            see :func:`lt_transfer.hf_backbone.build_hf_backbone`; ``model_kwargs`` such as
            ``pooling="cls"`` go there) or an ``nn.Module``. A module needs ``head`` (the
            attribute path of its final Linear, which is removed) or ``num_features`` (when
            it already returns features).
        weights: for torchvision names: ``None`` (random init), a weights enum member name
            such as ``"DEFAULT"`` or ``"IMAGENET1K_V1"`` (downloads or reads the torch hub
            cache), a local state-dict file saved from the same architecture, or
            ``"pkg://<package>/<file>"`` for a file shipped inside an installed package
            (e.g. :data:`lt_transfer.resources.MOBILENET_V2_IMAGENET`).
        head: see ``name``; only for modules.
        num_features: see ``name``; only for modules.
        pretrained: only for modules: whether the module holds pretrained weights (spec
            strings know it: ``weights`` given, or a Hugging Face model).
        **model_kwargs: forwarded to ``torchvision.models.get_model`` (e.g.
            ``image_size=32`` for ViT).

    Returns:
        The backbone, head removed, with its layer groups.

    Raises:
        ValueError: unknown name, weights that do not exist or do not fit, a model whose
            head cannot be found.
        FileNotFoundError: a weights path that does not exist.

    Example:
        >>> backbone = build_backbone("torchvision/mobilenet_v2")
        >>> backbone.num_features, len(backbone.layer_groups())
        (1280, 19)
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        >>> build_backbone(net, head="3").num_features
        32
    """
    if isinstance(name, nn.Module):
        if weights is not None or model_kwargs:
            raise ValueError(
                "build_backbone(model, ...): weights and model kwargs only apply to spec "
                "strings; load weights into the module before passing it."
            )
        return _build_from_module(name, head, num_features, pretrained)
    if not isinstance(name, str):
        raise TypeError(f"build_backbone(name=...) must be a string or nn.Module, got {type(name).__name__}.")
    if head is not None or num_features is not None or pretrained:
        raise ValueError(
            f"build_backbone(name={name!r}): head/num_features/pretrained only apply to nn.Module inputs; "
            "the split of a named model is known."
        )
    source, sep, model_name = name.partition("/")
    if not sep or not model_name:
        raise ValueError(
            f"build_backbone(name={name!r}): expected 'torchvision/<model>' "
            "(e.g. 'torchvision/resnet18') or 'hf/<name or path>'."
        )
    if source == "torchvision":
        return _build_torchvision(model_name, weights, **model_kwargs)
    if source == "hf":
        if weights is not None:
            raise ValueError(
                f"build_backbone(name={name!r}, weights={weights!r}): a Hugging Face model's "
                "weights come with its folder or hub name; drop weights."
            )
        from lt_transfer.hf_backbone import build_hf_backbone  # lazy: imports transformers

        return build_hf_backbone(model_name, **model_kwargs)  # type: ignore[arg-type]
    raise ValueError(
        f"build_backbone(name={name!r}): unknown source {source!r}; "
        "use 'torchvision/<model>' or 'hf/<name or path>'."
    )
