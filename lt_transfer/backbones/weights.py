"""The one weight resolver: what a ``weights=`` value names, how its file is read and checked.

Every loader of pretrained weights in lt_transfer goes through this file (torchvision
backbones and torchvision teachers alike), so a value means the same everywhere:

* ``None``: no weights (random initialisation);
* a torchvision weights name: ``"DEFAULT"``, ``"IMAGENET1K_V1"`` or the qualified
  ``"ResNet18_Weights.IMAGENET1K_V1"``; loaded by torchvision itself (download or torch hub
  cache);
* a local state-dict file, or ``"pkg://<package>/<file>"`` for a file shipped inside an
  installed package. A value names a file when it exists, contains a path separator, starts
  with ``pkg://`` or ends with one of :data:`WEIGHT_FILE_SUFFIXES`.

Inside :func:`architecture_only` (entered while a checkpoint is loaded, which holds every
weight itself) a ``weights=`` value is not read at all: backbones are built with their
architecture only and keep ``pretrained=True``, so loading a checkpoint never needs the
original weight file and never downloads.

Files are read with ``torch.load(..., weights_only=True)`` (no pickled code runs), or with
the ``safetensors`` package for ``.safetensors`` files. A ``{"state_dict": {...}}`` wrapper is
unwrapped. Before loading, the keys and shapes are checked against the model, and a
mismatch is an error naming the argument, the file and the architecture.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lt_transfer._load_errors import describe_load_failure
from lt_transfer.backbones.base import matches_prefix
from lt_transfer.resources import PACKAGE_SCHEME, resolve_package_uri

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

__all__ = [
    "WEIGHT_FILE_SUFFIXES",
    "architecture_only",
    "architecture_only_active",
    "ResolvedWeights",
    "check_state_dict",
    "load_weights_file",
    "names_a_file",
    "read_state_dict",
    "resolve_weights",
    "stored_model_config",
]

#: File endings that make a ``weights=`` value a file even when it does not exist yet
#: (so a typo in a path is "no such file", not "no such weights name").
WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")


_ARCHITECTURE_ONLY: ContextVar[bool] = ContextVar("lt_transfer_architecture_only", default=False)
_MODEL_CONFIGS: ContextVar[Mapping[str, Mapping[str, Any]] | None] = ContextVar(
    "lt_transfer_model_configs", default=None
)


@contextmanager
def architecture_only(
    active: bool = True, model_configs: Mapping[str, Mapping[str, Any]] | None = None
) -> Iterator[None]:
    """Build backbones without reading any pretrained weights inside this block.

    Used while a checkpoint is loaded: the checkpoint holds every weight, so the original file
    (or a ``"DEFAULT"`` download) is never needed. Backbones built here keep ``pretrained``
    from their ``weights=`` value, so defaults that depend on it (the backbone learning-rate
    scale) are the ones of the run that wrote the checkpoint. ``active=False`` re-enables
    weight loading inside an outer block (a distillation teacher that the checkpoint does not
    hold). ``model_configs`` maps a model reference (e.g. a Hugging Face folder) to the model
    config a checkpoint stored, so that not even the config file is read.

    Example:
        >>> from lt_transfer.backbones import build_backbone
        >>> with architecture_only():
        ...     backbone = build_backbone("torchvision/resnet18", weights="/no/such/file.pth")
        >>> backbone.pretrained
        True
    """
    token = _ARCHITECTURE_ONLY.set(active)
    configs = _MODEL_CONFIGS.set(dict(model_configs or {}) if active else {})
    try:
        yield
    finally:
        _MODEL_CONFIGS.reset(configs)
        _ARCHITECTURE_ONLY.reset(token)


def stored_model_config(reference: str) -> Mapping[str, Any] | None:
    """The model config a checkpoint stored for ``reference`` inside :func:`architecture_only`.

    Example:
        >>> with architecture_only(model_configs={"hf/x": {"model_type": "bert"}}):
        ...     stored_model_config("hf/x")
        {'model_type': 'bert'}
    """
    return (_MODEL_CONFIGS.get() or {}).get(reference)


def architecture_only_active() -> bool:
    """Whether backbones are being built without their pretrained weights (see above).

    Example:
        >>> architecture_only_active()
        False
    """
    return _ARCHITECTURE_ONLY.get()


@dataclass(frozen=True)
class ResolvedWeights:
    """What a ``weights=`` value names (built by :func:`resolve_weights`).

    Attributes:
        value: the value as given; ``None`` means no weights.
        label: the call and argument for messages, e.g. ``"build_backbone(weights='a.pth')"``.
        file: the state-dict file, when the value names a file.
        enum: the torchvision weights enum member, when the value is a weights name.

    Example:
        >>> from lt_transfer.resources import MOBILENET_V2_IMAGENET
        >>> resolved = resolve_weights(MOBILENET_V2_IMAGENET)
        >>> resolved.file.name, resolved.enum, resolved.pretrained
        ('mobilenet_v2-b0353104.pth', None, True)
    """

    value: str | None
    label: str
    file: Path | None = None
    enum: WeightsEnum | None = None

    @property
    def pretrained(self) -> bool:
        """Whether the value names any weights (``False`` only for ``None``)."""
        return self.value is not None

    def describe(self) -> str:
        """The label, plus the resolved file when the value does not spell it out (``pkg://``).

        Example:
            >>> resolve_weights("pkg://mnist/data/mnist.pkl.gz", caller="f").describe()  # doctest: +ELLIPSIS
            "f(weights='pkg://mnist/data/mnist.pkl.gz') (file .../mnist/data/mnist.pkl.gz)"
        """
        if self.file is not None and self.value != str(self.file):
            return f"{self.label} (file {self.file})"
        return self.label


def resolve_weights(
    weights: str | os.PathLike[str] | None,
    *,
    torchvision_model: str | None = None,
    caller: str = "build_backbone",
    argument: str = "weights",
) -> ResolvedWeights:
    """Turn a ``weights=`` value into what to load (see the rules at the top of this file).

    Args:
        weights: ``None``, a torchvision weights name, a local state-dict file or
            ``"pkg://<package>/<file>"``.
        torchvision_model: the torchvision model name whose weights enum names are looked up;
            ``None`` accepts files only.
        caller: the public callable named in messages.
        argument: the argument named in messages.

    Returns:
        The resolved weights: nothing, a checked file path or a torchvision enum member.

    Raises:
        FileNotFoundError: a file value that does not exist (without ``torchvision_model``
            every value is a file), or a ``pkg://`` package that is not installed.
        ValueError: a weights name that ``torchvision_model`` does not have.
        TypeError: a value that is not a string, a path or ``None``.

    Example:
        >>> resolve_weights(None).pretrained
        False
        >>> resolve_weights("DEFAULT", torchvision_model="resnet18").enum
        ResNet18_Weights.IMAGENET1K_V1
        >>> resolve_weights("IMAGENET22K", torchvision_model="resnet18")
        Traceback (most recent call last):
        ...
        ValueError: build_backbone(weights='IMAGENET22K'): torchvision/resnet18 has no such weights. \
Choose one of ['IMAGENET1K_V1', 'DEFAULT'], a local state-dict file, 'pkg://<package>/<file>', or None.
    """
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    label = f"{caller}({argument}={weights!r})"
    if weights is None:
        return ResolvedWeights(None, label)
    if architecture_only_active():  # a checkpoint supplies the weights: read nothing
        return ResolvedWeights(weights if isinstance(weights, str) else str(weights), label)
    if not isinstance(weights, str):
        raise TypeError(
            f"{label}: expected None, a weights name, a file path or 'pkg://<package>/<file>', "
            f"got {type(weights).__name__}."
        )
    if names_a_file(weights) or torchvision_model is None:
        return ResolvedWeights(weights, label, file=_existing_file(weights, label, torchvision_model))
    return ResolvedWeights(weights, label, enum=_torchvision_enum(torchvision_model, weights, label))


def names_a_file(weights: str) -> bool:
    """Whether a ``weights=`` string names a file rather than a weights name (rules above).

    Example:
        >>> names_a_file("DEFAULT"), names_a_file("ckpt/model.pth"), names_a_file("pkg://pkg/w.pt")
        (False, True, True)
    """
    return (
        weights.startswith(PACKAGE_SCHEME)
        or os.sep in weights
        or "/" in weights
        or weights.endswith(WEIGHT_FILE_SUFFIXES)
        or os.path.exists(weights)
    )


def _existing_file(weights: str, label: str, torchvision_model: str | None) -> Path:
    if weights.startswith(PACKAGE_SCHEME):
        try:
            path = resolve_package_uri(weights)
        except (FileNotFoundError, ValueError) as error:
            raise type(error)(f"{label}: {error}") from error
    else:
        path = Path(weights).expanduser()
    if not path.is_file():
        names = "a torchvision weights name such as 'DEFAULT', " if torchvision_model else ""
        raise FileNotFoundError(
            f"{label}: no such file. Pass an existing state-dict file, {names}"
            "'pkg://<package>/<file>', or None."
        )
    return path


def _torchvision_enum(model: str, name: str, label: str) -> WeightsEnum:
    from torchvision import models as tvm

    enum_cls = tvm.get_model_weights(model)
    member = name.removeprefix(f"{enum_cls.__name__}.")
    choices = list(enum_cls.__members__)
    if member not in choices:
        raise ValueError(
            f"{label}: torchvision/{model} has no such weights. Choose one of {choices}, "
            "a local state-dict file, 'pkg://<package>/<file>', or None."
        )
    return enum_cls[member]


def read_state_dict(path: str | os.PathLike[str], label: str = "weights") -> dict[str, Any]:
    """Read a state dict from a file, safely.

    ``.safetensors`` files are read with the ``safetensors`` package; any other file with
    ``torch.load(..., weights_only=True)``. A ``{"state_dict": {...}}`` wrapper (a Lightning
    checkpoint, many training scripts) is unwrapped.

    Args:
        path: the file.
        label: the call and argument named in messages.

    Raises:
        ValueError: the file cannot be read or holds no mapping of names to tensors.
        ImportError: a ``.safetensors`` file without the ``safetensors`` package.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "wrapped.pt"
        >>> torch.save({"state_dict": {"weight": torch.ones(2)}, "epoch": 3}, path)
        >>> read_state_dict(path)
        {'weight': tensor([1., 1.])}
    """
    path = Path(path)
    reader = "torch.load(weights_only=True)"
    load_file = None
    if path.suffix == ".safetensors":
        reader = "safetensors"
        try:
            from safetensors.torch import load_file
        except ImportError as error:
            raise ImportError(
                f"{label}: reading {path} needs the safetensors package (pip install safetensors), "
                "or save the weights with torch.save as a .pth file."
            ) from error
    try:
        if load_file is not None:
            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused_object, reason = describe_load_failure(error)
        if refused_object:
            raise ValueError(
                f"{label}: {path} holds Python objects that safe loading ({reader}) refuses ({reason}). "
                "Weight files are read safely only: load the object yourself if you trust the file and "
                "save its state_dict() with torch.save (or as .safetensors)."
            ) from error
        raise ValueError(
            f"{label}: could not read a state dict from {path}: the file is corrupt or not a torch file "
            f"({reason}); save it again or use another copy."
        ) from error
    except Exception as error:  # noqa: BLE001 - re-raised with the argument and the file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{label}: could not read a state dict from {path} with {reader}: the file is corrupt, "
            f"truncated or not a weight file ({type(error).__name__}: {first_line})."
        ) from error
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{label}: {path} holds a {type(state).__name__}, not a state dict (a mapping of "
            "parameter names to tensors); save model.state_dict()."
        )
    return dict(state)


def check_state_dict(
    model: nn.Module,
    state: Mapping[str, Any],
    *,
    source: str,
    architecture: str,
    optional_prefixes: Sequence[str] = (),
) -> list[str]:
    """Check a state dict's keys and shapes against ``model`` before loading it.

    Args:
        model: the model the state dict is for.
        state: the state dict.
        source: what the state dict came from (argument and file), named in messages.
        architecture: the model's name, named in messages (e.g. ``"torchvision/resnet18"``).
        optional_prefixes: keys of the model under these prefixes may be missing (a
            backbone's classification head, which is removed anyway).

    Returns:
        The model's keys that the state dict leaves out (all under ``optional_prefixes``).

    Raises:
        ValueError: missing keys (outside ``optional_prefixes``), unexpected keys, or tensors
            whose shapes differ.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
        >>> check_state_dict(net, {"0.weight": net[0].weight, "0.bias": net[0].bias},
        ...                  source="weights='x.pt'", architecture="mlp", optional_prefixes=["1"])
        ['1.weight', '1.bias']
        >>> check_state_dict(net, {"0.weight": net[0].weight}, source="weights='x.pt'", architecture="mlp")
        Traceback (most recent call last):
        ...
        ValueError: weights='x.pt' does not match the architecture 'mlp': 3 missing keys \
(e.g. ['0.bias', '1.weight', '1.bias']). Pass a state dict saved from the same architecture, \
or the architecture the file was saved from.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    optional = [k for k in missing if matches_prefix(k, optional_prefixes)]
    if unexpected or len(missing) != len(optional):
        required = [k for k in missing if k not in optional]
        problems = [
            f"{len(keys)} {kind} keys (e.g. {keys[:3]})"
            for kind, keys in (("missing", required), ("unexpected", unexpected))
            if keys
        ]
        left_out = f" (keys under {list(optional_prefixes)} may be left out)" if optional_prefixes else ""
        raise ValueError(
            f"{source} does not match the architecture {architecture!r}: {', '.join(problems)}. "
            f"Pass a state dict saved from the same architecture{left_out}, or the architecture "
            "the file was saved from."
        )
    shape_errors = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)
    ]
    if shape_errors:
        raise ValueError(
            f"{source} does not match the architecture {architecture!r}: shape mismatch in "
            f"{len(shape_errors)} tensors, e.g. {shape_errors[:2]}."
        )
    return optional


def load_weights_file(
    model: nn.Module,
    weights: ResolvedWeights,
    *,
    architecture: str,
    optional_prefixes: Sequence[str] = (),
) -> None:
    """Read ``weights.file``, check it against ``model`` and load it (in place).

    Args:
        model: the model to load into.
        weights: resolved weights naming a file (see :func:`resolve_weights`).
        architecture: the model's name for messages.
        optional_prefixes: see :func:`check_state_dict`.

    Raises:
        ValueError: ``weights`` names no file, or the file does not fit (see
            :func:`read_state_dict`, :func:`check_state_dict`).

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from torch import nn
        >>> path = Path(tempfile.mkdtemp()) / "linear.pt"
        >>> torch.save(nn.Linear(2, 2).state_dict(), path)
        >>> model = nn.Linear(2, 2)
        >>> load_weights_file(model, resolve_weights(path), architecture="linear")
        >>> torch.equal(model.weight, torch.load(path)["weight"])
        True
    """
    if weights.file is None:
        raise ValueError(f"{weights.label}: names no file to load; resolve a file value.")
    state = read_state_dict(weights.file, weights.label)
    source = weights.describe()
    optional = check_state_dict(
        model, state, source=source, architecture=architecture, optional_prefixes=optional_prefixes
    )
    model.load_state_dict(state, strict=not optional)
