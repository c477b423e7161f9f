"""What series go through before they become a batch: missing values, z-normalisation, one length.

Functions on lists of float arrays ``(channels, length_i)`` (one per series), shared by the
time-series data modules:

* :func:`fill_missing`: the NaN policy: ``None`` raises (naming the series), a number
  replaces NaN, ``"interpolate"`` fills linearly between neighbours (ends: the nearest value);
* :func:`z_normalize`: each channel of each series to mean 0, standard deviation 1 (a constant
  channel becomes 0);
* :func:`fit_length`: one length for all: ``"pad"`` appends zeros (after z-normalisation, the
  mean), ``"resample"`` interpolates linearly, ``"error"`` refuses series of another length;
* :func:`stack_series`: the ``(N, C, L)`` float32 tensor, with an error naming the lengths
  when they differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

__all__ = ["FillPolicy", "LengthMode", "fill_missing", "fit_length", "stack_series", "z_normalize"]

#: What to do with NaN values: ``None`` (raise), a number, or ``"interpolate"``.
FillPolicy = float | Literal["interpolate"] | None
#: How series are brought to one length.
LengthMode = Literal["pad", "resample", "error"]


def _interpolate(channel: np.ndarray) -> np.ndarray:
    known = ~np.isnan(channel)
    positions = np.arange(len(channel))
    return np.interp(positions, positions[known], channel[known])


def fill_missing(
    series: Sequence[np.ndarray],
    fill: FillPolicy = None,
    where: str = "fill_missing",
    names: Sequence[str] = (),
) -> list[np.ndarray]:
    """Apply the NaN policy to every series (arrays of any shape ``(..., length)``).

    Args:
        series: the series.
        fill: ``None``: raise on the first NaN; a number: replace NaN by it; ``"interpolate"``:
            linear interpolation along time (the ends take the nearest value).
        where: the caller, for messages (e.g. ``"TimeSeriesClassificationDataModule"``).
        names: names of the series for messages (default: their positions).

    Raises:
        ValueError: a NaN with ``fill=None``; a channel without any value to interpolate from;
            an unknown policy.

    Example:
        >>> import numpy as np
        >>> fill_missing([np.array([[1.0, np.nan, 3.0]])], "interpolate")[0].tolist()
        [[1.0, 2.0, 3.0]]
        >>> fill_missing([np.array([[1.0, np.nan]])], 0.0)[0].tolist()
        [[1.0, 0.0]]
        >>> fill_missing([np.array([[1.0, np.nan]])], where="f", names=["s1"])
        Traceback (most recent call last):
        ...
        ValueError: f: series 's1' has 1 missing value(s) (NaN); pass fill=<number> or fill='interpolate' \
to fill them, or clean the data.
    """
    number = isinstance(fill, (int, float)) and not isinstance(fill, bool)
    if fill is not None and fill != "interpolate" and not number:
        raise ValueError(f"{where}(fill={fill!r}) must be None (raise on NaN), a number or 'interpolate'.")
    result = []
    for index, values in enumerate(series):
        missing = np.isnan(values)
        if not missing.any():
            result.append(values)
            continue
        name = names[index] if index < len(names) else index
        if fill is None:
            raise ValueError(
                f"{where}: series {name!r} has {int(missing.sum())} missing value(s) (NaN); pass "
                "fill=<number> or fill='interpolate' to fill them, or clean the data."
            )
        if fill != "interpolate":
            result.append(np.where(missing, float(fill), values))
            continue
        flat = values.reshape(-1, values.shape[-1])
        if np.isnan(flat).all(axis=-1).any():
            raise ValueError(
                f"{where}: series {name!r} has a channel without any value; fill='interpolate' needs at "
                "least one; use fill=<number> or drop the series."
            )
        result.append(np.stack([_interpolate(channel) for channel in flat]).reshape(values.shape))
    return result


def z_normalize(values: np.ndarray) -> np.ndarray:
    """Each channel (last axis = time) to mean 0 and standard deviation 1; a constant one to 0.

    Example:
        >>> import numpy as np
        >>> z_normalize(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])).round(4).tolist()
        [[-1.2247, 0.0, 1.2247], [0.0, 0.0, 0.0]]
    """
    mean = values.mean(axis=-1, keepdims=True)
    std = values.std(axis=-1, keepdims=True)
    return (values - mean) / np.where(std > 0, std, 1.0)


def fit_length(
    series: Sequence[np.ndarray], length: int, mode: LengthMode = "pad", where: str = "fit_length"
) -> list[np.ndarray]:
    """Bring every series ``(C, L_i)`` to ``(C, length)``.

    Args:
        series: the series.
        length: the target length.
        mode: ``"pad"``: zeros appended (a longer series is an error); ``"resample"``: linear
            interpolation over the same span (first and last values kept); ``"error"``: every
            series must already have ``length`` points.
        where: the caller, for messages.

    Raises:
        ValueError: a series longer than ``length`` with ``"pad"``, one of another length with
            ``"error"``, an unknown mode, a length below 1.

    Example:
        >>> import numpy as np
        >>> fit_length([np.array([[1.0, 2.0]])], 4, "pad")[0].tolist()
        [[1.0, 2.0, 0.0, 0.0]]
        >>> fit_length([np.array([[0.0, 3.0]])], 4, "resample")[0].tolist()
        [[0.0, 1.0, 2.0, 3.0]]
    """
    if mode not in ("pad", "resample", "error"):
        raise ValueError(f"{where}(length_mode={mode!r}) must be 'pad', 'resample' or 'error'.")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"{where}(length={length!r}) must be an int >= 1.")
    result = []
    for index, values in enumerate(series):
        current = values.shape[-1]
        if current == length:
            result.append(values)
        elif mode == "resample":
            old = np.linspace(0.0, 1.0, current) if current > 1 else np.zeros(1)
            new = np.linspace(0.0, 1.0, length)
            result.append(np.stack([np.interp(new, old, channel) for channel in values]))
        elif mode == "pad" and current < length:
            result.append(np.pad(values, ((0, 0), (0, length - current))))
        else:
            fix = "length_mode='resample'" if mode == "pad" else "length_mode='pad' or 'resample'"
            raise ValueError(
                f"{where}: series {index} has {current} points, not length={length}; use a larger length "
                f"or {fix}."
            )
    return result


def stack_series(series: Sequence[np.ndarray], where: str = "stack_series") -> torch.Tensor:
    """Stack equal-length series ``(C, L)`` into a float32 tensor ``(N, C, L)``.

    Raises:
        ValueError: series of different lengths or channel counts (one batch needs one shape).

    Example:
        >>> import numpy as np
        >>> stack_series([np.zeros((2, 5)), np.ones((2, 5))]).shape
        torch.Size([2, 2, 5])
        >>> stack_series([np.zeros((1, 5)), np.ones((1, 7))], "f")
        Traceback (most recent call last):
        ...
        ValueError: f: series of different shapes (channels, length) [(1, 5), (1, 7)] cannot share a \
batch; pad or resample them to one length (length=..., length_mode='pad' | 'resample').
    """
    shapes = sorted({tuple(s.shape) for s in series})
    if len(shapes) > 1:
        raise ValueError(
            f"{where}: series of different shapes (channels, length) {shapes[:5]} cannot share a batch; pad "
            "or resample them to one length (length=..., length_mode='pad' | 'resample')."
        )
    if not series:
        raise ValueError(f"{where}: no series to stack.")
    return torch.from_numpy(np.stack(series).astype(np.float32))
