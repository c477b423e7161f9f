"""Float32 computation for the losses: promote half-precision inputs, switch autocast off.

The losses added for the regularisation, domain-adaptation and distillation methods compute
in float32 even under AMP: reductions of squares, matrix products and SVDs lose too much in
float16/bfloat16 (and ``torch.linalg`` refuses half precision).
"""

from __future__ import annotations

import torch

__all__ = ["float32", "no_autocast"]


def float32(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` as float32 when it is float16/bfloat16, unchanged otherwise (float64 stays).

    Example:
        >>> float32(torch.ones(2, dtype=torch.bfloat16)).dtype
        torch.float32
    """
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def no_autocast(x: torch.Tensor) -> torch.autocast:
    """A context that disables autocast on ``x``'s device type, so matmuls stay in float32.

    Example:
        >>> with torch.autocast("cpu", dtype=torch.bfloat16), no_autocast(torch.ones(1)):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.float32
    """
    return torch.autocast(device_type=x.device.type, enabled=False)
