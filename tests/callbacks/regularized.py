"""A plug-in module for the regularisation callbacks, and its loss-form twin.

``Plain`` knows nothing of lt_transfer (its own attribute names ``encoder``/``classifier``).
``LossForm`` adds the same penalties to the loss it returns, computed with the loss functions
of :mod:`lt_transfer.losses`: the callbacks must give the gradients of that loss.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer.losses import bss_loss, delta_loss, l2sp_loss, parameter_snapshot

DELTA_LAYERS = ["2", "4"]  # ReLU outputs after the first (with BatchNorm) and the second conv


def data(n: int = 32, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.randn(n, 3, 6, 6, generator=generator), torch.randint(0, 3, (n,), generator=generator)
    )


def loader(n: int = 32, batch_size: int = 8, shuffle: bool = False) -> DataLoader:
    return DataLoader(data(n), batch_size=batch_size, shuffle=shuffle)


def trainer(tmp_path: Path, callbacks: list[pl.Callback], **kwargs: Any) -> pl.Trainer:
    defaults: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        deterministic=True,
    )
    defaults.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **defaults)


class Plain(pl.LightningModule):
    """Conv encoder with BatchNorm + linear classifier; SGD with momentum over trainable parameters."""

    def __init__(self, seed: int = 0, lr: float = 0.1) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 6, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(6, 3)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9)


class LossForm(Plain):
    """``Plain`` whose returned loss includes the penalties (the reference for the callbacks)."""

    def __init__(
        self,
        l2sp: tuple[float, float] | None = None,
        delta: float | None = None,
        bss: tuple[float, int] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        self.l2sp, self.delta, self.bss = l2sp, delta, bss
        self.snapshot: dict[str, torch.Tensor] = {}
        self.frozen: list[nn.Module] = []  # a list keeps the copy out of the module's children

    def on_fit_start(self) -> None:
        self.snapshot = parameter_snapshot(self.encoder.named_parameters(prefix="encoder"))
        frozen = copy.deepcopy(self.encoder).requires_grad_(False).eval()
        for module in frozen.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.0
        self.frozen = [frozen]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        maps, pretrained_maps = {}, {}
        out = x
        for name, layer in self.encoder.named_children():
            out = layer(out)
            maps[name] = out
        loss = F.cross_entropy(self.classifier(out), y)
        if self.delta is not None:
            frozen = self.frozen[0]
            frozen.get_submodule("1").train(self.encoder.get_submodule("1").training)
            with torch.no_grad():
                ref = x
                for name, layer in frozen.named_children():
                    ref = layer(ref)
                    pretrained_maps[name] = ref
            loss = loss + self.delta * sum(delta_loss(maps[n], pretrained_maps[n]) for n in DELTA_LAYERS)
        if self.bss is not None:
            loss = loss + bss_loss(out, k=self.bss[1], eta=self.bss[0])
        if self.l2sp is not None:
            named = [
                *self.encoder.named_parameters(prefix="encoder"),
                *self.classifier.named_parameters(prefix="classifier"),
            ]
            head = [n for n, _ in self.classifier.named_parameters(prefix="classifier")]
            loss = loss + l2sp_loss(named, self.snapshot, head, alpha=self.l2sp[0], beta=self.l2sp[1])
        return loss


class GradRecorder(pl.Callback):
    """The gradients each optimizer step uses (after every other callback's hook)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor | None]] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        self.steps.append(
            {n: None if p.grad is None else p.grad.detach().clone() for n, p in pl_module.named_parameters()}
        )


class GatherParams(pl.Callback):
    """Max |rank 0 - rank 1| of all parameters after each epoch (DDP), written by rank 0."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.diffs: list[float] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        flat = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        gathered = pl_module.all_gather(flat)
        self.diffs.append(float((gathered[0] - gathered[1]).abs().max()))
        if trainer.global_rank == 0:
            Path(self.out).write_text(json.dumps(self.diffs))


class DataModule(pl.LightningDataModule):
    """The same data as :func:`loader` for training and validation (WeightInterpolation needs one)."""

    def train_dataloader(self) -> DataLoader:
        return loader()

    def val_dataloader(self) -> DataLoader:
        return loader(16)

    def test_dataloader(self) -> DataLoader:
        return loader(16)
