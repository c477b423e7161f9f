"""Keep lr schedulers correct when a param group is added to their optimizer mid-training.

A param group added after a scheduler was built is, by default, never scheduled (its
``base_lrs``/``lr_lambdas``/``min_lrs`` entries are missing) or breaks the scheduler
(OneCycleLR reads per-group ``initial_lr``/``max_lr``/``min_lr``; ReduceLROnPlateau
raises on a length mismatch; Lightning issues #12141, #8720). The rule implemented here:
a group added with scale ``s`` relative to a reference group ``r`` is scheduled exactly as
if it had been in the optimizer from the start with ``s`` times the reference group's
initial learning rate (up to floating-point rounding).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any

from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

from lt_transfer._lightning_compat import lr_finder_scheduler_types

__all__ = ["SUPPORTED_SCHEDULERS", "check_scheduler_supported", "add_scheduled_param_group"]

SUPPORTED_SCHEDULERS: tuple[type, ...] = (
    sched.LambdaLR,
    sched.MultiplicativeLR,
    sched.StepLR,
    sched.MultiStepLR,
    sched.ConstantLR,
    sched.LinearLR,
    sched.ExponentialLR,
    sched.PolynomialLR,
    sched.CosineAnnealingLR,
    sched.CosineAnnealingWarmRestarts,
    sched.OneCycleLR,
    sched.CyclicLR,
    sched.ReduceLROnPlateau,
    sched.SequentialLR,
    sched.ChainedScheduler,
)


def _children(scheduler: Any) -> list[Any]:
    return list(getattr(scheduler, "_schedulers", []) or [])


def _walk(scheduler: Any) -> list[Any]:
    return [scheduler] + [s for child in _children(scheduler) for s in _walk(child)]


def check_scheduler_supported(scheduler: Any, owner: str = "ProgressiveUnfreezing") -> None:
    """Raise a clear error if ``scheduler`` (or a scheduler it wraps) cannot take new groups.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> check_scheduler_supported(torch.optim.lr_scheduler.StepLR(opt, 2))
        >>> check_scheduler_supported(object())
        Traceback (most recent call last):
        ...
        ValueError: ProgressiveUnfreezing cannot add param groups to the lr scheduler object ...
    """
    supported = SUPPORTED_SCHEDULERS + lr_finder_scheduler_types()
    if not isinstance(scheduler, supported):
        names = ", ".join(t.__name__ for t in SUPPORTED_SCHEDULERS)
        raise ValueError(
            f"{owner} cannot add param groups to the lr scheduler {type(scheduler).__name__} "
            f"(type {type(scheduler).__module__}.{type(scheduler).__qualname__}): it does not know "
            f"how this scheduler stores per-group state, so the unfrozen groups would silently not "
            f"be scheduled. Use one of {names} (the transformers get_*_schedule_with_warmup "
            "functions return LambdaLR and are supported), or build the optimizer with every "
            "group from the start (e.g. TransferClassifier(finetune='full')) instead of unfreezing."
        )
    for child in _children(scheduler):
        check_scheduler_supported(child, owner)


def _append(target: list, value: Any, seen: set[int]) -> None:
    if id(target) not in seen:
        seen.add(id(target))
        target.append(value)


def _cosine_lr(base: float, eta_min: float, t_cur: float, t_max: float) -> float:
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t_cur / t_max)) / 2


def _extend(
    scheduler: Any, ref: int, scale: float, group: dict, active: bool, seen: set[int]
) -> float | None:
    """Extend one scheduler's per-group state; return a corrected lr when it sets one."""
    new_lr: float | None = None
    base_lrs = getattr(scheduler, "base_lrs", None)
    if isinstance(base_lrs, list) and len(base_lrs) > ref:
        _append(base_lrs, base_lrs[ref] * scale, seen)
    if isinstance(scheduler, (sched.LambdaLR, sched.MultiplicativeLR)):
        _append(scheduler.lr_lambdas, scheduler.lr_lambdas[ref], seen)
    if isinstance(scheduler, sched.ReduceLROnPlateau):
        _append(scheduler.min_lrs, scheduler.min_lrs[ref] * scale, seen)
    if isinstance(scheduler, sched.CyclicLR):
        _append(scheduler.max_lrs, scheduler.max_lrs[ref] * scale, seen)
        if scheduler.cycle_momentum:
            _append(scheduler.base_momentums, scheduler.base_momentums[ref], seen)
            _append(scheduler.max_momentums, scheduler.max_momentums[ref], seen)
    if isinstance(scheduler, sched.CosineAnnealingLR) and active and scheduler.eta_min != 0:
        new_lr = _cosine_lr(base_lrs[-1], scheduler.eta_min, scheduler.last_epoch, scheduler.T_max)
    if isinstance(scheduler, sched.CosineAnnealingWarmRestarts) and active and scheduler.eta_min != 0:
        new_lr = _cosine_lr(base_lrs[-1], scheduler.eta_min, scheduler.T_cur, scheduler.T_i)
    children = _children(scheduler)
    if isinstance(scheduler, sched.SequentialLR):
        current = bisect_right(scheduler._milestones, scheduler.last_epoch)
        for index, child in enumerate(children):
            child_lr = _extend(child, ref, scale, group, active and index == current, seen)
            new_lr = child_lr if child_lr is not None else new_lr
    else:
        for child in children:
            child_lr = _extend(child, ref, scale, group, active, seen)
            new_lr = child_lr if child_lr is not None else new_lr
    return new_lr


def add_scheduled_param_group(
    optimizer: Optimizer, schedulers: list[Any], group: dict, scale: float, ref: int = 0
) -> dict:
    """Add ``group`` to ``optimizer`` at ``scale`` × the lr of group ``ref``, and extend schedulers.

    The new group's ``lr`` (and ``initial_lr``, OneCycleLR's ``max_lr``/``min_lr``) are the
    reference group's values times ``scale``; momentum settings that a cycling scheduler
    drives are copied from the reference. Every scheduler in ``schedulers`` that belongs to
    ``optimizer`` gets a matching ``base_lrs``/``lr_lambdas``/``min_lrs``/``max_lrs`` entry,
    so the group is scheduled as if it had been there from the start.

    Returns:
        The group as stored in ``optimizer.param_groups``.

    Example:
        >>> import torch
        >>> head = torch.nn.Parameter(torch.zeros(1))
        >>> opt = torch.optim.SGD([head], lr=1.0)
        >>> step = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        >>> opt.step(); step.step()
        >>> _ = add_scheduled_param_group(opt, [step], {"params": [torch.nn.Parameter(torch.zeros(1))]}, 0.1)
        >>> opt.step(); step.step()
        >>> [g["lr"] for g in opt.param_groups], step.base_lrs
        ([0.25, 0.025], [1.0, 0.1])
    """
    reference = optimizer.param_groups[ref]
    for key in ("lr", "initial_lr", "max_lr", "min_lr"):
        if key in reference:
            group[key] = reference[key] * scale
    if "max_momentum" in reference:  # OneCycleLR / CyclicLR with cycle_momentum
        for key in ("max_momentum", "base_momentum", "momentum", "betas"):
            if key in reference:
                group[key] = reference[key]
    optimizer.add_param_group(group)
    stored = optimizer.param_groups[-1]
    seen: set[int] = set()
    owned = [s for s in schedulers if getattr(s, "optimizer", None) is optimizer]
    new_lr = None
    for scheduler in owned:
        lr = _extend(scheduler, ref, scale, stored, True, seen)
        new_lr = lr if lr is not None else new_lr
    if new_lr is not None:
        stored["lr"] = new_lr
    for scheduler in owned:
        for candidate in _walk(scheduler):
            last = getattr(candidate, "_last_lr", None)
            if isinstance(last, list) and len(last) == len(optimizer.param_groups) - 1:
                _append(last, stored["lr"], seen)
    return stored
