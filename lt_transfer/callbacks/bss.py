"""BSS: batch spectral shrinkage of the backbone's features, as a callback for any module.

Chen et al., "Catastrophic Forgetting Meets Negative Transfer: Batch Spectral Shrinkage for
Safe Transfer Learning" (NeurIPS 2019); the penalty is :func:`lt_transfer.losses.bss_loss`,
:math:`\\eta \\sum_{i=1}^{k} \\sigma_{-i}^2` of the batch feature matrix (the backbone's pooled
``(N, D)`` output on each training forward). Its gradient with respect to the features is added
during backward, which is exactly the gradient of ``loss + penalty`` for any module, under DDP
(each rank shrinks its own batch, as the loss form would) and AMP (the SVD runs in float32):
see :mod:`lt_transfer.callbacks._regularization`.

``k`` must be smaller than the batch size: it is checked against the training loader's
``batch_size`` when training starts. A shorter batch (the last one of an epoch) with at most
``k`` samples has no ``k`` smallest singular values to shrink apart from all of them: it is
trained without the penalty, with a warning (``drop_last=True`` avoids it).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from typing_extensions import override

from lt_transfer.callbacks._regularization import ActivationPenalty, find_module
from lt_transfer.losses.bss import BSSLoss

__all__ = ["BSS"]


class BSS(ActivationPenalty):
    """Shrink the ``k`` smallest singular values of the batch features (BSS).

    Args:
        eta: strength :math:`\\eta` (the paper: 0.001).
        k: how many of the smallest singular values to shrink (the paper: 1); must be below the
            batch size and the feature width.
        backbone: attribute path on the LightningModule of the module whose output, pooled
            ``(N, D)`` features, is shrunk.

    Raises:
        ValueError: bad ``eta``/``k`` (in ``__init__``); an unknown ``backbone`` (at ``setup``);
            ``k`` at least the training loader's batch size (when training starts); features
            that are not ``(N, D)`` or ``k`` at least their width (at the first step).

    Example:
        >>> import lightning.pytorch as pl
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from lt_transfer import Backbone, TransferClassifier
        >>> model = TransferClassifier(Backbone(nn.Linear(5, 3), 3, pretrained=True), num_classes=3)
        >>> data = DataLoader(TensorDataset(torch.randn(12, 5), torch.arange(12) % 3), batch_size=6)
        >>> trainer = pl.Trainer(max_steps=2, callbacks=[BSS(eta=0.001, k=1)], logger=False,
        ...                      enable_checkpointing=False, enable_progress_bar=False,
        ...                      enable_model_summary=False)
        >>> trainer.fit(model, data)
        >>> sorted(k for k in trainer.logged_metrics if k.startswith("bss"))
        ['bss/penalty']
        >>> BSS(k=8).check_batch_size(4)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: BSS(k=8) must be smaller than the batch size 4...
    """

    def __init__(self, eta: float = 0.001, k: int = 1, backbone: str = "backbone") -> None:
        super().__init__(backbone, "bss")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"BSS(k={k!r}) must be an int >= 1 (the paper uses k=1).")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta >= 0:
            raise ValueError(f"BSS(eta={eta!r}) must be a number >= 0 (the paper uses 0.001).")
        self.loss = BSSLoss(k=k, eta=eta)
        self.k = k
        self.eta = float(eta)
        self._warned_short_batch = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(backbone=self.backbone, k=self.k)

    def check_batch_size(self, batch_size: int) -> None:
        """Raise when ``batch_size`` leaves no ``k`` smallest singular values to shrink."""
        if batch_size <= self.k:
            raise ValueError(
                f"BSS(k={self.k}) must be smaller than the batch size {batch_size}: a batch of N samples "
                "has at most N singular values, and shrinking all of them only penalises the feature "
                f"norm. Use a batch size above {self.k} or a smaller k (the paper uses k=1)."
            )

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        module = find_module(pl_module, self.backbone, "backbone", "BSS")
        self.remove_hooks()
        self.handles.append(module.register_forward_hook(self._penalise))

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loader = trainer.train_dataloader
        batch_size = getattr(loader, "batch_size", None)
        if isinstance(batch_size, int):
            self.check_batch_size(batch_size)

    def _penalise(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not self.active:
            return
        if not isinstance(output, torch.Tensor) or output.ndim != 2:
            shape = (
                f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
            )
            raise ValueError(
                f"BSS(backbone={self.backbone!r}) shrinks the singular values of pooled (N, D) batch "
                f"features, but the module returns a {shape}; point backbone at a module that "
                "returns them (e.g. the backbone of a TransferClassifier)."
            )
        if len(output) <= self.k:
            if not self._warned_short_batch:
                self._warned_short_batch = True
                rank_zero_warn(
                    f"BSS(k={self.k}): a training batch of {len(output)} samples (the last of an epoch?) "
                    "has no k smallest singular values to shrink; it is trained without the BSS penalty. "
                    "Use drop_last=True in the training loader to avoid such batches."
                )
            return
        self.add_penalty(output, self.loss)
