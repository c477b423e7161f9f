"""load_teacher: a distillation teacher from a module, a Lightning checkpoint, a torchvision or timm spec.

:class:`~lt_transfer.DistillationModule` calls :func:`load_teacher` with its ``teacher``,
``teacher_weights`` and ``teacher_class`` arguments (messages name those). A
``"torchvision/<model>"`` teacher is the whole classifier, head included, built by
:func:`~lt_transfer.backbones.torchvision.load_torchvision_classifier`: its weights go
through the same resolver as a backbone's (:mod:`lt_transfer.backbones.weights`). A
``"timm/<model>"`` teacher likewise, by :func:`~lt_transfer.backbones.timm.load_timm_classifier`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lt_transfer.backbones.timm import load_timm_classifier
from lt_transfer.backbones.torchvision import load_torchvision_classifier
from lt_transfer.checkpoints import load_module

__all__ = ["load_teacher"]


def load_teacher(
    teacher: nn.Module | str,
    weights: str | None = None,
    teacher_class: str | None = None,
    trust_checkpoint: bool = False,
) -> nn.Module:
    """Resolve a teacher given as a module, a Lightning checkpoint path or a torchvision spec.

    Args:
        teacher: an ``nn.Module`` (returned as is); a ``.ckpt`` path of a LightningModule
            checkpoint (loaded with ``teacher_class.load_from_checkpoint``; the class comes from
            ``teacher_class`` or, for checkpoints written by ``lt-transfer``/LightningCLI, from
            the checkpoint itself); or ``"torchvision/<model>"`` / ``"timm/<model>"``: the
            *whole* classifier, head included, with ``weights``.
        weights: for timm specs: ``None``, a file or ``pkg://`` file of the full classifier.
            For torchvision specs: ``None``, a weights name (``"DEFAULT"``), a local state
            dict of the full classifier, or ``"pkg://<package>/<file>"`` (the rules of
            :func:`~lt_transfer.backbones.weights.resolve_weights`).
        teacher_class: dotted import path of the checkpoint's LightningModule class.
        trust_checkpoint: read a checkpoint teacher with ``weights_only=False`` (runs any code
            its pickle holds; warns). By default checkpoints are read weights-only, and one that
            needs more is refused with :class:`~lt_transfer.checkpoints.UnsafeCheckpointError`.

    Raises:
        ValueError: an argument that does not apply, an unknown class or spec, weights that
            do not fit.
        lt_transfer.checkpoints.CheckpointError: a corrupt, truncated or wrong-kind checkpoint,
            or (UnsafeCheckpointError) one that safe loading refuses.
        FileNotFoundError: a checkpoint or weights path that does not exist.

    Example:
        >>> from lt_transfer.resources import MOBILENET_V2_IMAGENET
        >>> teacher = load_teacher("torchvision/mobilenet_v2", weights=MOBILENET_V2_IMAGENET)
        >>> teacher.classifier[-1].out_features
        1000
    """
    if isinstance(teacher, nn.Module):
        if weights is not None or teacher_class is not None:
            raise ValueError(
                "DistillationModule(teacher=<nn.Module>): teacher_weights and teacher_class only apply to "
                "a spec string or a checkpoint path; load the weights into the module yourself."
            )
        return teacher
    if not isinstance(teacher, str):
        raise TypeError(
            f"DistillationModule(teacher=...) must be an nn.Module, a checkpoint path or a "
            f"'torchvision/<model>' or 'timm/<model>' spec, got {type(teacher).__name__}."
        )
    if teacher.startswith(("torchvision/", "timm/")):
        if teacher_class is not None:
            raise ValueError(f"DistillationModule(teacher_class=...) does not apply to teacher={teacher!r}.")
        loader = load_torchvision_classifier if teacher.startswith("torchvision/") else load_timm_classifier
        return loader(
            teacher,
            weights,
            caller="DistillationModule",
            name_argument="teacher",
            weights_argument="teacher_weights",
        )
    path = Path(teacher).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"DistillationModule(teacher={teacher!r}): not a file and not a 'torchvision/<model>' or "
            "'timm/<model>' spec. "
            "Pass a LightningModule checkpoint path, a spec, or an nn.Module."
        )
    if weights is not None:
        raise ValueError(
            "DistillationModule(teacher_weights=...) does not apply to a checkpoint teacher: the "
            "checkpoint holds the weights."
        )
    where = f"DistillationModule(teacher={teacher!r})"
    return load_module(
        path, teacher_class, where=where, argument="teacher_class", trust_checkpoint=trust_checkpoint
    )
