"""The method-specific arguments of DomainAdaptationModule: their defaults, who uses them, checks.

An argument that only some methods use defaults to ``None``: ``None`` means the value in
:data:`METHOD_DEFAULTS` for a method that uses it, and giving any value to a method that does
not use it is an error (:func:`check_method_arguments`), so a configuration never carries a
setting that silently does nothing.
"""

from __future__ import annotations

import math
from typing import Any, Literal

__all__ = [
    "ADAPTATION_METHODS",
    "AdaptationMethod",
    "CDANMap",
    "METHOD_DEFAULTS",
    "check_method_arguments",
    "resolve_method_arguments",
]

AdaptationMethod = Literal["dann", "cdan", "mmd", "coral", "mcc", "self_training", "source_only"]
#: The methods of :class:`~lt_transfer.DomainAdaptationModule`, in the order the docs list them.
ADAPTATION_METHODS: tuple[str, ...] = ("dann", "cdan", "mmd", "coral", "mcc", "self_training", "source_only")
#: CDAN's conditioning map: the paper's rule, the full multilinear map, or the randomised one.
CDANMap = Literal["auto", "multilinear", "randomized"]

#: Values of the method-specific arguments when they are ``None`` (and the method uses them).
METHOD_DEFAULTS: dict[str, Any] = {
    "trade_off": 1.0,
    "trade_off_on": "loss",
    "discriminator_hidden": 256,
    "discriminator_depth": 2,
    "mmd_kernel_multipliers": (0.25, 0.5, 1.0, 2.0, 4.0),
    "mmd_estimator": "unbiased",
    "entropy_conditioning": True,
    "cdan_map": "auto",
    "randomized_dim": 1024,
    "mcc_temperature": 2.5,
    "pseudo_label_threshold": 0.95,
    "class_balanced_thresholds": False,
}

_WITH_TARGET_TERM = ("dann", "cdan", "mmd", "coral", "mcc", "self_training")
#: The methods that use each method-specific argument (``mcc_temperature`` also goes with ``mcc_weight``).
_USED_BY: dict[str, tuple[str, ...]] = {
    "trade_off": _WITH_TARGET_TERM,
    "trade_off_on": ("dann", "cdan"),
    "discriminator_hidden": ("dann", "cdan"),
    "discriminator_depth": ("dann", "cdan"),
    "mmd_kernel_multipliers": ("mmd",),
    "mmd_estimator": ("mmd",),
    "entropy_conditioning": ("cdan",),
    "cdan_map": ("cdan",),
    "randomized_dim": ("cdan",),
    "mcc_weight": ("dann", "cdan", "mmd", "coral", "self_training"),
    "mcc_temperature": ("mcc",),
    "pseudo_label_threshold": ("self_training",),
    "class_balanced_thresholds": ("self_training",),
}

_UNUSED_GROUPS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("discriminator_hidden", "discriminator_depth"), "DANN and CDAN only"),
    (("trade_off_on",), "DANN and CDAN only"),
    (("mmd_kernel_multipliers", "mmd_estimator"), "MMD only"),
    (("entropy_conditioning", "cdan_map", "randomized_dim"), "CDAN only"),
    (("pseudo_label_threshold", "class_balanced_thresholds"), "self_training only"),
    (
        ("mcc_weight",),
        "an MCC term added to dann, cdan, mmd, coral or self_training; method='mcc' weighs MCC with "
        "trade_off, source_only forwards no target batch",
    ),
    (("mcc_temperature",), "MCC only: method='mcc' or an mcc_weight"),
    (("trade_off",), "no alignment term in source_only"),
)


def _uses(method: str, key: str, given: dict[str, Any]) -> bool:
    if key == "mcc_temperature" and given.get("mcc_weight") is not None:
        return True
    return method in _USED_BY[key]


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check_choice(name: str, key: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value is not None and value not in choices:
        raise ValueError(f"{name}({key}={value!r}) must be one of {list(choices)}.")


def check_method_arguments(name: str, method: str, given: dict[str, Any]) -> None:
    """Raise for a method-specific argument given to a method that does not use it, or a bad value.

    Args:
        name: the module's class name, for messages.
        method: the chosen method.
        given: every method-specific argument as passed (``None`` = not given).

    Raises:
        ValueError: naming the argument, the value and the fix.

    Example:
        >>> check_method_arguments("Module", "coral", {"mmd_estimator": "linear"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Module(method='coral') does not use mmd_kernel_multipliers/mmd_estimator (MMD only; ...
    """
    unused = []
    for keys, why in _UNUSED_GROUPS:
        passed = [
            f"{key}={given[key]!r}"
            for key in keys
            if given.get(key) is not None and not _uses(method, key, given)
        ]
        if passed:
            unused.append(f"{'/'.join(keys)} ({why}; got {', '.join(passed)})")
    if unused:
        raise ValueError(
            f"{name}(method={method!r}) does not use {', '.join(unused)}; remove them (leave them None) "
            "or choose the method that uses them."
        )
    for key in ("trade_off", "mcc_weight"):
        value = given.get(key)
        if value is not None and not (_is_number(value) and value >= 0):
            raise ValueError(f"{name}({key}={value!r}) must be a finite number >= 0.")
    _check_choice(name, "trade_off_on", given.get("trade_off_on"), ("loss", "reversal"))
    _check_choice(name, "mmd_estimator", given.get("mmd_estimator"), ("unbiased", "biased", "linear"))
    _check_choice(name, "cdan_map", given.get("cdan_map"), ("auto", "multilinear", "randomized"))
    for key in ("entropy_conditioning", "class_balanced_thresholds"):
        _check_choice(name, key, given.get(key), (True, False))
    for key in ("discriminator_hidden", "discriminator_depth", "randomized_dim"):
        value = given.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}({key}={value!r}) must be an int >= 1.")
    if given.get("randomized_dim") is not None and given.get("cdan_map") == "multilinear":
        raise ValueError(
            f"{name}(randomized_dim={given['randomized_dim']!r}) does not apply with cdan_map='multilinear' "
            "(the full map is num_features * num_classes wide); use cdan_map='randomized' or 'auto'."
        )
    multipliers = given.get("mmd_kernel_multipliers")
    if multipliers is not None and (not multipliers or any(not m > 0 for m in multipliers)):
        raise ValueError(f"{name}(mmd_kernel_multipliers={multipliers!r}) must be non-empty and all > 0.")
    temperature = given.get("mcc_temperature")
    if temperature is not None and not (_is_number(temperature) and temperature > 0):
        raise ValueError(f"{name}(mcc_temperature={temperature!r}) must be a number > 0 (the paper: 2.5).")
    threshold = given.get("pseudo_label_threshold")
    if threshold is not None and not (_is_number(threshold) and 0 < threshold < 1):
        raise ValueError(
            f"{name}(pseudo_label_threshold={threshold!r}) must lie in (0, 1): the confidence a target "
            "prediction needs to become a pseudo-label (FixMatch: 0.95)."
        )


def resolve_method_arguments(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` with every ``None`` replaced by its :data:`METHOD_DEFAULTS` value (``mcc_weight`` stays).

    Example:
        >>> resolve_method_arguments({"trade_off": None, "mcc_weight": None})
        {'trade_off': 1.0, 'mcc_weight': None}
    """
    return {
        key: METHOD_DEFAULTS[key] if value is None and key in METHOD_DEFAULTS else value
        for key, value in given.items()
    }
