"""What the benchmark scripts share: a quiet CPU Trainer.

Each benchmark builds its Trainers from :func:`quiet_cpu_trainer` and adds only what it needs
(epochs or steps, validation cadence, callbacks), so the common options are written once.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

#: The options every benchmark Trainer starts from: CPU, no logger, no checkpoints, no progress
#: bar, no model summary (the scripts print what they measure themselves).
QUIET_CPU_TRAINER: dict[str, Any] = {
    "accelerator": "cpu",
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


def quiet_cpu_trainer(**options: Any) -> pl.Trainer:
    """A Trainer with :data:`QUIET_CPU_TRAINER`'s options; ``options`` add to them or override them.

    Example:
        >>> quiet_cpu_trainer(max_steps=3).max_steps
        3
    """
    return pl.Trainer(**{**QUIET_CPU_TRAINER, **options})
