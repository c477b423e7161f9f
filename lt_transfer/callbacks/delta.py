"""DELTA: keep the fine-tuned feature maps close to the pretrained network's, as a callback.

Li et al., "DELTA: DEep Learning Transfer using Feature Map with Attention for Convolutional
Networks" (ICLR 2019); the penalty and the channel attention are those of
:mod:`lt_transfer.losses.delta`: for each regularised layer :math:`l`,

.. math::

    \\Omega(w) = \\alpha \\sum_l \\frac1N \\sum_{i=1}^{N} \\sum_{j} a^l_j\\,
        \\bigl\\lVert FM^l_j(x_i; w) - FM^l_j(x_i; w^0) \\bigr\\rVert_2^2 .

**The pretrained network** is a frozen copy of the backbone taken at the start of the first
``fit`` and kept in the callback (not in the LightningModule, so DDP never broadcasts it and
checkpoints of the module do not grow); its weights and BatchNorm statistics are in the
callback's ``state_dict``, so a resumed run compares with the same network. On every training
forward of the backbone a forward pre-hook runs the copy on the same input (without gradient,
under the same autocast), and forward hooks on the named layers of both networks give
:math:`FM(x; w)` and :math:`FM(x; w^0)`. Each BatchNorm of the copy uses batch statistics
exactly when its counterpart in the model does (so at the first step, :math:`w = w^0`, the
penalty is 0) and never updates its running statistics; dropout is off in the copy.

**How the penalty enters the loss**: its gradient with respect to each layer's output is
added during backward (see :mod:`lt_transfer.callbacks._regularization`), which is exactly the
gradient of ``loss + Ω`` for any module, under DDP and AMP. The penalty applies to every
training forward of the backbone (all of them when a module calls it twice per step).

**Channel attention** :math:`a^l` is computed once, when training starts, on the first
``attention_batches`` training batches (the training data order is not disturbed) and kept in
the ``state_dict``: a linear probe (logistic regression, L-BFGS) is fitted on the pretrained
copy's pooled output, and :func:`~lt_transfer.losses.delta_channel_attention` measures the
probe's loss increase when each channel of the layer is zeroed, with the rest of the
pretrained network after the layer (a global average pool when the layer feeds the output
through pooling only, else one forward of the copy per channel with the layer's output
replaced). Under DDP rank 0's attention is broadcast. ``attention=False`` uses uniform
weights :math:`1/C` (a plain feature-map distance). The paper also puts plain L2 on the head;
combine with :class:`~lt_transfer.callbacks.L2SP` (``alpha=0``) or weight decay for that.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from typing_extensions import override

from lt_transfer.batches import Batch, concat_inputs, input_to, split_batch, split_domain_batch
from lt_transfer.callbacks._regularization import ActivationPenalty, check_strategy, find_module
from lt_transfer.losses.delta import delta_channel_attention, delta_loss

__all__ = ["DELTA"]

_NEEDS = (
    "DELTA needs the feature maps of a convolutional layer, (N, C, H, W) or (N, C, L) with the "
    "channels in dim 1, e.g. a stage of a CNN backbone such as layers=['model.features.14'] for "
    "MobileNetV2 or ['model.layer3'] for a ResNet; pooled (N, D) vectors and transformer layers "
    "(token states) do not qualify: use L2SP or BSS there"
)
#: Packages whose layers are transformer blocks: their (N, L, D) outputs are tokens, not channel maps.
_TRANSFORMER_MODULES = (
    "transformers.",
    "torchvision.models.vision_transformer",
    "timm.models.vision_transformer",
)


def _is_transformer_layer(module: nn.Module) -> bool:
    return any(type(sub).__module__.startswith(_TRANSFORMER_MODULES) for sub in module.modules())


def _default_layer(backbone: nn.Module) -> str:
    """The output module of the backbone's last layer group (a Backbone), else its last child."""
    names = {id(module): name for name, module in backbone.named_modules()}
    layer_groups = getattr(backbone, "layer_groups", None)
    if callable(layer_groups):
        groups = layer_groups()
        if groups and groups[-1].modules and id(groups[-1].modules[-1]) in names:
            return names[id(groups[-1].modules[-1])]
    children = [name for name, child in backbone.named_children() if any(True for _ in child.parameters())]
    if not children:
        raise ValueError(
            f"DELTA(layers=None): cannot tell which layer of {type(backbone).__name__} to regularise; "
            "name them, e.g. layers=['features.14']."
        )
    return children[-1]


def _labelled(batch: Any) -> Batch:
    if isinstance(batch, dict) and "source" in batch and "target" in batch:
        return split_domain_batch(batch, "DELTA")[0]
    return split_batch(batch, "DELTA")


def _fit_probe(features: torch.Tensor, labels: torch.Tensor) -> nn.Linear:
    """Multinomial logistic regression (L-BFGS, small L2, zero start: deterministic)."""
    probe = nn.Linear(features.shape[1], max(int(labels.max()) + 1, 2)).to(features.device)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(features), labels) + 1e-3 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return probe.requires_grad_(False)


class DELTA(ActivationPenalty):
    """Feature-map regulariser toward the pretrained network, weighted by channel attention.

    See the module docstring for the pretrained copy, how the penalty enters the loss and how
    the attention is computed.

    Args:
        alpha: strength :math:`\\alpha` of the penalty.
        layers: attribute paths of the regularised layers *inside the backbone* (e.g.
            ``["model.features.14", "model.features.18"]``); ``None``: the output module of the
            backbone's last layer group (its last child holding parameters for a plain module).
        backbone: attribute path of the pretrained part on the LightningModule; its forward
            takes the batch input (as :class:`~lt_transfer.TransferClassifier`'s does) and, for
            the attention, returns pooled ``(N, D)`` features.
        attention: compute DELTA's channel attention (``False``: uniform weights).
        attention_batches: training batches used for the attention (labelled).

    Raises:
        ValueError: bad arguments; at ``setup``: an unknown backbone or layer path, a sharding
            strategy; at training start or the first step: a layer whose output is not a
            feature map (the message says what DELTA needs), unlabelled training batches with
            ``attention=True``, a resumed run whose checkpoint has no DELTA state.

    Example:
        >>> import lightning.pytorch as pl
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from lt_transfer import Backbone, TransferClassifier
        >>> trunk = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> model = TransferClassifier(Backbone(trunk, 4, pretrained=True), num_classes=2)
        >>> data = DataLoader(TensorDataset(torch.randn(8, 3, 6, 6), torch.tensor([0, 1] * 4)), batch_size=4)
        >>> delta = DELTA(alpha=0.1, layers=["model.2"])
        >>> trainer = pl.Trainer(max_steps=2, callbacks=[delta], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False)
        >>> trainer.fit(model, data)
        >>> weights = delta.state_dict()["channel_weights"]["model.2"]
        >>> tuple(weights.shape), round(float(weights.sum()), 4)
        ((4,), 1.0)
    """

    def __init__(
        self,
        alpha: float = 0.01,
        layers: list[str] | None = None,
        backbone: str = "backbone",
        attention: bool = True,
        attention_batches: int = 4,
    ) -> None:
        super().__init__(backbone, "delta")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
            raise ValueError(f"DELTA(alpha={alpha!r}) must be a number >= 0.")
        if layers is not None and (
            isinstance(layers, str) or not layers or not all(isinstance(n, str) for n in layers)
        ):
            raise ValueError(
                f"DELTA(layers={layers!r}) must be a non-empty list of layer paths inside the backbone, "
                "e.g. ['model.features.14'], or None (the backbone's last layer group)."
            )
        if (
            isinstance(attention_batches, bool)
            or not isinstance(attention_batches, int)
            or attention_batches < 1
        ):
            raise ValueError(f"DELTA(attention_batches={attention_batches!r}) must be an int >= 1.")
        self.alpha = float(alpha)
        self.layers = list(layers) if layers is not None else None
        self.attention = bool(attention)
        self.attention_batches = attention_batches
        #: the pretrained copy's state (weights and BatchNorm statistics); ``None`` before fit.
        self.snapshot: dict[str, torch.Tensor] | None = None
        #: ``{layer: (C,) attention}``; ``None`` until computed (or with ``attention=False``).
        self.channel_weights: dict[str, torch.Tensor] | None = None
        self._layers: list[str] = []
        self._copy: nn.Module | None = None
        self._bn_pairs: list[tuple[nn.Module, nn.Module]] = []
        self._reference: dict[str, Any] = {}
        self._capture = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(backbone=self.backbone, layers=self.layers)

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        check_strategy(trainer, "DELTA")
        backbone = find_module(pl_module, self.backbone, "backbone", "DELTA")
        self._layers = self.layers if self.layers is not None else [_default_layer(backbone)]
        for name in self._layers:
            try:
                layer = backbone.get_submodule(name)
            except AttributeError as error:
                known = [n for n, _ in backbone.named_modules() if n][:12]
                raise ValueError(
                    f"DELTA(layers={self._layers!r}): the backbone {self.backbone!r} has no layer {name!r}; "
                    f"paths are relative to the backbone, e.g. {known}."
                ) from error
            if _is_transformer_layer(layer):
                raise ValueError(
                    f"DELTA(layers=[{name!r}, ...]): {type(layer).__name__} is a transformer; {_NEEDS}."
                )

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        backbone = find_module(pl_module, self.backbone, "backbone", "DELTA")
        if self.snapshot is None and trainer.ckpt_path is not None:
            raise ValueError(
                f"DELTA: this run resumes from {trainer.ckpt_path!r}, which holds no DELTA state, so the "
                "current backbone is not the pretrained network. Resume from a checkpoint written with "
                "the same DELTA callback, or start a new run."
            )
        self._copy = self._frozen_copy(backbone)
        self.remove_hooks()
        self.handles.append(backbone.register_forward_pre_hook(self._run_copy, with_kwargs=True))
        for name in self._layers:
            model_layer, copy_layer = backbone.get_submodule(name), self._copy.get_submodule(name)
            self.handles.append(model_layer.register_forward_hook(self._penalise(name)))
            self.handles.append(copy_layer.register_forward_hook(self._keep(name)))

    def _frozen_copy(self, backbone: nn.Module) -> nn.Module:
        frozen = copy.deepcopy(backbone)
        for module in frozen.modules():  # other callbacks' hooks must not run on the copy
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()
        frozen.requires_grad_(False).eval()
        copies = dict(frozen.named_modules())
        self._bn_pairs = []
        for name, module in backbone.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                twin = copies[name]
                twin.momentum = 0.0  # batch statistics in train mode, running statistics never updated
                twin.num_batches_tracked = None
                self._bn_pairs.append((module, twin))
        if self.snapshot is None:
            self.snapshot = frozen.state_dict()
        else:
            # a plain dict has no state-dict version, so BatchNorm asks for num_batches_tracked (unused)
            result = frozen.load_state_dict(self.snapshot, strict=False)
            unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
            if result.missing_keys or unexpected:
                raise ValueError(
                    f"DELTA: the checkpoint's pretrained network does not fit the backbone {self.backbone!r} "
                    f"(missing {result.missing_keys[:3]}, unexpected {unexpected[:3]}); resume with the same "
                    "model."
                )
            self.snapshot = frozen.state_dict()
        return frozen

    def _mirror_modes(self) -> None:
        for module, twin in self._bn_pairs:
            twin.training = module.training

    def _run_copy(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._reference = {}
        if not (self.active and torch.is_grad_enabled() and self._copy is not None):
            return
        if not any(p.requires_grad for p in module.parameters()):
            return  # the whole backbone is frozen: no layer output can move
        self._mirror_modes()
        self._capture = True
        try:
            with torch.no_grad():
                self._copy(*args, **kwargs)
        finally:
            self._capture = False

    def _keep(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if self._capture:
                self._reference[name] = (
                    output.detach().clone() if isinstance(output, torch.Tensor) else output
                )

        return hook

    def _penalise(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if name not in self._reference:
                return
            reference = self._reference.pop(name)
            self._check_maps(name, output)
            weights = None if self.channel_weights is None else self.channel_weights[name]
            self.add_penalty(output, lambda maps: self.alpha * delta_loss(maps, reference, weights))

        return hook

    def _check_maps(self, name: str, output: Any) -> None:
        if not isinstance(output, torch.Tensor) or output.ndim < 3:
            shape = (
                f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
            )
            raise ValueError(f"DELTA(layers=[{name!r}, ...]): the layer outputs a {shape}; {_NEEDS}.")

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.attention or self.channel_weights is not None:
            return
        if trainer.ckpt_path is not None:
            raise ValueError(
                f"DELTA: the checkpoint {trainer.ckpt_path!r} has no channel attention; resume with the "
                "callback arguments of the run that wrote it."
            )
        with torch.random.fork_rng(devices=[]):  # the training data order and init stay as without DELTA
            weights = self._compute_attention(trainer, pl_module)
        self.channel_weights = {
            name: trainer.strategy.broadcast(value, src=0) for name, value in weights.items()
        }

    def _attention_data(self, trainer: Trainer, pl_module: LightningModule) -> tuple[Any, torch.Tensor]:
        loader = trainer.train_dataloader
        if isinstance(loader, dict):
            loader = loader.get("source", next(iter(loader.values())))
        elif isinstance(loader, (list, tuple)):
            loader = loader[0]
        inputs, labels = None, []
        for index, batch in enumerate(loader):
            if index >= self.attention_batches:
                break
            parsed = _labelled(batch)
            if parsed.y is None:
                raise ValueError(
                    "DELTA(attention=True) fits a probe on labelled training batches to weigh the "
                    "channels, but the training batches have no labels; pass attention=False "
                    "(uniform weights)."
                )
            x = input_to(parsed.x, pl_module.device)
            inputs = x if inputs is None else concat_inputs(inputs, x)
            labels.append(parsed.y.to(pl_module.device))
        if inputs is None:
            raise ValueError("DELTA(attention=True): the training loader yields no batch.")
        return inputs, torch.cat(labels)

    def _compute_attention(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, torch.Tensor]:
        assert self._copy is not None
        inputs, labels = self._attention_data(trainer, pl_module)
        self._mirror_modes()
        self._reference = {}
        self._capture = True
        try:
            with torch.no_grad():
                features = self._copy(inputs)
        finally:
            self._capture = False
        maps_by_layer, self._reference = self._reference, {}
        for name in self._layers:
            self._check_maps(name, maps_by_layer.get(name))
        if not isinstance(features, torch.Tensor) or features.ndim != 2:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(
                f"DELTA(attention=True) fits a linear probe on the backbone's pooled (N, D) output, but "
                f"{self.backbone!r} returns {shape}; pass attention=False."
            )
        probe = _fit_probe(features.float(), labels)
        weights = {}
        with torch.no_grad():
            for name in self._layers:
                maps = maps_by_layer[name].float()
                rest = self._rest_after(name, maps, features, inputs)
                weights[name] = delta_channel_attention(maps, labels, lambda m, rest=rest: probe(rest(m)))
        return weights

    def _rest_after(self, name: str, maps: torch.Tensor, features: torch.Tensor, inputs: Any) -> Any:
        """The pretrained network from layer ``name`` to the backbone's output, as a function of the maps."""
        pooled = maps.flatten(2).mean(-1)
        if pooled.shape == features.shape and torch.allclose(pooled, features.float(), rtol=1e-4, atol=1e-5):
            return lambda m: m.flatten(2).mean(-1)  # the layer feeds the output through pooling only
        assert self._copy is not None
        layer = self._copy.get_submodule(name)

        def rest(replacement: torch.Tensor) -> torch.Tensor:
            handle = layer.register_forward_hook(lambda module, args, output: replacement.to(output.dtype))
            try:
                return self._copy(inputs).float()
            finally:
                handle.remove()

        return rest

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        if self.snapshot is None:
            return {}
        return {
            "snapshot": dict(self.snapshot),
            "channel_weights": self.channel_weights,
            "layers": self._layers,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "snapshot" not in state_dict:
            return
        self.snapshot = dict(state_dict["snapshot"])
        weights = state_dict.get("channel_weights")
        self.channel_weights = None if weights is None else dict(weights)
        if self.layers is not None and list(state_dict.get("layers", self.layers)) != list(self.layers):
            raise ValueError(
                f"DELTA(layers={self.layers!r}) but the checkpoint regularised {state_dict['layers']!r}; "
                "resume with the same layers."
            )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_copy"] = None  # rebuilt at fit start (ddp_spawn pickles callbacks)
        state["_bn_pairs"] = []
        state["_reference"] = {}
        return state
