"""timm models: ``build_backbone("timm/<name>")``, their layer groups, weights and preprocessing.

timm (``pip install 'lt_transfer[timm]'``) is imported inside the functions of this file
only, so ``import lt_transfer`` never imports it.

* :func:`build_timm_backbone`: the model with its classifier reset
  (``reset_classifier(0)``), split into layer groups by timm's own ``group_matcher()``
  (stem, then stages or blocks; :func:`timm_layer_groups`), its
  :class:`~lt_transfer.backbones.preprocessing.Preprocessing` from timm's data config.
* :func:`load_timm_classifier`: the whole classifier, head included (a distillation teacher).
* Weights come from a local state-dict file or a ``pkg://`` file through
  :mod:`lt_transfer.backbones.weights`; timm's hub weights (``pretrained=True``, tags such as
  ``"DEFAULT"``) are never downloaded: save them to a file where a network is available.
* Files with EfficientNet-PyTorch-style keys (``_conv_stem.weight``,
  ``_blocks.0._depthwise_conv.weight``, ..., ``_fc``), such as the shipped
  :data:`~lt_transfer.resources.EFFICIENTNET_LITE0_IMAGENET`, are renamed onto timm's keys in
  order, each pair checked to be the same kind of layer, tensor and shape
  (:func:`map_efficientnet_pytorch_keys`).
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lt_transfer.backbones.base import Backbone, matches_prefix
from lt_transfer.backbones.preprocessing import Preprocessing, with_weights_normalization
from lt_transfer.backbones.weights import (
    ResolvedWeights,
    check_state_dict,
    names_a_file,
    read_state_dict,
    resolve_weights,
)

__all__ = [
    "build_timm_backbone",
    "load_timm_classifier",
    "map_efficientnet_pytorch_keys",
    "timm_layer_groups",
    "timm_preprocessing",
]

_FILE_KINDS = {
    "_conv_stem": "stem conv",
    "_conv_head": "head conv",
    "_fc": "classifier",
    "_expand_conv": "1x1 conv",
    "_project_conv": "1x1 conv",
    "_depthwise_conv": "depthwise conv",
    "_se_reduce": "se reduce",
    "_se_expand": "se expand",
    "_bn0": "norm",
    "_bn1": "norm",
    "_bn2": "norm",
}
_TIMM_KINDS = {
    "conv_stem": "stem conv",
    "conv_head": "head conv",
    "classifier": "classifier",
    "conv_pw": "1x1 conv",
    "conv_pwl": "1x1 conv",
    "conv_dw": "depthwise conv",
    "se.conv_reduce": "se reduce",
    "se.conv_expand": "se expand",
    "bn1": "norm",
    "bn2": "norm",
    "bn3": "norm",
}
_FILE_KEY = re.compile(r"^(?:_blocks\.(?P<block>\d+)\.)?(?P<layer>_\w+)\.(?P<tensor>\w+)$")
_TIMM_KEY = re.compile(r"^(?:blocks\.(?P<block>\d+\.\d+)\.)?(?P<layer>[\w.]+)\.(?P<tensor>\w+)$")


def _import_timm(label: str) -> Any:
    try:
        return importlib.import_module("timm")
    except ImportError as error:
        raise ImportError(
            f"{label} needs timm: pip install 'lt_transfer[timm]' (or pip install timm)."
        ) from error


def _check_model_name(timm: Any, name: str, label: str) -> None:
    if timm.is_model(name):
        return
    base = name.partition(".")[0]
    close = difflib.get_close_matches(base, timm.list_models(), n=5)
    similar = f"Similar names: {close}. " if close else "No similar names. "
    raise ValueError(f"{label}: timm has no model {name!r}. {similar}Use a name from timm.list_models().")


def _resolve(weights: str | None, spec: str, caller: str, argument: str) -> ResolvedWeights:
    if isinstance(weights, str) and not names_a_file(weights):
        raise ValueError(
            f"{caller}({argument}={weights!r}): {spec} weights come from a file here: timm's hub "
            "weights would need a download. Where a network is available save them "
            "(torch.save(timm.create_model(name, pretrained=True).state_dict(), 'model.pth'), or "
            "the hub's model.safetensors) and pass the file's path, or a 'pkg://<package>/<file>', or None."
        )
    return resolve_weights(weights, caller=caller, argument=argument)


def _signatures(keys: list[str], pattern: re.Pattern[str], kinds: Mapping[str, str]) -> list[tuple]:
    """``(block ordinal, layer kind, tensor name)`` per key; unknown layers get their own kind."""
    blocks: dict[str, int] = {}
    result = []
    for key in keys:
        match = pattern.match(key)
        if match is None:
            result.append((-1, f"unknown {key}", ""))
            continue
        block = match["block"]
        ordinal = -1 if block is None else blocks.setdefault(block, len(blocks))
        layer = match["layer"]
        result.append((ordinal, kinds.get(layer, f"unknown {layer}"), match["tensor"]))
    return result


def map_efficientnet_pytorch_keys(
    state: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    *,
    source: str,
    architecture: str,
) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch-style state dict onto a timm EfficientNet's keys, in order.

    The ``k``-th entry of ``state`` becomes the ``k``-th key of ``reference`` after a strict
    check: the same number of entries and, for every pair, the same block (flat ``_blocks.i``
    against timm's ``blocks.stage.index``, both counted in order), the same kind of layer
    (stem conv, 1×1 conv, depthwise conv, squeeze-excite, norm, head conv, classifier), the
    same tensor name (``weight``, ``running_mean`` ...) and the same shape.

    Args:
        state: the file's state dict (``_conv_stem.weight``, ``_blocks.0._bn1.weight``, ...).
        reference: the timm model's own state dict, classifier included.
        source: what the file is, for messages (argument and path).
        architecture: the model's name, for messages.

    Returns:
        The state dict under ``reference``'s keys.

    Raises:
        ValueError: a different number of entries, or the first pair that differs.

    Example:
        >>> import timm
        >>> from lt_transfer.resources import EFFICIENTNET_LITE0_IMAGENET, resolve_package_uri
        >>> state = read_state_dict(resolve_package_uri(EFFICIENTNET_LITE0_IMAGENET))
        >>> model = timm.create_model("efficientnet_lite0")
        >>> mapped = map_efficientnet_pytorch_keys(state, model.state_dict(), source="file",
        ...                                        architecture="timm/efficientnet_lite0")
        >>> list(mapped)[:2], model.load_state_dict(mapped)
        (['conv_stem.weight', 'bn1.weight'], <All keys matched successfully>)
    """
    file_keys, model_keys = list(state), list(reference)
    if len(file_keys) != len(model_keys):
        raise ValueError(
            f"{source} has {len(file_keys)} EfficientNet-PyTorch-style entries but {architecture!r} has "
            f"{len(model_keys)}: it was saved from another architecture (e.g. another EfficientNet size)."
        )
    file_sigs = _signatures(file_keys, _FILE_KEY, _FILE_KINDS)
    model_sigs = _signatures(model_keys, _TIMM_KEY, _TIMM_KINDS)
    for index, (file_key, model_key) in enumerate(zip(file_keys, model_keys, strict=True)):
        file_shape, model_shape = tuple(state[file_key].shape), tuple(reference[model_key].shape)
        if file_sigs[index] != model_sigs[index] or file_shape != model_shape:
            raise ValueError(
                f"{source} does not map onto {architecture!r}: entry {index} {file_key!r} {file_shape} "
                f"({file_sigs[index][1]}) faces {model_key!r} {model_shape} ({model_sigs[index][1]}). "
                "Pass the timm architecture the file was exported from."
            )
    return {model_key: state[file_key] for file_key, model_key in zip(file_keys, model_keys, strict=True)}


def _read_timm_state(model: nn.Module, resolved: ResolvedWeights, spec: str) -> dict[str, torch.Tensor]:
    """The file's state dict under the model's keys (EfficientNet-PyTorch files renamed)."""
    assert resolved.file is not None
    state = read_state_dict(resolved.file, resolved.label)
    if "_conv_stem.weight" in state:
        state = map_efficientnet_pytorch_keys(
            state, model.state_dict(), source=resolved.describe(), architecture=spec
        )
    return state


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier")
    if classifier is None:
        return ()
    return (classifier,) if isinstance(classifier, str) else tuple(classifier)


def _stem_pattern(matcher: Any) -> re.Pattern[str] | None:
    spec = matcher.get("stem") if isinstance(matcher, Mapping) else None
    if isinstance(spec, str):
        return re.compile(spec)
    if isinstance(spec, (list, tuple)) and spec:
        return re.compile("|".join(f"(?:{entry[0]})" for entry in spec))
    return None


def _assign_prefixes(
    module: nn.Module, path: str, owner: Mapping[str, int], prefixes: dict[int, list[str]]
) -> None:
    """Give each sub-tree whose parameters share one group its module path as a prefix."""
    ids = {owner[f"{path}{n}"] for n, _ in module.named_parameters() if f"{path}{n}" in owner}
    if not ids:
        return
    if path and len(ids) == 1:
        prefixes[ids.pop()].append(path[:-1])
        return
    for name, _ in module.named_parameters(recurse=False):
        if f"{path}{name}" in owner:
            prefixes[owner[f"{path}{name}"]].append(f"{path}{name}")
    for name, child in module.named_children():
        _assign_prefixes(child, f"{path}{name}.", owner, prefixes)


def timm_layer_groups(model: nn.Module, fine: bool = False) -> list[tuple[str, tuple[str, ...]]] | None:
    """Layer groups of a timm model from its own ``group_matcher()``, as ``Backbone`` groups.

    timm's matcher numbers every parameter's group (stem first, then stages/blocks, the
    final norm with the last block); each group becomes ``(name, module prefixes)``, the
    prefixes as coarse as possible (so that frozen groups can put whole modules in eval
    mode). The group of the stem is named ``"stem"``, the others after their first module
    (``"layer1"``, ``"blocks.3"``, ``"stages.2"``).

    Args:
        model: a timm model (classifier reset or not).
        fine: timm's fine grouping (``coarse=False``: e.g. one group per block instead of per
            stage) instead of the coarse one.

    Returns:
        The groups, or ``None`` when the model has no ``group_matcher`` (then
        :class:`~lt_transfer.backbones.base.Backbone` groups its children).

    Example:
        >>> import timm
        >>> [name for name, _ in timm_layer_groups(timm.create_model("resnet18", num_classes=0))]
        ['stem', 'layer1', 'layer2', 'layer3', 'layer4']
    """
    try:
        matcher = model.group_matcher(coarse=not fine)
    except (AttributeError, NotImplementedError):
        return None
    from timm.models import group_parameters

    owner: dict[str, int] = group_parameters(model, matcher, reverse=True)
    prefixes: dict[int, list[str]] = defaultdict(list)
    _assign_prefixes(model, "", owner, prefixes)
    stem = _stem_pattern(matcher)
    groups: list[tuple[str, tuple[str, ...]]] = []
    for group_id in sorted(prefixes):
        members = prefixes[group_id]
        params = [n for n, g in owner.items() if g == group_id]
        name = "stem" if stem is not None and all(stem.match(n) for n in params) else members[0]
        if name in {g for g, _ in groups}:
            name = f"{name}_{group_id}"
        groups.append((name, tuple(members)))
    return groups


def timm_preprocessing(
    name: str,
    weights: str | None = None,
    *,
    model: nn.Module | None = None,
    resolved: ResolvedWeights | None = None,
    **model_kwargs: Any,
) -> Preprocessing:
    """The preprocessing of a timm model from timm's data config (the tag's, if given).

    ``img_size`` and ``in_chans`` in ``model_kwargs`` override the input size and channels; a
    listed shipped weights file (:data:`~lt_transfer.backbones.preprocessing.
    SHIPPED_WEIGHTS_NORMALIZATION`) its normalisation.

    Args:
        name: a timm model name, optionally with a tag (``"vit_tiny_patch16_224.augreg_in21k"``).
        weights: as for :func:`build_timm_backbone` (only the file's name is used).
        model: the built model (its ``pretrained_cfg`` is used); ``None`` reads timm's
            registry without building the model.
        resolved: ``weights`` already resolved (the builder passes it).
        **model_kwargs: the model's keyword arguments.

    Example:
        >>> from lt_transfer.resources import EFFICIENTNET_LITE0_IMAGENET
        >>> p = timm_preprocessing("efficientnet_lite0", EFFICIENTNET_LITE0_IMAGENET)
        >>> p.image_size, p.resize_size, p.interpolation, p.mean
        (224, 256, 'bicubic', (0.5, 0.5, 0.5))
    """
    timm = _import_timm(f"resolve_preprocessing(name='timm/{name}')")
    from timm.data import resolve_data_config

    if model is not None:
        config = dict(model.pretrained_cfg)
    else:
        _check_model_name(timm, name, f"resolve_preprocessing(name='timm/{name}')")
        config = timm.get_pretrained_cfg(name).to_dict()
        resolved = resolved or _resolve(weights, f"timm/{name}", "resolve_preprocessing", "weights")
    preprocessing = Preprocessing.from_timm(resolve_data_config(pretrained_cfg=config))
    image_size = model_kwargs.get("img_size")
    if image_size is not None:
        side = image_size if isinstance(image_size, int) else int(image_size[0])
        preprocessing = preprocessing.resized(side)
    if model_kwargs.get("in_chans") in (1, 3):
        preprocessing = preprocessing.with_channels(model_kwargs["in_chans"])
    # by the file name (also while a checkpoint is loaded, when the file itself is not read)
    return with_weights_normalization(preprocessing, (resolved.file or resolved.value) if resolved else None)


def _create(
    name: str,
    weights: str | None,
    caller: str,
    name_argument: str,
    weights_argument: str,
    model_kwargs: Mapping[str, Any],
) -> tuple[nn.Module, ResolvedWeights, str]:
    spec = f"timm/{name}"
    label = f"{caller}({name_argument}={spec!r})"
    timm = _import_timm(label)
    _check_model_name(timm, name, label)
    if "pretrained" in model_kwargs:
        raise ValueError(f"{label}: pretrained= does not apply; pass weights='<state-dict file>'.")
    resolved = _resolve(weights, spec, caller, weights_argument)
    model = timm.create_model(name, pretrained=False, **model_kwargs)
    return model, resolved, spec


def build_timm_backbone(
    name: str, weights: str | None = None, *, fine_groups: bool = False, **model_kwargs: Any
) -> Backbone:
    """Build a timm model with its classifier reset, split into layer groups.

    ``build_backbone("timm/<name>", weights, **model_kwargs)`` lands here.

    Args:
        name: a :func:`timm.list_models` name, optionally with a pretrained tag
            (``"vit_tiny_patch16_224.augreg_in21k"``: the tag's class count and data config).
        weights: ``None`` (random init), a local state-dict file saved from the same timm
            architecture (with or without its classifier; a classifier of another width is
            fine, it is dropped), an EfficientNet-PyTorch-style file (renamed, see
            :func:`map_efficientnet_pytorch_keys`) or ``"pkg://<package>/<file>"``. Not a hub
            name: there is no download.
        fine_groups: timm's fine layer grouping instead of the coarse one.
        **model_kwargs: forwarded to ``timm.create_model`` (e.g. ``img_size=32`` for ViT,
            ``drop_path_rate=0.1``).

    Returns:
        The backbone: ``num_features`` from the model (``head_hidden_size`` when the model has
        a pre-logits layer), ``pretrained`` when ``weights`` is given, ``preprocessing`` from
        :func:`timm_preprocessing`.

    Raises:
        ImportError: timm is not installed.
        ValueError: an unknown model (close names listed), a weights name instead of a file,
            weights that do not fit.
        FileNotFoundError: a weights file that does not exist.

    Example:
        >>> backbone = build_timm_backbone("resnet18")
        >>> backbone.num_features, [g.name for g in backbone.layer_groups()][:3]
        (512, ['stem', 'layer1', 'layer2'])
        >>> backbone.preprocessing.interpolation
        'bicubic'
    """
    model, resolved, spec = _create(name, weights, "build_backbone", "name", "weights", model_kwargs)
    state = _read_timm_state(model, resolved, spec) if resolved.file is not None else None
    classifier = _classifier_prefixes(model)
    model.reset_classifier(0)
    if state is not None:
        state = {k: v for k, v in state.items() if not matches_prefix(k, classifier)}
        check_state_dict(model, state, source=resolved.describe(), architecture=spec)
        model.load_state_dict(state)
    width = getattr(model, "head_hidden_size", None) or model.num_features
    preprocessing = timm_preprocessing(name, model=model, resolved=resolved, **model_kwargs)
    return Backbone(
        model,
        int(width),
        timm_layer_groups(model, fine=fine_groups),
        name=spec,
        pretrained=resolved.pretrained,
        preprocessing=preprocessing,
    )


def load_timm_classifier(
    name: str,
    weights: str | None = None,
    *,
    caller: str = "load_timm_classifier",
    name_argument: str = "name",
    weights_argument: str = "weights",
    **model_kwargs: Any,
) -> nn.Module:
    """Build a whole timm classifier, head included (e.g. a distillation teacher).

    Args:
        name: a timm model name, optionally as the spec ``"timm/<name>"``.
        weights: ``None``, a state-dict file of the *full* classifier (EfficientNet-PyTorch
            style included) or ``"pkg://<package>/<file>"``.
        caller: the public callable named in messages.
        name_argument: the argument that named the model, for messages.
        weights_argument: the argument that gave ``weights``, for messages.
        **model_kwargs: forwarded to ``timm.create_model``.

    Raises:
        ImportError: timm is not installed.
        ValueError: an unknown model, a weights name instead of a file, weights that do not fit.
        FileNotFoundError: a weights file that does not exist.

    Example:
        >>> from lt_transfer.resources import EFFICIENTNET_LITE0_IMAGENET
        >>> model = load_timm_classifier("timm/efficientnet_lite0", EFFICIENTNET_LITE0_IMAGENET)
        >>> model.classifier.out_features
        1000
    """
    model_name = name.removeprefix("timm/")
    model, resolved, spec = _create(
        model_name, weights, caller, name_argument, weights_argument, model_kwargs
    )
    if resolved.file is not None:
        state = _read_timm_state(model, resolved, spec)
        check_state_dict(model, state, source=resolved.describe(), architecture=f"{spec} with its classifier")
        model.load_state_dict(state)
    return model
