"""The hook plumbing TENT and AdaBN share: adapt during ``trainer.test``/``trainer.predict``, then restore.

:class:`TestTimeAdaptation` runs :meth:`~TestTimeAdaptation.begin` when a test or predict run
starts, :meth:`~TestTimeAdaptation.before_batch` before each of its batches, and at its end
puts the BatchNorm layers back as they were (values unless ``keep=True``; modes always). A run
that fails puts everything back, ``keep`` or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from lt_transfer.batches import Input, input_to, split_batch
from lt_transfer.callbacks.test_time_adaptation._batch_norm import BatchNormSnapshot

__all__ = ["EvalStage", "TestTimeAdaptation"]

EvalStage = Literal["test", "predict"]


class TestTimeAdaptation(Callback):
    """Base class of the test-time adaptation callbacks (see the module docstring).

    Args:
        keep: keep the adapted parameters/statistics after the run instead of restoring them.
        dataloader_idx: adapt on this test/predict loader only (the others run with the model as
            it is at that point, BatchNorm in eval mode); ``None``: every loader.

    Example:
        >>> callback = TestTimeAdaptation(keep=False, dataloader_idx=1)
        >>> callback.adapts(1), callback.adapts(0)
        (True, False)
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, keep: bool = False, dataloader_idx: int | None = None) -> None:
        name = type(self).__name__
        if not isinstance(keep, bool):
            raise ValueError(f"{name}(keep={keep!r}) must be True or False.")
        index = dataloader_idx
        if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
            raise ValueError(f"{name}(dataloader_idx={index!r}) must be an int >= 0 or None (every loader).")
        self.keep = keep
        self.dataloader_idx = dataloader_idx
        self._snapshot: BatchNormSnapshot | None = None

    # -------------------------------------------------------------- subclass API
    def begin(self, trainer: Trainer, pl_module: LightningModule, loaders: list[Any]) -> BatchNormSnapshot:
        """Prepare the adaptation of a run over ``loaders``; return the snapshot of what may change."""
        raise NotImplementedError

    def before_batch(self, pl_module: LightningModule, batch: Any, dataloader_idx: int) -> None:
        """Adapt (or not) before the model sees ``batch`` of loader ``dataloader_idx``."""
        raise NotImplementedError

    def finish(self) -> None:
        """Drop what the run needed (optimizers, statistics)."""

    # ------------------------------------------------------------------ helpers
    def adapts(self, dataloader_idx: int) -> bool:
        """Whether batches of loader ``dataloader_idx`` are adapted on."""
        return self.dataloader_idx is None or dataloader_idx == self.dataloader_idx

    def loader_input(self, pl_module: LightningModule, batch: Any) -> Input:
        """The input of a batch, on the model's device (labels are never read)."""
        return input_to(split_batch(batch, type(self).__name__).x, pl_module.device)

    # -------------------------------------------------------------------- hooks
    def _start(self, trainer: Trainer, pl_module: LightningModule, stage: EvalStage) -> None:
        loaders = trainer.test_dataloaders if stage == "test" else trainer.predict_dataloaders
        loaders = list(loaders) if isinstance(loaders, Sequence) else [loaders]
        if self.dataloader_idx is not None and self.dataloader_idx >= len(loaders):
            raise ValueError(
                f"{type(self).__name__}(dataloader_idx={self.dataloader_idx}) but trainer.{stage} has "
                f"{len(loaders)} dataloader(s); give an index below {len(loaders)} or None."
            )
        self._snapshot = self.begin(trainer, pl_module, loaders)

    def _end(self) -> None:
        if self._snapshot is not None:
            self._snapshot.restore(values=not self.keep)
        self._snapshot = None
        self.finish()

    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module, "test")

    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module, "predict")

    @override
    def on_test_batch_start(
        self, trainer: Trainer, module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.before_batch(module, batch, dataloader_idx)

    @override
    def on_predict_batch_start(
        self, trainer: Trainer, module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.before_batch(module, batch, dataloader_idx)

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end()

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end()

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self._snapshot is not None:
            self._snapshot.restore()
        self._snapshot = None
        self.finish()
