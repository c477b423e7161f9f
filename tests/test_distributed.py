"""lt_transfer/_distributed.py: no process group lives on into interpreter shutdown.

A gloo process group alive at exit let its worker threads release the last collective's
tensors while the interpreter finalized; CPython ends such a thread inside a ``noexcept``
C++ destructor and the process aborts (SIGABRT; ``ddp_spawn`` workers after a finished fit).
``import lt_transfer`` registers an ``atexit`` handler that destroys the group first.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import lt_transfer
from lt_transfer._distributed import destroy_process_group_at_exit, install_exit_handler

ROOT = Path(__file__).resolve().parents[1]

# `check` is registered before `import lt_transfer`, so atexit (last in, first out) runs it
# after lt_transfer's handler, still before the interpreter starts finalizing.
EXIT_SCRIPT = """
import atexit, sys
import torch
import torch.distributed as dist

def check():
    print("group alive after the atexit handlers:", dist.is_initialized(), flush=True)

atexit.register(check)
import lt_transfer
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
dist.all_reduce(torch.ones(4))
"""


def test_import_registers_the_handler_once() -> None:
    assert lt_transfer.__name__ == "lt_transfer"
    assert install_exit_handler() is False  # import lt_transfer did it


def test_the_group_is_destroyed_before_interpreter_shutdown(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, str(tmp_path / "store")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "group alive after the atexit handlers: False" in result.stdout


def test_handler_destroys_an_initialized_group(tmp_path: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        tensor = torch.ones(3)
        dist.all_reduce(tensor)
        destroy_process_group_at_exit()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    destroy_process_group_at_exit()  # nothing left: a no-op
