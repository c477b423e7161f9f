"""Self-contained, safely read checkpoints for lt_transfer's LightningModules.

:class:`SelfContainedCheckpoints` is mixed into :class:`~lt_transfer.modules._base.ClassificationModule`:

* ``load_from_checkpoint`` reads the file with :func:`lt_transfer.checkpoints.read_checkpoint`
  first (weights-only unless ``trust_checkpoint=True``; clear errors for corrupt, truncated or
  wrong-kind files), then builds the module with its backbones' *architecture only*
  (:func:`lt_transfer.backbones.architecture_only`): the checkpoint holds every weight, so the
  original pretrained file is never read and ``weights="DEFAULT"`` never downloads. A
  Hugging Face backbone is rebuilt from the model config stored in the checkpoint.
* Checkpoints record which constructor arguments they cannot hold (module objects such as a
  custom ``Backbone``, which are kept out of the hyper-parameters). Loading one without passing
  those arguments again is an error that names them, instead of a module silently built with
  the default backbone and a wall of missing keys.
* The class names of the training data (the datamodule's ``class_names``) are stored in the
  checkpoint and come back as :attr:`SelfContainedCheckpoints.class_names`, so predictions
  of a loaded model carry names (:class:`~lt_transfer.PredictionWriter`).
* Trainable-only checkpoints (``TextClassifier(save_trainable_only=True)``) hold only the
  trained weights by design: they are loaded onto the pretrained model, which is read as usual.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import IO, Any

from lightning.pytorch import LightningModule
from typing_extensions import Self

from lt_transfer._lightning_compat import attached_trainer, load_options
from lt_transfer.backbones import Backbone, architecture_only
from lt_transfer.checkpoints import CheckpointError, read_checkpoint

__all__ = ["CHECKPOINT_INFO_KEY", "SelfContainedCheckpoints"]

#: Key of lt_transfer's own entry in a checkpoint dict.
CHECKPOINT_INFO_KEY = "lt_transfer"
#: Constructor arguments that are rebuilt from defaults on load and never needed to restore weights.
_FACTORY_ARGUMENTS = frozenset({"optimizer", "scheduler"})


class SelfContainedCheckpoints(LightningModule):
    """``load_from_checkpoint`` that needs neither the pretrained file nor unsafe unpickling.

    Example:
        >>> import tempfile, os, torch
        >>> import lightning.pytorch as pl
        >>> from lt_transfer import TransferClassifier
        >>> path = os.path.join(tempfile.mkdtemp(), "weights.pth")
        >>> from torchvision.models import resnet18
        >>> torch.save(resnet18().state_dict(), path)
        >>> model = TransferClassifier("torchvision/resnet18", num_classes=3, weights=path)
        >>> trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
        >>> trainer.strategy.connect(model)
        >>> trainer.save_checkpoint(path.replace(".pth", ".ckpt"))
        >>> os.remove(path)  # the pretrained file is gone; the checkpoint still loads
        >>> loaded = TransferClassifier.load_from_checkpoint(path.replace(".pth", ".ckpt"))
        >>> loaded.backbone.pretrained, torch.equal(loaded.head.weight, model.head.weight)
        (True, True)
    """

    @property
    def class_names(self) -> list[str] | None:
        """Names of the classes, in output order: from the checkpoint this module was loaded from,
        else the attached datamodule's ``class_names``, else ``None``.

        Example:
            >>> from torch import nn
            >>> from lt_transfer import TransferClassifier
            >>> TransferClassifier(Backbone(nn.Linear(4, 4), 4), num_classes=2).class_names is None
            True
        """
        names = getattr(self, "_checkpoint_class_names", None)
        if names is None:
            trainer = attached_trainer(self)
            datamodule = trainer.datamodule if trainer is not None else None
            names = getattr(datamodule, "class_names", None)
        return None if names is None else [str(name) for name in names]

    def unsaved_arguments(self) -> list[str]:
        """Constructor arguments the hyper-parameters do not hold (module objects), factories aside.

        Example:
            >>> from torch import nn
            >>> from lt_transfer import TransferClassifier
            >>> TransferClassifier(Backbone(nn.Linear(4, 4), 4), num_classes=2).unsaved_arguments()
            ['backbone']
        """
        parameters = inspect.signature(type(self).__init__).parameters.values()
        return [
            p.name
            for p in parameters
            if p.name != "self"
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            and p.name not in self.hparams
            and p.name not in _FACTORY_ARGUMENTS
        ]

    def model_configs(self) -> dict[str, dict[str, Any]]:
        """Model configs of the backbones that need one to be rebuilt (Hugging Face models).

        Example:
            >>> from torch import nn
            >>> from lt_transfer import TransferClassifier
            >>> TransferClassifier(Backbone(nn.Linear(4, 4), 4), num_classes=2).model_configs()
            {}
        """
        configs = {}
        for module in self.modules():
            if isinstance(module, Backbone):
                config = module.model_config()
                if config is not None:
                    configs[module.name] = config
        return configs

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record what the checkpoint cannot hold, the configs to rebuild backbones, the class names."""
        checkpoint[CHECKPOINT_INFO_KEY] = {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "unsaved_arguments": self.unsaved_arguments(),
            "model_configs": self.model_configs(),
            "class_names": self.class_names,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the class names the checkpoint stored."""
        names = (checkpoint.get(CHECKPOINT_INFO_KEY) or {}).get("class_names")
        self._checkpoint_class_names = list(names) if names is not None else None

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path | IO[bytes],
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        *,
        trust_checkpoint: bool = False,
        **kwargs: Any,
    ) -> Self:
        """Load a checkpoint without the pretrained weight files and without unsafe unpickling.

        Args:
            checkpoint_path: the checkpoint file (or a binary file object).
            map_location: as Lightning's.
            hparams_file: as Lightning's.
            strict: as Lightning's.
            weights_only: Lightning's spelling of the opt-in: ``False`` is ``trust_checkpoint=True``.
            trust_checkpoint: read the file with ``weights_only=False`` (runs any code its
                pickle holds; warns). Never needed for checkpoints written by lt_transfer.
            **kwargs: constructor arguments that override the stored hyper-parameters; the
                arguments the checkpoint could not store (e.g. ``backbone=`` when the model was
                built from a ``Backbone`` object) are required here.

        Raises:
            lt_transfer.checkpoints.CheckpointError: a missing, corrupt, truncated or wrong-kind
                file, or arguments the checkpoint does not hold and that were not given.
            lt_transfer.checkpoints.UnsafeCheckpointError: a pickle that safe loading refuses.
        """
        where = f"{cls.__name__}.load_from_checkpoint"
        trust_checkpoint = trust_checkpoint or weights_only is False
        checkpoint = read_checkpoint(
            checkpoint_path, where=where, trust_checkpoint=trust_checkpoint, mmap=True
        )
        if not isinstance(checkpoint_path, (str, Path)) and hasattr(checkpoint_path, "seek"):
            checkpoint_path.seek(0)
        info = checkpoint.get(CHECKPOINT_INFO_KEY) or {}
        missing = [name for name in info.get("unsaved_arguments", []) if name not in kwargs]
        if missing:
            given = ", ".join(f"{name}=..." for name in missing)
            raise CheckpointError(
                f"{where}: the checkpoint {checkpoint_path} was written by a {cls.__name__} whose "
                f"{missing} were module objects, which checkpoints do not store; pass {given} (the same "
                "architecture) to load_from_checkpoint."
            )
        self_contained = not checkpoint.get("lt_transfer_trainable_only", False)
        options = {"map_location": map_location, "hparams_file": hparams_file, "strict": strict}
        options.update(load_options(not trust_checkpoint))
        with architecture_only(self_contained, info.get("model_configs")):
            return super().load_from_checkpoint(checkpoint_path, **options, **kwargs)
