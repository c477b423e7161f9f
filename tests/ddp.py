"""Two-process DDP inside a test: the processes are spawned once and run ``strategy="ddp"`` trainers.

Lightning's ``ddp`` strategy, launched by hand as a cluster launcher would launch it, lets one
spawn run several trainers (each ``ddp_spawn`` trainer spawns its own processes, about 10 s
each on the 2-core development machine). A worker is ``worker(rank, out_dir, *args)``; it
writes what the test compares into ``out_dir`` (one file per rank).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.multiprocessing as mp

WORLD_SIZE = 2


def free_port() -> int:
    """A TCP port nobody listens on now (for ``MASTER_PORT``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, port: int, worker: Callable[..., None], out: str, args: tuple[Any, ...]) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(WORLD_SIZE),
        NODE_RANK="0",
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    torch.manual_seed(0)  # a spawned process starts unseeded
    worker(rank, out, *args)


def run_two_ranks(worker: Callable[..., None], out: Path, *args: Any) -> None:
    """Run ``worker(rank, str(out), *args)`` in two processes that form one DDP group."""
    mp.spawn(_entry, args=(free_port(), worker, str(out), args), nprocs=WORLD_SIZE, join=True)


def ddp_trainer(**kwargs: Any) -> pl.Trainer:
    """A quiet two-process CPU ``ddp`` trainer (inside :func:`run_two_ranks`)."""
    options: dict[str, Any] = dict(
        accelerator="cpu",
        devices=WORLD_SIZE,
        strategy="ddp",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return pl.Trainer(**options)
