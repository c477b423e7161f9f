"""build_backbone: one entry point from a spec string or a plain module to a :class:`Backbone`.

A spec string ``"<source>/<name>"`` goes to its source's builder:
``"torchvision/<model>"`` to :func:`~lt_transfer.backbones.torchvision.build_torchvision_backbone`,
``"timm/<model>"`` to :func:`~lt_transfer.backbones.timm.build_timm_backbone` and
``"hf/<name or path>"`` to :func:`~lt_transfer.backbones.hf.build_hf_backbone` (both imported
only then, so that ``timm`` and ``transformers`` load only when used) and ``"ts/<name>"`` to
:func:`~lt_transfer.backbones.ts.build_ts_backbone` (1-D time-series networks). A plain ``nn.Module`` is
split by the attribute path of its head (``head=``) or used as is (``num_features=``).

:func:`resolve_preprocessing` answers, for the same spec strings and without building the
model, which input the weights expect (what ``backbone.preprocessing`` of the built backbone
holds).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lt_transfer.backbones.base import Backbone
from lt_transfer.backbones.preprocessing import Preprocessing
from lt_transfer.backbones.torchvision import (
    build_torchvision_backbone,
    remove_head,
    torchvision_preprocessing,
)
from lt_transfer.backbones.ts import build_ts_backbone

__all__ = ["build_backbone", "resolve_preprocessing"]

_SOURCES = (
    "'torchvision/<model>' (e.g. 'torchvision/resnet18'), 'timm/<model>', 'hf/<name or path>' or 'ts/<name>' "
    "(time series: 'ts/fcn', 'ts/resnet1d', 'ts/inception')"
)


def _split_spec(name: str, caller: str) -> tuple[str, str]:
    source, sep, model_name = name.partition("/")
    if not sep or not model_name:
        raise ValueError(f"{caller}(name={name!r}): expected {_SOURCES}.")
    if source not in ("torchvision", "timm", "hf", "ts"):
        raise ValueError(f"{caller}(name={name!r}): unknown source {source!r}; use {_SOURCES}.")
    return source, model_name


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
        width = remove_head(model, head)
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
    **model_kwargs: Any,
) -> Backbone:
    """Build a :class:`Backbone` from a spec string or a plain module.

    Args:
        name: ``"torchvision/<model>"`` (any :func:`torchvision.models.get_model` name of a
            supported family), ``"hf/<hub name, local folder or pkg://package/folder>"`` (a
            Hugging Face encoder, see :func:`lt_transfer.backbones.hf.build_hf_backbone`;
            ``model_kwargs`` such as ``pooling="cls"`` go there), ``"ts/fcn"``, ``"ts/resnet1d"``
            or ``"ts/inception"`` (1-D time-series networks, see :mod:`lt_transfer.backbones.ts`;
            ``in_channels=`` and the widths are ``model_kwargs``) or an ``nn.Module``. A module
            needs ``head`` (the attribute path of its final Linear, which is removed) or
            ``num_features`` (when it already returns features).
        weights: for torchvision names: ``None`` (random init), a weights enum member name
            such as ``"DEFAULT"`` or ``"IMAGENET1K_V1"`` (downloads or reads the torch hub
            cache), a local state-dict file saved from the same architecture (``.pth``,
            ``.safetensors`` ...), or ``"pkg://<package>/<file>"`` for a file shipped inside an
            installed package (e.g. :data:`lt_transfer.resources.MOBILENET_V2_IMAGENET`). The
            rules are those of :func:`lt_transfer.backbones.weights.resolve_weights`. For timm
            names: ``None``, a file or ``pkg://`` file (no hub names). For ``ts/`` names:
            ``None`` or a file (our own pretraining's weights or checkpoint).
        head: see ``name``; only for modules.
        num_features: see ``name``; only for modules.
        pretrained: only for modules: whether the module holds pretrained weights (spec
            strings know it: ``weights`` given, or a Hugging Face model).
        **model_kwargs: forwarded to ``torchvision.models.get_model`` (e.g.
            ``image_size=32`` for ViT), ``timm.create_model`` (e.g. ``img_size=32``) or to the
            Hugging Face builder.

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
    source, model_name = _split_spec(name, "build_backbone")
    if source == "torchvision":
        return build_torchvision_backbone(model_name, weights, **model_kwargs)
    if source == "timm":
        from lt_transfer.backbones.timm import build_timm_backbone  # lazy: timm is an optional extra

        return build_timm_backbone(model_name, weights, **model_kwargs)
    if source == "ts":
        return build_ts_backbone(model_name, weights, **model_kwargs)
    if weights is not None:
        raise ValueError(
            f"build_backbone(name={name!r}, weights={weights!r}): a Hugging Face model's "
            "weights come with its folder or hub name; drop weights."
        )
    from lt_transfer.backbones.hf import build_hf_backbone  # lazy: only text backbones need it

    return build_hf_backbone(model_name, **model_kwargs)


def resolve_preprocessing(name: str, weights: str | None = None, **model_kwargs: Any) -> Preprocessing | None:
    """The input a spec string's weights expect, without building the model.

    Gives what ``build_backbone(name, weights, **model_kwargs).preprocessing`` holds:
    torchvision weights names their own ``transforms()``, timm models timm's data config,
    anything else the ImageNet defaults (see :mod:`lt_transfer.backbones.preprocessing`).

    Args:
        name: ``"torchvision/<model>"``, ``"timm/<model>"``, ``"hf/<name or path>"`` or ``"ts/<name>"``.
        weights: as for :func:`build_backbone`.
        **model_kwargs: the model's keyword arguments (input size ones are read).

    Returns:
        The preprocessing, or ``None`` for Hugging Face (text) and time-series backbones.

    Raises:
        ValueError: a malformed spec, an unknown model or weights name.

    Example:
        >>> resolve_preprocessing("torchvision/resnet50", "IMAGENET1K_V2").resize_size
        232
        >>> resolve_preprocessing("timm/vit_tiny_patch16_224").mean
        (0.5, 0.5, 0.5)
    """
    source, model_name = _split_spec(name, "resolve_preprocessing")
    if source == "torchvision":
        return torchvision_preprocessing(model_name, weights, **model_kwargs)
    if source == "timm":
        from lt_transfer.backbones.timm import timm_preprocessing  # lazy: timm is an optional extra

        return timm_preprocessing(model_name, weights, **model_kwargs)
    return None
