"""The torch.distributed process group is destroyed before the interpreter shuts down.

Lightning destroys the default process group at exit only for NCCL. A gloo group (CPU
``ddp``, ``ddp_spawn``) stays alive until the interpreter exits, and its worker threads may
still be releasing the tensors of the last collective. Releasing a tensor that Python created
takes the GIL; CPython ends a thread that asks for the GIL while the interpreter finalizes
(``pthread_exit``), and that unwinds through ``ProcessGroupGloo::AsyncWork``'s ``noexcept``
destructor: ``std::terminate``, "terminate called without an active exception", SIGABRT. In
a ``ddp_spawn`` worker that exits right after a finished fit, Lightning's launcher then
reports ``process N terminated with signal SIGABRT`` and ``fit`` raises, although training
completed.

``import lt_transfer`` registers :func:`destroy_process_group_at_exit` with ``atexit``
(:func:`install_exit_handler`). ``atexit`` handlers run before the interpreter starts
finalizing, so destroying the group there lets its threads finish and joins them while
Python is intact. It does nothing in a process without a process group.
"""

from __future__ import annotations

import atexit

import torch.distributed as dist

__all__ = ["destroy_process_group_at_exit", "install_exit_handler"]

_installed = False


def destroy_process_group_at_exit() -> None:
    """Destroy the default process group if this process has one (the ``atexit`` handler).

    Example:
        >>> destroy_process_group_at_exit()  # no process group: nothing to do
        >>> dist.is_initialized()
        False
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def install_exit_handler() -> bool:
    """Register :func:`destroy_process_group_at_exit` with ``atexit`` once per process.

    Returns whether it was registered by this call.

    Example:
        >>> install_exit_handler()  # already done by ``import lt_transfer``
        False
    """
    global _installed
    if _installed:
        return False
    atexit.register(destroy_process_group_at_exit)
    _installed = True
    return True
