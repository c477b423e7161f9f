"""L2SP: fine-tune with weight decay toward the pretrained weights, as a callback for any module.

Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional
Networks" (ICML 2018); the penalty and its arguments are those of
:mod:`lt_transfer.losses.l2sp`:

.. math::

    \\Omega(w) = \\frac{\\alpha}{2} \\lVert w_S - w^0_S \\rVert_2^2
        + \\frac{\\beta}{2} \\lVert w_{\\bar S} \\rVert_2^2 ,

:math:`S` the backbone (pulled toward its pretrained values :math:`w^0_S`), :math:`\\bar S` the
new head (plain L2).

**How the penalty enters the loss.** Its gradient is exact in closed form,
:math:`\\alpha (w - w^0)` on the backbone and :math:`\\beta w` on the head, so the callback adds
it to ``param.grad`` in ``on_before_optimizer_step``. In Lightning that hook runs after the
gradients are complete (accumulated over ``accumulate_grad_batches``, all-reduced by DDP,
unscaled by the ``GradScaler`` under ``"16-mixed"``) and before gradient clipping and the
optimizer step, so the step is exactly the step on ``loss + Ω``: the penalty is counted once
per optimizer step, clipping sees it, DDP ranks add the same term to the same weights. It
needs no forward pass and no change to the module. Under 16-mixed an optimizer that unscales
inside its own ``step`` (``fused=True``) is refused: its gradients are still scaled when the
hook runs. With several optimizers, each step adds the penalty of the parameters it updates.

The snapshot :math:`w^0` is taken at the start of the first ``fit`` (before any training
step) over all backbone parameters, frozen ones included, and kept in the callback's
``state_dict``, so a resumed run uses the same snapshot bit for bit. Frozen parameters
(``requires_grad=False``, e.g. groups that :class:`~lt_transfer.callbacks.ProgressiveUnfreezing`
has not unfrozen yet) carry no penalty; once unfrozen they are pulled toward their pretrained
values. Note that AdamW's own ``weight_decay`` still pulls toward zero: set it to 0 to get L2-SP
alone (the paper's setting).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.optim import Optimizer
from typing_extensions import override

from lt_transfer.callbacks._regularization import SnapshotState, check_strategy, find_module
from lt_transfer.losses.l2sp import parameter_snapshot

__all__ = ["L2SP"]


def _check_strength(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"L2SP({name}={value!r}) must be a number >= 0 (0 switches that term off).")
    return float(value)


class L2SP(SnapshotState):
    """Pull the backbone toward its pretrained weights and the head toward zero (L2-SP).

    See the module docstring for how the penalty enters the loss (its exact gradient is added
    before each optimizer step) and how the snapshot is kept.

    Args:
        alpha: strength of the pull toward the pretrained backbone weights.
        beta: strength of the plain L2 on the head (0: none).
        backbone: attribute path of the pretrained part on the LightningModule.
        head: attribute path of the new part that gets plain L2 (``None``: none; then ``beta``
            must be 0). Parameters of the backbone are never counted as head (identity).
            Parameters in neither get no penalty.

    Raises:
        ValueError: negative strengths (in ``__init__``); at ``setup``: an unknown ``backbone`` or
            ``head`` path, ``beta > 0`` without a head, a sharding strategy; at fit start: a
            run resumed from a checkpoint that has no L2SP snapshot, a snapshot
            that does not match the backbone's parameter names or shapes, or a fused optimizer
            under 16-mixed (at its first step).

    Warns:
        When the backbone says it is not pretrained (``backbone.pretrained is False``, e.g. a
        :class:`~lt_transfer.Backbone` built without weights): the snapshot is then a random
        initialisation and L2-SP pulls toward it.

    Example:
        >>> import lightning.pytorch as pl
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from lt_transfer import Backbone, TransferClassifier
        >>> model = TransferClassifier(Backbone(nn.Linear(4, 4), 4, pretrained=True), num_classes=2)
        >>> data = DataLoader(TensorDataset(torch.randn(8, 4), torch.tensor([0, 1] * 4)), batch_size=4)
        >>> l2sp = L2SP(alpha=0.1, beta=0.01)
        >>> trainer = pl.Trainer(max_steps=2, callbacks=[l2sp], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False)
        >>> trainer.fit(model, data)
        >>> sorted(l2sp.state_dict()["snapshot"])
        ['backbone.model.bias', 'backbone.model.weight']
        >>> l2sp.distance(model) > 0  # ||w - w0|| / ||w0|| of the backbone after two steps
        True
    """

    def __init__(
        self, alpha: float = 0.1, beta: float = 0.01, backbone: str = "backbone", head: str | None = "head"
    ) -> None:
        super().__init__()
        self.alpha = _check_strength(alpha, "alpha")
        self.beta = _check_strength(beta, "beta")
        if not isinstance(backbone, str):
            raise ValueError(
                f"L2SP(backbone={backbone!r}) must be an attribute path string, e.g. 'backbone'."
            )
        if head is not None and not isinstance(head, str):
            raise ValueError(f"L2SP(head={head!r}) must be an attribute path string or None.")
        if head is None and self.beta > 0:
            raise ValueError(
                f"L2SP(beta={beta}, head=None): beta is the plain L2 on the head; name the head "
                "(head='classifier') or set beta=0."
            )
        self.backbone = backbone
        self.head = head
        #: ``{qualified parameter name: w0}``; ``None`` until the first fit starts (or a load).
        self.snapshot: dict[str, torch.Tensor] | None = None
        self._backbone_params: list[tuple[str, nn.Parameter]] = []
        self._head_params: list[nn.Parameter] = []
        self._checked_optimizers: set[int] = set()

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(backbone=self.backbone, head=self.head)

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        check_strategy(trainer, "L2SP")
        self._resolve(pl_module)

    def _resolve(self, pl_module: nn.Module) -> None:
        backbone = find_module(pl_module, self.backbone, "backbone", "L2SP")
        prefix = f"{self.backbone}." if self.backbone else ""
        self._backbone_params = [(prefix + name, p) for name, p in backbone.named_parameters()]
        if not self._backbone_params:
            raise ValueError(
                f"L2SP(backbone={self.backbone!r}): {type(backbone).__name__} has no parameters; point "
                "backbone at the pretrained part of the model."
            )
        in_backbone = {id(p) for _, p in self._backbone_params}
        self._head_params = []
        if self.head is not None and self.beta > 0:
            head = find_module(pl_module, self.head, "head", "L2SP")
            self._head_params = [p for p in head.parameters() if id(p) not in in_backbone]

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.snapshot is None:
            if trainer.ckpt_path is not None:
                raise ValueError(
                    f"L2SP: this run resumes from {trainer.ckpt_path!r}, which holds no L2SP snapshot, so "
                    "the current weights are not the pretrained ones. Resume from a checkpoint written "
                    "with the same L2SP callback (same backbone and head), or start a new run."
                )
            if (
                getattr(find_module(pl_module, self.backbone, "backbone", "L2SP"), "pretrained", True)
                is False
            ):
                rank_zero_warn(
                    f"L2SP: the backbone {self.backbone!r} is not pretrained (its `pretrained` flag is "
                    "False: it starts from random weights), so L2-SP pulls it toward a random "
                    "initialisation. Load pretrained weights, or use plain weight decay instead."
                )
            self.snapshot = parameter_snapshot(self._backbone_params)
            return
        current = dict(self._backbone_params)
        missing = sorted(set(current) - set(self.snapshot))
        unexpected = sorted(set(self.snapshot) - set(current))
        wrong = sorted(
            n for n in set(current) & set(self.snapshot) if current[n].shape != self.snapshot[n].shape
        )
        if missing or unexpected or wrong:
            raise ValueError(
                f"L2SP: the checkpoint's snapshot does not fit the backbone {self.backbone!r}: missing "
                f"{missing[:3]}, unexpected {unexpected[:3]}, other shape {wrong[:3]}; resume with the "
                "same model and L2SP(backbone=...)."
            )
        self.snapshot = {
            name: value.to(device=current[name].device, dtype=current[name].dtype)
            for name, value in self.snapshot.items()
        }

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer
    ) -> None:
        if self.snapshot is None:
            return
        self._check_optimizer(trainer, optimizer)
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        squares: list[torch.Tensor] = []
        with torch.no_grad():
            if self.alpha > 0:
                for name, param in self._backbone_params:
                    if param.requires_grad and id(param) in stepped:
                        diff = param.float() - self.snapshot[name].float()
                        _add_grad(param, self.alpha * diff)
                        squares.append(0.5 * self.alpha * diff.pow(2).sum())
            for param in self._head_params:
                if param.requires_grad and id(param) in stepped:
                    value = param.float()
                    _add_grad(param, self.beta * value)
                    squares.append(0.5 * self.beta * value.pow(2).sum())
        if squares:
            pl_module.log("l2sp/penalty", torch.stack(squares).sum(), on_step=True, on_epoch=False)

    def _check_optimizer(self, trainer: Trainer, optimizer: Optimizer) -> None:
        if id(optimizer) in self._checked_optimizers:
            return
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None and scaler.is_enabled() and optimizer.defaults.get("fused"):
            raise ValueError(
                f"L2SP: {type(optimizer).__name__}(fused=True) unscales the gradients inside its own "
                "step, so under 16-mixed they are still scaled when L2SP adds the penalty's gradient; "
                "use fused=False (or bf16-mixed, which has no scaler)."
            )
        self._checked_optimizers.add(id(optimizer))

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._checked_optimizers = set()

    # ------------------------------------------------------------------ state

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_backbone_params"] = []  # live parameters: resolved again at setup
        state["_head_params"] = []
        return state

    # ---------------------------------------------------------------- reading
    def distance(self, pl_module: nn.Module) -> float:
        """Relative L2 distance ``||w - w0|| / ||w0||`` of the backbone from the snapshot.

        Raises:
            ValueError: before the snapshot exists (the first fit has not started).
        """
        if self.snapshot is None:
            raise ValueError("L2SP.distance: no snapshot yet; it is taken when the first fit starts.")
        self._resolve(pl_module)
        moved = start = 0.0
        with torch.no_grad():
            for name, param in self._backbone_params:
                reference = self.snapshot[name].to(param.device).float()
                moved += float((param.float() - reference).pow(2).sum())
                start += float(reference.pow(2).sum())
        return (moved / start) ** 0.5 if start > 0 else float("inf")


def _add_grad(param: nn.Parameter, gradient: torch.Tensor) -> None:
    if param.grad is None:  # unused in this step's forward: the penalty alone moves it
        param.grad = gradient.to(param.dtype)
    else:
        param.grad.add_(gradient.to(param.grad.dtype))
