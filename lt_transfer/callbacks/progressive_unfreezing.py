"""ProgressiveUnfreezing: gradual unfreezing with discriminative learning rates, done right.

Gradual unfreezing of pretrained layer groups from the top, each at a lower learning rate
than the head, is the fine-tuning recipe of ULMFiT (Howard & Ruder, "Universal Language
Model Fine-tuning for Text Classification", ACL 2018) and of Lightning's
``BackboneFinetuning``. This implementation keeps it correct where the usual one is not:

* **frozen means frozen**: frozen groups have ``requires_grad=False`` (no backward through
  them) and their modules stay in eval mode (BatchNorm neither uses batch statistics nor
  updates its running statistics) unless ``frozen_mode="train"``;
* **schedulers**: each group added to the optimizer gets its entries in every attached lr
  scheduler (``base_lrs``, ``lr_lambdas``, ``min_lrs``, OneCycleLR's per-group keys), so it
  is scheduled as if it had been there from the start; an unknown scheduler is an error at
  the start of training, never a silently unscheduled group;
* **resume**: the callback state says which steps were applied; on resume they are
  re-applied in ``on_fit_start``, i.e. after ``configure_optimizers`` and *before* Lightning
  loads the optimizer and scheduler states, so the resumed run equals an uninterrupted one;
* **DDP**: ``DistributedDataParallel`` only reduces gradients of parameters that required
  grad when it was built, so ranks drift apart after an unfreeze (Lightning #20340). After
  each unfreeze the model is wrapped again (a new reducer over the now-trainable
  parameters; one broadcast per unfreeze, no cost in between;
  :func:`lt_transfer._lightning_compat.rewrap_ddp`);
* **the model's learning-rate policy**: with a module that exposes its resolved
  ``backbone_lr_scale`` / ``layer_decay`` (:class:`~lt_transfer.TransferClassifier`,
  :class:`~lt_transfer.TextClassifier`, :class:`~lt_transfer.DomainAdaptationModule`), the
  callback uses them unless it is given its own; two different explicit values are an
  error, and so is a model whose ``finetune`` is not ``"full"`` (the callback decides what
  trains);
* **identity**: parameters are compared by identity, never by value;
* **a plan that fits**: at the start of training, a plan that ``max_epochs`` / ``max_steps``
  cuts short is a warning that names the groups that would stay frozen;
* **stable names**: unnamed param groups already in the optimizer are named ``pg<i>`` at fit
  start (the name ``LearningRateMonitor`` gives them once there are several), so their
  ``lr-<Optimizer>`` series keep one name when the first unfrozen group is added.

Design choice: groups are *added* to the optimizer when they unfreeze (as ``BackboneFinetuning``
does) rather than registered from the start with ``lr=0``/``requires_grad=False``, because the
callback must work with a user's own ``configure_optimizers``, which typically passes only
trainable parameters; registering everything up front would need control over how the
optimizer is built. The price is the scheduler bookkeeping above, which is tested against an
independent reference for every supported scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.optim import Optimizer
from typing_extensions import override

from lt_transfer._lightning_compat import rewrap_ddp
from lt_transfer.backbones import LayerGroup
from lt_transfer.callbacks._scheduler_groups import add_scheduled_param_group, check_scheduler_supported
from lt_transfer.freezing import resolve_layer_groups
from lt_transfer.optim import PRETRAINED_BACKBONE_LR_SCALE, no_decay_parameter_ids, param_groups_for

__all__ = ["ProgressiveUnfreezing"]

_STEP_KEY = "unfreeze_step"
#: The callback's values when neither it nor the module sets them.
_LR_FALLBACKS = {"backbone_lr_scale": PRETRAINED_BACKBONE_LR_SCALE, "layer_decay": 1.0}


class ProgressiveUnfreezing(Callback):
    """Unfreeze a pretrained backbone group by group (from the top) during training.

    At ``setup`` every backbone layer group is frozen, so ``configure_optimizers`` sees only
    the head (and anything else outside the backbone). At each unfreeze step the next layer
    groups, counted from the output end, become trainable and are added to the optimizer as
    named param groups (``"<backbone>.<group>"``, biases and norm weights in
    ``"<backbone>.<group>.no_decay"`` with ``weight_decay=0`` when ``no_decay``), with the
    learning rate ``backbone_lr_scale * layer_decay ** d`` times that of the optimizer's first
    param group (the head), ``d`` = 0 for the group nearest the head.

    ``backbone_lr_scale`` and ``layer_decay`` default to the module's own (resolved) values
    when it exposes them as attributes, as :class:`~lt_transfer.TransferClassifier` does, else
    to 0.1 and 1.0. Setting one on both the callback and the module (its ``hparams``) to
    different values is an error, and so is a module whose ``hparams.finetune`` is not
    ``"full"``: the callback decides which groups train.

    When to unfreeze:

    * ``unfreeze_at_epoch=10``: everything at epoch 10 (like ``BackboneFinetuning``);
    * ``unfreeze_at_epoch=[2, 4, 6]``: one step per milestone; ``groups_per_step`` groups
      each (``None``: the groups split evenly, the top steps taking the remainder);
    * ``unfreeze_at_epoch=2, every_n_epochs=1``: gradual, ``groups_per_step`` (default 1)
      more groups every epoch from epoch 2 until all are trainable.

    Layer groups come from ``pl_module.backbone.layer_groups()`` (ordered input → output,
    e.g. :class:`~lt_transfer.TransferClassifier`), or, for any other module, from the
    direct children of the sub-module at ``backbone="attr.path"``.

    At the start of training the plan is compared with ``max_epochs`` and ``max_steps``
    (through the number of optimizer steps per epoch); steps that would come after the last
    epoch are a warning naming the groups that would stay frozen (not under
    ``fast_dev_run``). Param groups without a ``name`` in the optimizer at fit start are
    named ``pg1``, ``pg2``, ... (what ``LearningRateMonitor`` calls them once there are
    several groups), so the learning-rate series of a user's unnamed head group is
    ``lr-Adam/pg1`` from the first step on instead of changing from ``lr-Adam`` at the first
    unfreeze.

    Args:
        unfreeze_at_epoch: the epoch of the single step, the list of milestones (strictly
            increasing), or the first epoch of a gradual schedule.
        every_n_epochs: gradual mode: epochs between steps.
        groups_per_step: layer groups unfrozen per step (see above).
        backbone: attribute path of the backbone (``None``: ``pl_module.backbone``).
        backbone_lr_scale: lr of the group nearest the head relative to the head's lr
            (``None``: the module's ``backbone_lr_scale``, else 0.1).
        layer_decay: further multiplier per group towards the input (1: no decay; ``None``:
            the module's ``layer_decay``, else 1.0).
        warmup_epochs: ramp a newly unfrozen group's lr linearly over this many epochs
            (factor ``(k + 1) / (warmup_epochs + 1)`` in the ``k``-th epoch after its
            unfreeze). It multiplies the scheduled lr inside each ``optimizer.step`` only
            (optimizer step pre/post hooks), so it composes with any scheduler;
            ``LearningRateMonitor`` and checkpoints show the scheduled lr.
        frozen_mode: mode of the modules of frozen groups: ``"eval"`` (BatchNorm uses and keeps
            its running statistics, dropout off) or ``"train"`` (BatchNorm then normalises
            with batch statistics and updates its running statistics).
        no_decay: put biases and norm weights of new groups in ``weight_decay=0`` groups.
        optimizer_index: which optimizer receives the groups. ``None`` requires exactly one
            optimizer; with several, pass the index (the others are left untouched).
        verbose: log each unfreeze step.

    Raises:
        ValueError: bad arguments (in ``__init__``); at ``setup``/``on_fit_start``: unknown
            ``backbone`` attribute (lists what exists), more steps than layer groups,
            frozen parameters already in the optimizer, an unsupported scheduler or strategy
            (DeepSpeed, FSDP), several optimizers without ``optimizer_index``, frozen
            BatchNorm without running statistics while ``frozen_mode="eval"``, a module
            with ``finetune`` other than ``"full"``, or a ``backbone_lr_scale`` /
            ``layer_decay`` set differently on the callback and the module.

    Example:
        >>> import lightning.pytorch as pl
        >>> from lt_transfer import TransferClassifier
        >>> callback = ProgressiveUnfreezing(unfreeze_at_epoch=[1, 2], groups_per_step=2,
        ...                                  backbone_lr_scale=0.1, layer_decay=0.5)
        >>> model = TransferClassifier("torchvision/resnet18", num_classes=3)
        >>> callback.plan_for(model)
        [(1, ['layer4', 'layer3']), (2, ['layer2', 'layer1'])]
    """

    def __init__(
        self,
        unfreeze_at_epoch: int | list[int] = 10,
        every_n_epochs: int | None = None,
        groups_per_step: int | None = None,
        backbone: str | None = None,
        backbone_lr_scale: float | None = None,
        layer_decay: float | None = None,
        warmup_epochs: int = 0,
        frozen_mode: Literal["eval", "train"] = "eval",
        no_decay: bool = True,
        optimizer_index: int | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(unfreeze_at_epoch, bool) or not isinstance(unfreeze_at_epoch, (int, list, tuple)):
            raise ValueError(
                f"{name}(unfreeze_at_epoch={unfreeze_at_epoch!r}) must be an int or a list of ints."
            )
        milestones = [unfreeze_at_epoch] if isinstance(unfreeze_at_epoch, int) else list(unfreeze_at_epoch)
        if not milestones or any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in milestones):
            raise ValueError(
                f"{name}(unfreeze_at_epoch={unfreeze_at_epoch!r}) must be an epoch >= 0 or a non-empty "
                "list of epochs >= 0."
            )
        if any(b <= a for a, b in zip(milestones, milestones[1:], strict=False)):
            raise ValueError(
                f"{name}(unfreeze_at_epoch={unfreeze_at_epoch!r}): milestones must be strictly "
                f"increasing, e.g. {sorted(set(milestones))}."
            )
        if every_n_epochs is not None:
            if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
                raise ValueError(f"{name}(every_n_epochs={every_n_epochs!r}) must be an int >= 1 or None.")
            if len(milestones) != 1:
                raise ValueError(
                    f"{name}(every_n_epochs={every_n_epochs}) starts a gradual schedule at one epoch; "
                    f"unfreeze_at_epoch={unfreeze_at_epoch!r} must be a single int with it."
                )
        if groups_per_step is not None and (
            isinstance(groups_per_step, bool) or not isinstance(groups_per_step, int) or groups_per_step < 1
        ):
            raise ValueError(f"{name}(groups_per_step={groups_per_step!r}) must be an int >= 1 or None.")
        if backbone_lr_scale is not None and not (
            isinstance(backbone_lr_scale, (int, float))
            and not isinstance(backbone_lr_scale, bool)
            and math.isfinite(backbone_lr_scale)
            and backbone_lr_scale > 0
        ):
            raise ValueError(
                f"{name}(backbone_lr_scale={backbone_lr_scale!r}) must be a positive number (1.0 = head "
                "lr) or None (the module's own value, else 0.1)."
            )
        if layer_decay is not None and not (
            isinstance(layer_decay, (int, float))
            and not isinstance(layer_decay, bool)
            and 0 < layer_decay <= 1
        ):
            raise ValueError(
                f"{name}(layer_decay={layer_decay!r}) must be in (0, 1] (1 disables the decay) or None "
                "(the module's own value, else 1.0)."
            )
        if frozen_mode not in ("eval", "train"):
            raise ValueError(
                f"{name}(frozen_mode={frozen_mode!r}) must be 'eval' (frozen BatchNorm keeps its running "
                "statistics, dropout off) or 'train'."
            )
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(f"{name}(warmup_epochs={warmup_epochs!r}) must be an int >= 0.")
        if optimizer_index is not None and (
            isinstance(optimizer_index, bool) or not isinstance(optimizer_index, int) or optimizer_index < 0
        ):
            raise ValueError(f"{name}(optimizer_index={optimizer_index!r}) must be an int >= 0 or None.")
        if backbone is not None and not isinstance(backbone, str):
            raise ValueError(f"{name}(backbone={backbone!r}) must be an attribute path string or None.")
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.milestones = milestones
        self.every_n_epochs = every_n_epochs
        self.groups_per_step = groups_per_step
        self.backbone = backbone
        self.backbone_lr_scale = None if backbone_lr_scale is None else float(backbone_lr_scale)
        self.layer_decay = None if layer_decay is None else float(layer_decay)
        self.warmup_epochs = warmup_epochs
        self.frozen_mode = frozen_mode
        self.no_decay = no_decay
        self.optimizer_index = optimizer_index
        self.verbose = verbose
        # progress (saved in state_dict)
        self.applied_steps = 0
        self.applied_epochs: list[int] = []
        self._loaded_plan: list[list[Any]] | None = None
        # derived at setup
        self._lr_settings = dict(_LR_FALLBACKS)
        self._prefix = ""
        self._groups: list[LayerGroup] = []
        self._plan: list[tuple[int, list[int]]] = []
        self._saved_lrs: list[tuple[dict, float]] = []
        self._hook_handles: list[Any] = []
        self._current_epoch = 0

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(backbone=self.backbone, unfreeze_at_epoch=self.unfreeze_at_epoch)

    # ------------------------------------------------------------------ planning
    def _build_plan(self, num_groups: int, group_names: list[str]) -> list[tuple[int, list[int]]]:
        top_down = list(reversed(range(num_groups)))
        described = f"{num_groups} layer groups {group_names}"
        if self.every_n_epochs is not None:
            size = self.groups_per_step or 1
            steps = math.ceil(num_groups / size)
            epochs = [self.milestones[0] + k * self.every_n_epochs for k in range(steps)]
            sizes = [size] * steps
        else:
            epochs = list(self.milestones)
            steps = len(epochs)
            if self.groups_per_step is None:
                if steps > num_groups:
                    raise ValueError(
                        f"{type(self).__name__}(unfreeze_at_epoch={self.unfreeze_at_epoch!r}) has {steps} "
                        f"unfreeze steps, but the backbone has only {described}; use at most "
                        f"{num_groups} milestones."
                    )
                sizes = [num_groups // steps + (1 if k < num_groups % steps else 0) for k in range(steps)]
            else:
                if (steps - 1) * self.groups_per_step >= num_groups:
                    raise ValueError(
                        f"{type(self).__name__}(unfreeze_at_epoch={self.unfreeze_at_epoch!r}, "
                        f"groups_per_step={self.groups_per_step}) has {steps} unfreeze steps, but the "
                        f"backbone has only {described}, so step {steps} would unfreeze nothing; use "
                        f"at most {math.ceil(num_groups / self.groups_per_step)} milestones."
                    )
                sizes = [self.groups_per_step] * steps
        plan, start = [], 0
        for epoch, size in zip(epochs, sizes, strict=True):
            chunk = top_down[start : start + size]
            start += size
            plan.append((epoch, chunk))
        return plan

    def plan_for(self, pl_module: nn.Module) -> list[tuple[int, list[str]]]:
        """The unfreeze schedule for ``pl_module``: ``[(epoch, [group names, top first]), ...]``."""
        _, groups = resolve_layer_groups(pl_module, self.backbone)
        plan = self._build_plan(len(groups), [g.name for g in groups])
        return [(epoch, [groups[i].name for i in indices]) for epoch, indices in plan]

    def _group_scale(self, index: int) -> float:
        depth = len(self._groups) - 1 - index
        return self._lr_settings["backbone_lr_scale"] * self._lr_settings["layer_decay"] ** depth

    def _resolve_lr_settings(self, pl_module: LightningModule) -> dict[str, float]:
        """The callback's value, else the module's resolved one, else the fallback (see the class doc)."""
        hparams = getattr(pl_module, "hparams", None)
        given_to_module = hparams if isinstance(hparams, Mapping) else {}
        model = type(pl_module).__name__
        settings = {}
        for key, fallback in _LR_FALLBACKS.items():
            own = getattr(self, key)
            exposed = getattr(pl_module, key, None)
            if isinstance(exposed, bool) or not isinstance(exposed, (int, float)):
                exposed = None
            model_value = given_to_module.get(key) if exposed is not None else None
            if own is not None and model_value is not None and float(model_value) != own:
                raise ValueError(
                    f"{type(self).__name__}({key}={own}) and {model}({key}={model_value}) disagree; set it "
                    f"in one place: remove it from the callback (it then uses the model's) or from the "
                    "model."
                )
            settings[key] = own if own is not None else (float(exposed) if exposed is not None else fallback)
        return settings

    def _check_finetune(self, pl_module: LightningModule) -> None:
        hparams = getattr(pl_module, "hparams", None)
        finetune = hparams.get("finetune") if isinstance(hparams, Mapping) else None
        if finetune is not None and finetune != "full":
            raise ValueError(
                f"{type(self).__name__} decides which backbone layer groups train: it freezes them all "
                f"at setup and unfreezes them on its schedule, which would silently override "
                f"{type(pl_module).__name__}(finetune={finetune!r}). Build the model with "
                "finetune='full' when you use the callback."
            )

    def _frozen_indices(self) -> list[int]:
        unfrozen = {i for _, indices in self._plan[: self.applied_steps] for i in indices}
        return [i for i in range(len(self._groups)) if i not in unfrozen]

    # ------------------------------------------------------------------- hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._check_strategy(trainer)
        self._check_finetune(pl_module)
        self._lr_settings = self._resolve_lr_settings(pl_module)
        self._prefix, groups = resolve_layer_groups(pl_module, self.backbone)
        seen: set[int] = set()  # a parameter shared by two groups belongs to the first (identity)
        self._groups = []
        for group in groups:
            named = tuple((n, p) for n, p in group.named_parameters if id(p) not in seen)
            seen.update(id(p) for _, p in named)
            self._groups.append(LayerGroup(group.name, named, group.modules))
        self._plan = self._build_plan(len(self._groups), [g.name for g in self._groups])
        if self.frozen_mode == "eval":
            for group in self._groups:
                for module in group.modules:
                    for sub_name, sub in module.named_modules():
                        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and not sub.track_running_stats:
                            raise ValueError(
                                f"{type(self).__name__}: layer group {group.name!r} holds a "
                                f"{type(sub).__name__} ({sub_name or 'the group module'}) with "
                                "track_running_stats=False, which normalises with batch statistics "
                                "even in eval mode, so it cannot be frozen. Pass frozen_mode='train' "
                                "to accept that, or use a BatchNorm with running statistics."
                            )
        for group in self._groups:  # everything starts frozen; on_fit_start re-applies progress
            for _, param in group.named_parameters:
                param.requires_grad_(False)
        self._set_frozen_modes(pl_module)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._loaded_plan is not None:
            current = [[epoch, [self._groups[i].name for i in idx]] for epoch, idx in self._plan]
            if [[e, list(n)] for e, n in self._loaded_plan] != current:
                raise ValueError(
                    f"{type(self).__name__}: the checkpoint was written with the unfreeze plan "
                    f"{self._loaded_plan}, but this run's plan is {current}; resume with the same "
                    "callback arguments and model."
                )
            self._loaded_plan = None
        optimizer = self._optimizer(trainer)
        if self.applied_steps < len(self._plan):
            for config in trainer.lr_scheduler_configs:
                if getattr(config.scheduler, "optimizer", None) is optimizer:
                    check_scheduler_supported(config.scheduler, type(self).__name__)
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        clashes = [
            (group.name, n)
            for group in self._groups
            for n, p in group.named_parameters
            if id(p) in in_optimizer
        ]
        if clashes:
            raise ValueError(
                f"{type(self).__name__}: {len(clashes)} frozen backbone parameters are already in the "
                f"optimizer (e.g. {clashes[:3]}), so unfreezing would add them again. Build the "
                "optimizer from trainable parameters only, e.g. "
                "`Adam(p for p in self.parameters() if p.requires_grad)`, and let the callback add "
                "each group with its own learning rate when it unfreezes."
            )
        for index, group in enumerate(optimizer.param_groups, start=1):
            group.setdefault("name", f"pg{index}")  # one LearningRateMonitor series name throughout
        if self.warmup_epochs and not self._hook_handles:
            # the warm-up scales the lr inside optimizer.step only (pre/post hooks), so schedulers,
            # checkpoints and LearningRateMonitor always see the scheduled lr
            self._hook_handles = [
                optimizer.register_step_pre_hook(self._warmup_pre_step),
                optimizer.register_step_post_hook(self._warmup_post_step),
            ]
        if self.applied_steps:
            for step in range(self.applied_steps):
                self._unfreeze_step(trainer, pl_module, step, restoring=True)
            rewrap_ddp(trainer)
        self._set_frozen_modes(pl_module)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        message = self.unfinished_plan_message(trainer)
        if message is not None:
            rank_zero_warn(message)

    def unfinished_plan_message(self, trainer: Trainer) -> str | None:
        """The warning for unfreeze steps that ``max_epochs``/``max_steps`` cut off, or ``None``.

        Needs the training data set up (from ``on_train_start``): the steps per epoch are
        ``ceil(num_training_batches / accumulate_grad_batches)``.
        """
        if trainer.fast_dev_run:
            return None
        last_epoch, limits = math.inf, []
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            last_epoch = trainer.max_epochs - 1
            limits.append(f"max_epochs={trainer.max_epochs}")
        batches = trainer.num_training_batches
        if trainer.max_steps >= 0 and math.isfinite(batches) and batches > 0:
            per_epoch = math.ceil(batches / trainer.accumulate_grad_batches)
            by_steps = math.ceil(trainer.max_steps / per_epoch) - 1
            if by_steps < last_epoch:
                last_epoch = by_steps
                limits = [f"max_steps={trainer.max_steps} at {per_epoch} optimizer steps per epoch"]
        missed = [(epoch, idx) for epoch, idx in self._plan[self.applied_steps :] if epoch > last_epoch]
        if not missed:
            return None
        names = [self._groups[i].name for _, idx in missed for i in idx]
        steps = "; ".join(f"epoch {epoch}: {[self._groups[i].name for i in idx]}" for epoch, idx in missed)
        return (
            f"{type(self).__name__}: training stops after epoch {last_epoch} ({', '.join(limits)}), but the "
            f"plan unfreezes later ({steps}), so the layer groups {names} stay frozen. Unfreeze earlier "
            "(unfreeze_at_epoch, every_n_epochs), more groups per step (groups_per_step), or train longer."
        )

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._current_epoch = trainer.current_epoch
        changed = False
        while (
            self.applied_steps < len(self._plan)
            and self._plan[self.applied_steps][0] <= trainer.current_epoch
        ):
            self._unfreeze_step(trainer, pl_module, self.applied_steps, restoring=False)
            self.applied_epochs.append(trainer.current_epoch)
            self.applied_steps += 1
            changed = True
        if changed:
            rewrap_ddp(trainer)  # a DDP reducer only covers the parameters that required grad when built
        self._set_frozen_modes(pl_module)

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # cheap guard against code that calls .train() on the whole model (checks a flag per group)
        if self.frozen_mode == "eval":
            for index in self._frozen_indices():
                for module in self._groups[index].modules:
                    if module.training:
                        module.eval()

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore_lrs()

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore_lrs()
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles = []

    def _warmup_pre_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        self._restore_lrs()
        for group in optimizer.param_groups:
            step = group.get(_STEP_KEY)
            if step is None or step >= len(self.applied_epochs):
                continue
            elapsed = self._current_epoch - self.applied_epochs[step]
            if elapsed < self.warmup_epochs:
                self._saved_lrs.append((group, group["lr"]))
                group["lr"] = group["lr"] * (elapsed + 1) / (self.warmup_epochs + 1)

    def _warmup_post_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        self._restore_lrs()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_hook_handles"] = []
        state["_saved_lrs"] = []
        state["_groups"] = []  # live parameters and modules; rebuilt at setup
        state["_plan"] = []
        return state

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "applied_steps": self.applied_steps,
            "applied_epochs": list(self.applied_epochs),
            "plan": [[epoch, [self._groups[i].name for i in idx]] for epoch, idx in self._plan],
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.applied_steps = int(state_dict["applied_steps"])
        self.applied_epochs = [int(e) for e in state_dict["applied_epochs"]]
        self._loaded_plan = state_dict["plan"]

    # ----------------------------------------------------------------- helpers
    def _restore_lrs(self) -> None:
        for group, lr in self._saved_lrs:
            group["lr"] = lr
        self._saved_lrs.clear()

    def _check_strategy(self, trainer: Trainer) -> None:
        from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

        strategy = trainer.strategy
        kind = type(strategy).__name__
        if "DeepSpeed" in kind or "FSDP" in kind or "ModelParallel" in kind:
            raise ValueError(
                f"{type(self).__name__} does not support strategy {kind}: it shards or flattens "
                "parameters (DeepSpeed; FSDP, with or without use_orig_params, is not supported "
                "either), so param groups cannot be added by identity. Use strategy='ddp' or a "
                "single device, or fine-tune with all groups trainable from the start."
            )
        if not isinstance(strategy, (DDPStrategy, SingleDeviceStrategy)):
            raise ValueError(
                f"{type(self).__name__} supports single-device and DDP strategies (ddp, ddp_spawn, "
                f"ddp_fork); got {kind}."
            )

    def _optimizer(self, trainer: Trainer) -> Optimizer:
        optimizers = trainer.optimizers
        if not optimizers:
            raise ValueError(
                f"{type(self).__name__}: the LightningModule's configure_optimizers returned no "
                "optimizer, so there is nothing to add the unfrozen groups to."
            )
        if self.optimizer_index is None:
            if len(optimizers) > 1:
                raise ValueError(
                    f"{type(self).__name__}: configure_optimizers returned {len(optimizers)} optimizers; "
                    "pass optimizer_index=<i> to choose which one receives the unfrozen groups (the "
                    "others are left untouched)."
                )
            return optimizers[0]
        if self.optimizer_index >= len(optimizers):
            raise ValueError(
                f"{type(self).__name__}(optimizer_index={self.optimizer_index}) but configure_optimizers "
                f"returned {len(optimizers)} optimizer(s)."
            )
        return optimizers[self.optimizer_index]

    def _set_frozen_modes(self, pl_module: LightningModule) -> None:
        frozen = set(self._frozen_indices())
        for index, group in enumerate(self._groups):
            for module in group.modules:
                if index in frozen and self.frozen_mode == "eval":
                    module.eval()
                elif pl_module.training:
                    module.train()

    def _unfreeze_step(
        self, trainer: Trainer, pl_module: LightningModule, step: int, restoring: bool
    ) -> None:
        optimizer = self._optimizer(trainer)
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        no_decay_ids = no_decay_parameter_ids(pl_module) if self.no_decay else set()
        added = []
        for index in self._plan[step][1]:
            group = self._groups[index]
            again = [n for n, p in group.named_parameters if id(p) in in_optimizer]
            if again:
                raise ValueError(
                    f"{type(self).__name__}: parameters {again[:3]} of layer group {group.name!r} are "
                    "already in the optimizer; build the optimizer from trainable parameters only."
                )
            for _, param in group.named_parameters:
                param.requires_grad_(True)
            if pl_module.training:
                for module in group.modules:
                    module.train()
            name = f"{self._prefix}.{group.name}" if self._prefix else group.name
            scale = self._group_scale(index)
            for param_group in param_groups_for(name, group.named_parameters, scale, no_decay_ids):
                param_group["lr_scaled"] = True
                param_group[_STEP_KEY] = step
                stored = add_scheduled_param_group(optimizer, schedulers, param_group, scale)
                added.append(f"{stored['name']} (lr={stored['lr']:.3g})")
        if self.verbose and not restoring:
            rank_zero_info(
                f"{type(self).__name__}: epoch {trainer.current_epoch}: unfroze {', '.join(added)}"
            )
