"""Backbones: feature extractors with layer groups, their builders, and the one weight resolver.

One job per file:

* :mod:`~lt_transfer.backbones.base`: :class:`Backbone`, :class:`LayerGroup`;
* :mod:`~lt_transfer.backbones.preprocessing`: :class:`Preprocessing`, the input the weights
  expect (``backbone.preprocessing``);
* :mod:`~lt_transfer.backbones.weights`: what a ``weights=`` value names, reading and
  checking state-dict files (used by every loader below);
* :mod:`~lt_transfer.backbones.torchvision`: torchvision families, head removal, the
  backbone builder and the whole-classifier loader;
* :mod:`~lt_transfer.backbones.timm`: timm models (timm imported only inside its functions),
  their layer groups, weights (EfficientNet-PyTorch-style files included) and preprocessing;
* :mod:`~lt_transfer.backbones.hf`: Hugging Face encoders and tokenizers;
* :mod:`~lt_transfer.backbones.lenet`: :class:`LeNetBackbone`;
* :mod:`~lt_transfer.backbones.small_cnn`: :class:`SmallCNNBackbone` (distillation students);
* :mod:`~lt_transfer.backbones.ts`: 1-D time-series networks (:class:`FCNBackbone`,
  :class:`ResNet1DBackbone`, :class:`InceptionTimeBackbone`), ``build_backbone("ts/<name>")``;
* :mod:`~lt_transfer.backbones.teacher`: :func:`load_teacher` for distillation;
* :mod:`~lt_transfer.backbones.build`: :func:`build_backbone` from a spec string or a module,
  :func:`resolve_preprocessing` for a spec string.

The Hugging Face names (:class:`HFBackbone`, :func:`build_hf_backbone`, :func:`load_tokenizer`
...) are loaded on first access, so ``import lt_transfer`` loads none of the Hugging Face
code (and ``transformers`` is imported only inside its functions).

Example:
    >>> from lt_transfer.backbones import build_backbone
    >>> build_backbone("torchvision/resnet18").num_features
    512
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lt_transfer.backbones.base import Backbone, LayerGroup, matches_prefix
from lt_transfer.backbones.build import build_backbone, resolve_preprocessing
from lt_transfer.backbones.lenet import LeNetBackbone
from lt_transfer.backbones.preprocessing import Preprocessing
from lt_transfer.backbones.small_cnn import SmallCNNBackbone
from lt_transfer.backbones.teacher import load_teacher
from lt_transfer.backbones.timm import (
    build_timm_backbone,
    load_timm_classifier,
    map_efficientnet_pytorch_keys,
    timm_layer_groups,
    timm_preprocessing,
)
from lt_transfer.backbones.torchvision import (
    SUPPORTED_TORCHVISION_FAMILIES,
    build_torchvision_backbone,
    load_torchvision_classifier,
    remove_head,
    torchvision_preprocessing,
)
from lt_transfer.backbones.ts import (
    TS_BACKBONES,
    FCNBackbone,
    InceptionTimeBackbone,
    ResNet1DBackbone,
    TimeSeriesBackbone,
    build_ts_backbone,
)
from lt_transfer.backbones.weights import (
    WEIGHT_FILE_SUFFIXES,
    ResolvedWeights,
    architecture_only,
    architecture_only_active,
    check_state_dict,
    load_weights_file,
    names_a_file,
    read_state_dict,
    resolve_weights,
)

if TYPE_CHECKING:
    from lt_transfer.backbones.hf import (
        HFBackbone,
        ModelClass,
        Pooling,
        build_hf_backbone,
        load_tokenizer,
        resolve_model_path,
    )

__all__ = [
    "SUPPORTED_TORCHVISION_FAMILIES",
    "TS_BACKBONES",
    "WEIGHT_FILE_SUFFIXES",
    "Backbone",
    "FCNBackbone",
    "HFBackbone",
    "InceptionTimeBackbone",
    "LayerGroup",
    "LeNetBackbone",
    "ModelClass",
    "Pooling",
    "Preprocessing",
    "ResNet1DBackbone",
    "ResolvedWeights",
    "SmallCNNBackbone",
    "TimeSeriesBackbone",
    "architecture_only",
    "architecture_only_active",
    "build_backbone",
    "build_hf_backbone",
    "build_timm_backbone",
    "build_torchvision_backbone",
    "build_ts_backbone",
    "check_state_dict",
    "load_teacher",
    "load_timm_classifier",
    "load_tokenizer",
    "load_torchvision_classifier",
    "load_weights_file",
    "map_efficientnet_pytorch_keys",
    "matches_prefix",
    "names_a_file",
    "read_state_dict",
    "remove_head",
    "resolve_model_path",
    "resolve_preprocessing",
    "resolve_weights",
    "timm_layer_groups",
    "timm_preprocessing",
    "torchvision_preprocessing",
]

#: Names served from :mod:`lt_transfer.backbones.hf` on first access.
_HF_NAMES = (
    "HFBackbone",
    "ModelClass",
    "Pooling",
    "build_hf_backbone",
    "load_tokenizer",
    "resolve_model_path",
)


def __getattr__(name: str) -> Any:
    """Load the Hugging Face names on first access (PEP 562).

    Example:
        >>> import lt_transfer.backbones as backbones
        >>> backbones.HFBackbone.__module__
        'lt_transfer.backbones.hf'
    """
    if name in _HF_NAMES:
        value = getattr(importlib.import_module("lt_transfer.backbones.hf"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """List the module's names, the lazily loaded ones included.

    Example:
        >>> import lt_transfer.backbones as backbones
        >>> "HFBackbone" in dir(backbones)
        True
    """
    return sorted({*globals(), *__all__})
