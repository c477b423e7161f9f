"""The loss- and teaching-specific arguments of DistillationModule: defaults, who uses them, checks.

An argument that only some losses (``loss="kd" | "dkd" | "at"``) or only function matching
(``teaching="function_matching"``) use defaults to ``None``: ``None`` means the value in
:data:`DISTILLATION_DEFAULTS` where it is used, and a value given where it is not used is an
error (:func:`check_distillation_arguments`), so a configuration never carries a setting that
silently does nothing.
"""

from __future__ import annotations

import math
from typing import Any, Literal

__all__ = [
    "DISTILLATION_DEFAULTS",
    "DISTILLATION_LOSSES",
    "DistillationLossName",
    "MixKind",
    "TEACHING_MODES",
    "Teaching",
    "check_distillation_arguments",
    "resolve_distillation_arguments",
]

#: What the student learns from the teacher: its softened logits (Hinton's KD), the decoupled
#: target / non-target parts of them (DKD), or the spatial attention of intermediate layers (AT).
DistillationLossName = Literal["kd", "dkd", "at"]
DISTILLATION_LOSSES: tuple[str, ...] = ("kd", "dkd", "at")
#: How the teacher sees the training batch (see :class:`~lt_transfer.DistillationModule`).
Teaching = Literal["consistent", "function_matching"]
TEACHING_MODES: tuple[str, ...] = ("consistent", "function_matching")
#: The mixed views of function matching.
MixKind = Literal["mixup", "cutmix"]

#: Values of the loss- and teaching-specific arguments when they are ``None`` (and used).
DISTILLATION_DEFAULTS: dict[str, Any] = {
    "temperature": 4.0,
    "dkd_alpha": 1.0,
    "dkd_beta": 8.0,
    "dkd_warmup_epochs": 0,
    "at_beta": 1000.0,
    "at_interpolate": False,
    "mix": "mixup",
    "mix_alpha": 1.0,
}

#: The losses that use each loss-specific argument.
_USED_BY_LOSS: dict[str, tuple[str, ...]] = {
    "temperature": ("kd", "dkd"),
    "dkd_alpha": ("dkd",),
    "dkd_beta": ("dkd",),
    "dkd_warmup_epochs": ("dkd",),
    "at_layers": ("at",),
    "at_beta": ("at",),
    "at_interpolate": ("at",),
}
_TEACHING_ARGUMENTS = ("mix", "mix_alpha")


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check_unused(name: str, loss: str, teaching: str | None, given: dict[str, Any]) -> None:
    unused = [
        f"{key}={given[key]!r}"
        for key, losses in _USED_BY_LOSS.items()
        if given.get(key) is not None and loss not in losses
    ]
    if unused:
        users = {key: "/".join(_USED_BY_LOSS[key]) for key in _USED_BY_LOSS}
        why = ", ".join(f"{item} ({users[item.split('=')[0]]} only)" for item in unused)
        raise ValueError(
            f"{name}(loss={loss!r}) does not use {why}; remove them (leave them None) or choose the "
            f"loss that uses them (one of {list(DISTILLATION_LOSSES)})."
        )
    mixing = [f"{key}={given[key]!r}" for key in _TEACHING_ARGUMENTS if given.get(key) is not None]
    if mixing and teaching != "function_matching":
        raise ValueError(
            f"{name}(teaching={teaching!r}) does not use {', '.join(mixing)} (teaching='function_matching' "
            "only); remove them or pass teaching='function_matching'."
        )


def _check_at_layers(name: str, layers: Any) -> None:
    pairs_ok = (
        isinstance(layers, (list, tuple))
        and len(layers) > 0
        and all(
            isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(n, str) for n in pair)
            for pair in layers
        )
    )
    if not pairs_ok:
        raise ValueError(
            f"{name}(at_layers={layers!r}) must be a non-empty list of [student_layer, teacher_layer] "
            "pairs of sub-module names (as in named_modules()), e.g. [['features.3', 'features.6']]."
        )


def check_distillation_arguments(
    name: str, loss: str, teaching: str | None, cache_teacher_outputs: bool, given: dict[str, Any]
) -> None:
    """Raise for a bad choice, an argument given where it is not used, or a bad value.

    Args:
        name: the module's class name, for messages.
        loss: the chosen loss.
        teaching: the chosen teaching mode (``None``: the default).
        cache_teacher_outputs: whether the teacher-output cache is on.
        given: every loss- and teaching-specific argument as passed (``None`` = not given).

    Raises:
        ValueError: naming the argument, the value and the fix.

    Example:
        >>> check_distillation_arguments("Module", "kd", None, False, {"dkd_beta": 8.0})
        Traceback (most recent call last):
        ...
        ValueError: Module(loss='kd') does not use dkd_beta=8.0 (dkd only); remove them (leave them None) \
or choose the loss that uses them (one of ['kd', 'dkd', 'at']).
    """
    if loss not in DISTILLATION_LOSSES:
        raise ValueError(
            f"{name}(loss={loss!r}) must be one of {list(DISTILLATION_LOSSES)}: 'kd' (Hinton et al.), 'dkd' "
            "(decoupled KD, Zhao et al.) or 'at' (attention transfer, Zagoruyko & Komodakis)."
        )
    if teaching is not None and teaching not in TEACHING_MODES:
        raise ValueError(
            f"{name}(teaching={teaching!r}) must be None, 'consistent' or 'function_matching' "
            "(Beyer et al., CVPR 2022)."
        )
    _check_unused(name, loss, teaching, given)
    if loss == "at" and given.get("at_layers") is None:
        raise ValueError(
            f"{name}(loss='at') needs at_layers=[[student_layer, teacher_layer], ...]: the pairs of "
            "convolutional layers whose spatial attention maps are matched."
        )
    if given.get("at_layers") is not None:
        _check_at_layers(name, given["at_layers"])
    if cache_teacher_outputs and teaching is not None:
        raise ValueError(
            f"{name}(cache_teacher_outputs=True, teaching={teaching!r}): the teacher-output cache serves "
            "logits computed on an earlier view of each sample, but "
            + (
                "function matching feeds both networks a new mixed view at every step"
                if teaching == "function_matching"
                else "consistent teaching runs the teacher on the student's exact (augmented) view at "
                "every step"
            )
            + "; pass cache_teacher_outputs=False (or teaching=None for un-augmented data)."
        )
    if cache_teacher_outputs and loss == "at":
        raise ValueError(
            f"{name}(cache_teacher_outputs=True, loss='at'): the cache holds logits only and cannot serve "
            "the teacher's attention maps; disable one of them."
        )
    temperature = given.get("temperature")
    if temperature is not None and not (_is_number(temperature) and temperature > 0):
        raise ValueError(f"{name}(temperature={temperature!r}) must be > 0 (typically 1-20).")
    for key in ("dkd_alpha", "dkd_beta", "at_beta"):
        value = given.get(key)
        if value is not None and not (_is_number(value) and value >= 0):
            raise ValueError(
                f"{name}({key}={value!r}) must be a finite number >= 0 (defaults: dkd_alpha=1, dkd_beta=8, "
                "at_beta=1000 as in the papers)."
            )
    warmup = given.get("dkd_warmup_epochs")
    if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
        raise ValueError(
            f"{name}(dkd_warmup_epochs={warmup!r}) must be an int >= 0 (epochs over which the DKD term's "
            "weight rises linearly to 1; the paper: 20 of 240)."
        )
    interpolate = given.get("at_interpolate")
    if interpolate is not None and not isinstance(interpolate, bool):
        raise ValueError(f"{name}(at_interpolate={interpolate!r}) must be True, False or None.")
    mix = given.get("mix")
    if mix is not None and mix not in ("mixup", "cutmix"):
        raise ValueError(f"{name}(mix={mix!r}) must be 'mixup' or 'cutmix' (or None: mixup).")
    mix_alpha = given.get("mix_alpha")
    if mix_alpha is not None and not (_is_number(mix_alpha) and mix_alpha > 0):
        raise ValueError(
            f"{name}(mix_alpha={mix_alpha!r}) must be a number > 0: the Beta(mix_alpha, mix_alpha) "
            "distribution of the mixing weight (1.0: uniform)."
        )


def resolve_distillation_arguments(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` with every ``None`` replaced by its :data:`DISTILLATION_DEFAULTS` value.

    Example:
        >>> resolve_distillation_arguments({"dkd_beta": None, "temperature": 2.0, "at_layers": None})
        {'dkd_beta': 8.0, 'temperature': 2.0, 'at_layers': None}
    """
    return {
        key: DISTILLATION_DEFAULTS[key] if value is None and key in DISTILLATION_DEFAULTS else value
        for key, value in given.items()
    }
