"""Reading checkpoint files safely, with errors that say what is wrong with the file.

Every checkpoint lt_transfer reads (a module's own ``load_from_checkpoint``, a teacher
checkpoint, the CLI's ``--ckpt_path``) goes through :func:`read_checkpoint`:

* **no pickle execution by default**: the file is read with ``torch.load(weights_only=True)``,
  which only rebuilds tensors and plain data. A checkpoint that holds other Python objects is
  refused with :class:`UnsafeCheckpointError`, which names the opt-in
  (``trust_checkpoint=True``); opting in warns once per file and says why. Checkpoints written
  by lt_transfer's own modules never need it (their hyper-parameters are plain data).
* **clear errors for broken files** (:class:`CheckpointError`): a missing, empty, truncated or
  otherwise corrupt file, or a file of the wrong kind (a bare state dict where a Lightning
  checkpoint is expected) is named with what is wrong with it, instead of torch's
  ``EOFError``/``KeyError``/"re-run with weights_only=False" (wrong advice for a corrupt file).

Writing is Lightning's: ``ModelCheckpoint`` and ``Trainer.save_checkpoint`` save into a memory
buffer and then write the file inside an fsspec transaction (a temporary file moved into place
on success), so a crash while saving leaves the previous ``last.ckpt`` intact
(``tests/test_checkpoints.py`` checks it).
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch import LightningModule

from lt_transfer._lightning_compat import load_options
from lt_transfer._load_errors import describe_load_failure

__all__ = ["CheckpointError", "UnsafeCheckpointError", "checkpoint_class", "load_module", "read_checkpoint"]

_WARNED_TRUSTED: set[str] = set()


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt, truncated or of the wrong kind.

    Example:
        >>> issubclass(CheckpointError, ValueError)
        True
    """


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle holds Python objects that weights-only loading refuses.

    Example:
        >>> issubclass(UnsafeCheckpointError, CheckpointError)
        True
    """


def _describe(source: str | Path | IO[bytes]) -> str:
    return str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__}>"


def read_checkpoint(
    source: str | Path | IO[bytes],
    *,
    where: str = "lt_transfer",
    trust_checkpoint: bool = False,
    lightning: bool = True,
    map_location: str | torch.device | None = "cpu",
    mmap: bool = False,
) -> dict[str, Any]:
    """Read a checkpoint file: safely unless trusted, with clear errors for broken files.

    Args:
        source: a file path or a binary file object.
        where: who reads it, for messages (e.g. ``"TransferClassifier.load_from_checkpoint"``).
        trust_checkpoint: read with ``weights_only=False`` (runs any code the pickle holds);
            warns once per file. Only for files whose author you trust.
        lightning: require a Lightning checkpoint (a dict with ``"state_dict"``).
        map_location: where tensors are loaded.
        mmap: map the tensors from the file instead of reading them (cheap validation).

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: missing, empty, truncated, corrupt, or not a Lightning checkpoint.
        UnsafeCheckpointError: the pickle holds objects weights-only loading refuses.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "bad.ckpt")
        >>> _ = open(path, "wb").write(b"not a checkpoint")
        >>> read_checkpoint(path, where="demo")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lt_transfer.checkpoints.CheckpointError: demo: .../bad.ckpt is not a readable checkpoint: ...
    """
    name = _describe(source)
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise CheckpointError(f"{where}: no checkpoint file at {name}.")
        size = path.stat().st_size
        if size == 0:
            raise CheckpointError(f"{where}: {name} is empty (0 bytes): an interrupted save or copy?")
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{where}: {name} is not a readable checkpoint: torch checkpoints are zip archives and this "
                f"file ({size} bytes) is not one (corrupt, truncated, or a different kind of file)."
            )
        opened: str | Path | IO[bytes] = path
    else:
        opened = source
        mmap = False
    if trust_checkpoint and name not in _WARNED_TRUSTED:
        _WARNED_TRUSTED.add(name)
        warnings.warn(
            f"{where}: loading {name} with trust_checkpoint=True (torch.load(weights_only=False)): its "
            "pickle may run arbitrary code. Do this only for files whose author you trust.",
            UserWarning,
            stacklevel=2,
        )
    try:
        checkpoint = torch.load(
            opened, map_location=map_location, weights_only=not trust_checkpoint, mmap=mmap or None
        )
    except pickle.UnpicklingError as error:
        refused_object, reason = describe_load_failure(error)
        if refused_object:
            raise UnsafeCheckpointError(
                f"{where}: {name} holds Python objects that safe (weights-only) loading refuses "
                f"({reason}); loading it could run arbitrary code. Pass trust_checkpoint=True only "
                "if you trust who wrote the file."
            ) from error
        raise CheckpointError(
            f"{where}: {name} is not a readable checkpoint: it is corrupt (an interrupted save or copy?): "
            f"{reason}. trust_checkpoint=True would not help; save it again or use another copy."
        ) from error
    except (RuntimeError, EOFError, KeyError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(
            f"{where}: {name} is not a readable checkpoint: it is corrupt or truncated (an interrupted "
            f"save or copy?): {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    if lightning and not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict)):
        kind = type(checkpoint).__name__
        if isinstance(checkpoint, dict):
            kind = f"dict with keys {list(checkpoint)[:5]}"
        raise CheckpointError(
            f"{where}: {name} is not a Lightning checkpoint (it holds a {kind}, no 'state_dict'). A bare "
            "state dict of weights goes to weights=... (or model.load_state_dict); a checkpoint comes from "
            "ModelCheckpoint or Trainer.save_checkpoint."
        )
    return checkpoint


def _import_module_class(class_path: str, label: str) -> type[LightningModule]:
    example = "e.g. 'lt_transfer.TransferClassifier'"
    module_name, _, class_name = class_path.rpartition(".")
    try:
        if not module_name:
            raise ImportError("not a dotted path 'package.module.ClassName'")
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(
            f"{label}={class_path!r} cannot be imported ({error}); pass the dotted import path of a "
            f"LightningModule class, {example}."
        ) from error
    if not (isinstance(cls, type) and issubclass(cls, LightningModule)):
        raise ValueError(f"{label}={class_path!r} is not a LightningModule class; pass one, {example}.")
    return cls


def checkpoint_class(
    checkpoint: dict[str, Any], module_class: str | None = None, *, where: str, argument: str
) -> type[LightningModule]:
    """The LightningModule class a checkpoint belongs to.

    ``module_class`` when given; else the class lt_transfer's modules record in their checkpoints;
    else the class LightningCLI records (``_class_path``); else an error naming ``argument``.

    Example:
        >>> checkpoint_class({"lt_transfer": {"class_path": "lt_transfer.TransferClassifier"}},
        ...                  where="demo", argument="module_class").__name__
        'TransferClassifier'
    """
    label = f"{where}: {argument}"
    if module_class is not None:
        return _import_module_class(module_class, label)
    recorded = (checkpoint.get("lt_transfer") or {}).get("class_path")
    recorded = recorded or (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    if recorded is None:
        raise ValueError(
            f"{where}: the checkpoint does not record its LightningModule class (lt_transfer's modules and "
            f"LightningCLI do); pass {argument}='package.module.ClassName'."
        )
    return _import_module_class(str(recorded), f"{where}: the recorded class")


def load_module(
    path: str | Path,
    module_class: str | None = None,
    *,
    where: str,
    argument: str = "module_class",
    trust_checkpoint: bool = False,
    **kwargs: Any,
) -> LightningModule:
    """Read a checkpoint safely and rebuild its LightningModule (on the CPU).

    The file goes through :func:`read_checkpoint` first, so a corrupt or unsafe file is refused
    before Lightning opens it; lt_transfer's modules are then rebuilt without their pretrained
    weight files (the checkpoint holds the weights).

    Args:
        path: the checkpoint file.
        module_class: dotted class path; ``None``: the class the checkpoint records.
        where: the caller, for messages.
        argument: the caller's name for ``module_class``, for messages.
        trust_checkpoint: see :func:`read_checkpoint`.
        **kwargs: arguments for ``load_from_checkpoint`` (e.g. module objects a checkpoint
            cannot hold).

    Raises:
        CheckpointError: see :func:`read_checkpoint`.
        ValueError: no class recorded and none given, or a class path that is not a LightningModule.
    """
    checkpoint = read_checkpoint(path, where=where, trust_checkpoint=trust_checkpoint, mmap=True)
    cls = checkpoint_class(checkpoint, module_class, where=where, argument=argument)
    if "trust_checkpoint" in inspect.signature(cls.load_from_checkpoint).parameters:  # lt_transfer's modules
        return cls.load_from_checkpoint(path, map_location="cpu", trust_checkpoint=trust_checkpoint, **kwargs)
    # another LightningModule: the file was checked above (weights-only unless trusted), so
    # Lightning's own loader meets nothing it could execute unless the user trusted the file
    return cls.load_from_checkpoint(path, map_location="cpu", **load_options(not trust_checkpoint), **kwargs)
