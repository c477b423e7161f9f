"""torchvision models: where each family's head is, its layer groups, and the two loaders.

* :func:`build_torchvision_backbone` (``build_backbone("torchvision/<model>")``): the model
  with its classification head removed, as a :class:`~lt_transfer.backbones.base.Backbone`
  split into layer groups (families in :data:`SUPPORTED_TORCHVISION_FAMILIES`).
* :func:`load_torchvision_classifier`: the whole classifier, head included (a distillation
  teacher, ``load_teacher("torchvision/<model>")``).

Both resolve ``weights=`` through :mod:`lt_transfer.backbones.weights`, so a weights name,
a local file or a ``pkg://`` file mean the same in both, with the same checks.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from torch import nn

from lt_transfer.backbones.base import Backbone
from lt_transfer.backbones.preprocessing import Preprocessing, with_weights_normalization
from lt_transfer.backbones.weights import ResolvedWeights, load_weights_file, resolve_weights

__all__ = [
    "SUPPORTED_TORCHVISION_FAMILIES",
    "build_torchvision_backbone",
    "load_torchvision_classifier",
    "remove_head",
    "torchvision_preprocessing",
]

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


def remove_head(model: nn.Module, head_path: str) -> int:
    """Replace the Linear at ``head_path`` (and a dropout right before it) by ``nn.Identity``.

    Args:
        model: the classifier, changed in place.
        head_path: attribute path of its final Linear (``"fc"``, ``"classifier.1"``).

    Returns:
        The head's input width: the width of the features the model now returns.

    Raises:
        TypeError: the module at ``head_path`` is not an ``nn.Linear``.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Dropout(0.2), nn.Linear(4, 2))
        >>> remove_head(net, "3"), net
        (4, Sequential(
          (0): Linear(in_features=8, out_features=4, bias=True)
          (1): ReLU()
          (2): Identity()
          (3): Identity()
        ))
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


def _check_model_name(name: str, label: str) -> None:
    """Raise when torchvision has no model ``name``, listing the close matches."""
    from torchvision import models as tvm

    available = tvm.list_models()
    if name in available:
        return
    close = difflib.get_close_matches(name, available, n=5)
    similar = f"Similar names: {close}. " if close else "No similar names. "
    raise ValueError(
        f"{label}: torchvision has no model {name!r}. {similar}"
        "Use a name from torchvision.models.list_models()."
    )


def torchvision_preprocessing(
    name: str, weights: str | None = None, *, resolved: ResolvedWeights | None = None, **model_kwargs: Any
) -> Preprocessing:
    """The preprocessing of a torchvision model: its weights' ``transforms()`` or the ImageNet defaults.

    A weights name (``"DEFAULT"``) gives that weights' own transform; ``None`` or a file gives
    :meth:`~lt_transfer.backbones.preprocessing.Preprocessing.imagenet` (and a listed shipped
    file its own normalisation). ``image_size`` in ``model_kwargs`` (ViT) sets the input size.

    Args:
        name: a :func:`torchvision.models.list_models` name.
        weights: as for :func:`build_torchvision_backbone`.
        resolved: ``weights`` already resolved (the builder passes it; then ``weights`` is unused).
        **model_kwargs: the model's keyword arguments (only ``image_size`` is read).

    Example:
        >>> torchvision_preprocessing("resnet50", "IMAGENET1K_V2").resize_size
        232
        >>> torchvision_preprocessing("vit_b_16", image_size=32).image_size
        32
    """
    if resolved is None:
        _check_model_name(name, f"resolve_preprocessing(name='torchvision/{name}')")
        resolved = resolve_weights(
            weights, torchvision_model=name, caller="resolve_preprocessing", argument="weights"
        )
    if resolved.enum is not None:
        preprocessing = Preprocessing.from_torchvision(resolved.enum.transforms())
    else:
        preprocessing = with_weights_normalization(Preprocessing.imagenet(), resolved.file or resolved.value)
    image_size = model_kwargs.get("image_size")
    if isinstance(image_size, int) and image_size != preprocessing.image_size:
        preprocessing = preprocessing.resized(image_size)
    return preprocessing


def build_torchvision_backbone(name: str, weights: str | None = None, **model_kwargs: Any) -> Backbone:
    """Build a torchvision model with its head removed, split into layer groups.

    ``build_backbone("torchvision/<name>", weights, **model_kwargs)`` lands here.

    Args:
        name: a :func:`torchvision.models.list_models` name of a supported family.
        weights: ``None``, a weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``), a local state
            dict of the same model (with or without its head) or ``"pkg://<package>/<file>"``;
            see :mod:`lt_transfer.backbones.weights`.
        **model_kwargs: forwarded to :func:`torchvision.models.get_model` (e.g.
            ``image_size=32`` for ViT).

    Returns:
        The backbone; ``pretrained`` is ``True`` when ``weights`` is given; ``preprocessing``
        from :func:`torchvision_preprocessing`.

    Raises:
        ValueError: an unknown model (close names listed), unknown weights, weights that do
            not fit, or a family whose head is not known.
        FileNotFoundError: a weights file that does not exist.

    Example:
        >>> backbone = build_torchvision_backbone("resnet18")
        >>> backbone.num_features, backbone.pretrained, [g.name for g in backbone.layer_groups()][:2]
        (512, False, ['stem', 'layer1'])
    """
    from torchvision import models as tvm

    spec = f"torchvision/{name}"
    _check_model_name(name, f"build_backbone(name={spec!r})")
    resolved = resolve_weights(weights, torchvision_model=name, caller="build_backbone", argument="weights")
    model = tvm.get_model(name, weights=resolved.enum, **model_kwargs)
    split = _torchvision_split(model)
    if split is None:
        raise ValueError(
            f"build_backbone(name={spec!r}): cannot find the classification head of "
            f"{type(model).__name__}. Supported families: {', '.join(SUPPORTED_TORCHVISION_FAMILIES)}. "
            "For other models build it yourself and call "
            "build_backbone(model, head='<attribute path of the final Linear>') or "
            "Backbone(model_without_head, num_features=..., groups=[...])."
        )
    if resolved.file is not None:
        load_weights_file(model, resolved, architecture=spec, optional_prefixes=[split.head])
    width = remove_head(model, split.head)
    preprocessing = torchvision_preprocessing(name, resolved=resolved, **model_kwargs)
    return Backbone(
        model, width, split.groups, name=spec, pretrained=resolved.pretrained, preprocessing=preprocessing
    )


def load_torchvision_classifier(
    name: str,
    weights: str | None = None,
    *,
    caller: str = "load_torchvision_classifier",
    name_argument: str = "name",
    weights_argument: str = "weights",
) -> nn.Module:
    """Build a whole torchvision classifier, head included (e.g. a distillation teacher).

    Args:
        name: a :func:`torchvision.models.list_models` name (any family), optionally as the
            spec ``"torchvision/<name>"``.
        weights: ``None``, a weights name (``"DEFAULT"``), a local state dict of the *full*
            classifier or ``"pkg://<package>/<file>"``; see :mod:`lt_transfer.backbones.weights`.
        caller: the public callable named in messages.
        name_argument: the argument that named the model, for messages.
        weights_argument: the argument that gave ``weights``, for messages.

    Returns:
        The classifier (in train mode, as torchvision builds it).

    Raises:
        ValueError: an unknown model (close names listed), unknown weights, or a file that
            does not fit the classifier.
        FileNotFoundError: a weights file that does not exist.

    Example:
        >>> from lt_transfer.resources import MOBILENET_V2_IMAGENET
        >>> model = load_torchvision_classifier("mobilenet_v2", MOBILENET_V2_IMAGENET)
        >>> model.classifier[-1].out_features
        1000
    """
    from torchvision import models as tvm

    model_name = name.removeprefix("torchvision/")
    spec = f"torchvision/{model_name}"
    _check_model_name(model_name, f"{caller}({name_argument}={name!r})")
    resolved = resolve_weights(
        weights, torchvision_model=model_name, caller=caller, argument=weights_argument
    )
    model = tvm.get_model(model_name, weights=resolved.enum)
    if resolved.file is not None:
        load_weights_file(model, resolved, architecture=f"{spec} with its classification head")
    return model
