"""TENT: entropy minimisation of the BatchNorm affine parameters, online over the test stream.

Wang, Shelhamer, Liu, Olshausen & Darrell, "Tent: Fully Test-Time Adaptation by Entropy
Minimization" (ICLR 2021). During ``trainer.test`` or ``trainer.predict`` the model's BatchNorm
layers normalise each batch with its own statistics (train mode), and before the model
predicts a batch the callback takes ``steps`` optimizer steps on the batch's mean prediction
entropy (:func:`~lt_transfer.losses.entropy_loss`), updating only the BatchNorm scales and
shifts, with its own optimizer (Adam, lr 1e-3 by default: the paper's setting for CIFAR).
Updates carry over from batch to batch (online adaptation). Unlike the paper, where the
prediction comes from the same forward pass as the update, the model's own ``test_step`` /
``predict_step`` predicts the batch after its update.

At the end of the run the parameters, running statistics, modes and ``requires_grad`` flags
are restored, unless ``keep=True`` (then the adapted scales and shifts stay, and the running
statistics have followed the test stream with the layers' momentum). Under DDP every process
adapts on its own share of the stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import OptimizerCallable

from lt_transfer.batches import Input
from lt_transfer.callbacks.test_time_adaptation._base import TestTimeAdaptation
from lt_transfer.callbacks.test_time_adaptation._batch_norm import BatchNormSnapshot, require_batch_norm
from lt_transfer.losses.entropy import entropy_loss

__all__ = ["TENT"]


def _ordinary_copy(x: Input) -> Input:
    """A copy usable by autograd (test batches are inference tensors inside ``trainer.test``)."""
    if isinstance(x, Mapping):
        return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in x.items()}
    return x.clone()


class TENT(TestTimeAdaptation):
    """Test-time entropy minimisation of the BatchNorm scales and shifts (Wang et al., ICLR 2021).

    Works with any LightningModule whose ``forward`` returns class logits and that has
    BatchNorm layers with affine parameters (see the module docstring for what happens).

    Args:
        optimizer: optimizer factory for the BatchNorm affine parameters (``torch.optim.Adam``:
            lr 1e-3).
        steps: optimizer steps per batch.
        keep: keep the adapted model after the run instead of restoring it.
        dataloader_idx: adapt on this test/predict loader only; ``None``: every loader.

    Raises:
        ValueError: at the start of the run, when the model has no BatchNorm layer with affine
            parameters; bad arguments at construction.

    Example:
        >>> import lightning.pytorch as pl
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from lt_transfer import DomainAdaptationModule
        >>> model = DomainAdaptationModule("lenet", method="source_only")
        >>> before = model.backbone.model.conv1[1].weight.clone()
        >>> trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
        ...                      enable_model_summary=False, callbacks=[TENT()])
        >>> data = DataLoader(TensorDataset(torch.randn(16, 3, 28, 28)), batch_size=8)
        >>> predictions = trainer.predict(model, data)
        >>> torch.equal(model.backbone.model.conv1[1].weight, before)  # restored after the run
        True
    """

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        steps: int = 1,
        keep: bool = False,
        dataloader_idx: int | None = None,
    ) -> None:
        super().__init__(keep=keep, dataloader_idx=dataloader_idx)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"TENT(steps={steps!r}) must be an int >= 1 (optimizer steps per test batch).")
        self.optimizer_factory = optimizer
        self.steps = steps
        self.last_entropy: float | None = None
        self._layers: list[torch.nn.modules.batchnorm._BatchNorm] = []
        self._params: list[torch.nn.Parameter] = []
        self._optimizer: torch.optim.Optimizer | None = None

    def begin(self, trainer: Trainer, pl_module: LightningModule, loaders: list[Any]) -> BatchNormSnapshot:
        """Record the BatchNorm layers and build the optimizer over their scales and shifts."""
        self._layers = require_batch_norm(pl_module, "TENT", affine=True)
        snapshot = BatchNormSnapshot(self._layers)
        self._params = [p for layer in self._layers for p in (layer.weight, layer.bias) if p is not None]
        with torch.inference_mode(False):
            for param in self._params:
                param.requires_grad_(True)
            self._optimizer = self.optimizer_factory(self._params)
        return snapshot

    def before_batch(self, pl_module: LightningModule, batch: Any, dataloader_idx: int) -> None:
        """``steps`` entropy-minimisation steps on the batch (BatchNorm on batch statistics)."""
        active = self.adapts(dataloader_idx)
        for layer in self._layers:
            layer.train(active)
        if not active:
            return
        assert self._optimizer is not None
        x = self.loader_input(pl_module, batch)
        with torch.inference_mode(False), torch.enable_grad():
            x = _ordinary_copy(x)
            for _ in range(self.steps):
                loss = entropy_loss(pl_module(x))
                grads = torch.autograd.grad(loss, self._params, allow_unused=True)
                for param, grad in zip(self._params, grads, strict=True):
                    param.grad = grad
                self._optimizer.step()
                self._optimizer.zero_grad(set_to_none=True)
        self.last_entropy = float(loss.detach())

    def finish(self) -> None:
        self._optimizer = None
        self._params = []
        self._layers = []
