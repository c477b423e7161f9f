"""AdaBN: BatchNorm statistics re-estimated on the target data before test or predict.

Li, Wang, Shi, Hou & Liu, "Adaptive Batch Normalization for practical domain adaptation"
(Pattern Recognition 2018; ICLR 2017 workshop "Revisiting Batch Normalization for Practical
Domain Adaptation"): the weights learned on the source stay; only the BatchNorm running means
and variances are replaced by those of the target domain. When a ``trainer.test`` or
``trainer.predict`` run starts, the callback passes once over each loader it adapts on (no
gradient; BatchNorm layers in train mode with ``momentum=None``, so their running statistics
become the cumulative average over the pass; everything else in eval mode), and evaluates each
loader with its own statistics. The pass reads the loader's data set in order through a loader
of its own (same batch size and collate function), so the run's own iteration is untouched;
under DDP every process passes over the whole data set and gets the same statistics.

At the end of the run the original statistics come back, unless ``keep=True`` (then those of
the last adapted loader stay).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, IterableDataset

from lt_transfer.callbacks.test_time_adaptation._base import TestTimeAdaptation
from lt_transfer.callbacks.test_time_adaptation._batch_norm import (
    BatchNormSnapshot,
    load_tensors,
    require_batch_norm,
)

__all__ = ["AdaBN"]


class AdaBN(TestTimeAdaptation):
    """Re-estimate BatchNorm running statistics on each test/predict loader before it is evaluated.

    Works with any LightningModule that has BatchNorm layers with running statistics
    (``track_running_stats=True``); see the module docstring.

    Args:
        keep: keep the re-estimated statistics after the run instead of restoring them.
        dataloader_idx: re-estimate on this test/predict loader only (the others keep the
            original statistics); ``None``: every loader, each with its own.
        max_batches: batches of each loader the estimate uses (``None``: all).

    Raises:
        ValueError: at the start of the run, when the model has no BatchNorm layer with running
            statistics; bad arguments at construction.

    Example:
        >>> import lightning.pytorch as pl
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from lt_transfer import DomainAdaptationModule
        >>> model = DomainAdaptationModule("lenet", method="source_only")
        >>> trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
        ...                      enable_model_summary=False, callbacks=[AdaBN(keep=True)])
        >>> data = DataLoader(TensorDataset(torch.randn(16, 3, 28, 28) + 3), batch_size=8)
        >>> _ = trainer.predict(model, data)
        >>> model.backbone.model.conv1[1].running_mean.abs().sum().item() > 0  # target statistics kept
        True
    """

    def __init__(
        self, keep: bool = False, dataloader_idx: int | None = None, max_batches: int | None = None
    ) -> None:
        super().__init__(keep=keep, dataloader_idx=dataloader_idx)
        limit = max_batches
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"AdaBN(max_batches={limit!r}) must be an int >= 1 or None (the whole loader).")
        self.max_batches = max_batches
        self._layers: list[torch.nn.modules.batchnorm._BatchNorm] = []
        self._statistics: dict[int, list[dict[str, torch.Tensor]]] = {}
        self._current: int | None = None

    def begin(self, trainer: Trainer, pl_module: LightningModule, loaders: list[Any]) -> BatchNormSnapshot:
        """Estimate the statistics of every adapted loader (one pass each)."""
        self._layers = require_batch_norm(pl_module, "AdaBN", running_stats=True)
        snapshot = BatchNormSnapshot(self._layers)
        self._statistics = {-1: snapshot.statistics()}  # -1: the original statistics
        for index, loader in enumerate(loaders):
            if self.adapts(index):
                self._statistics[index] = self._estimate(pl_module, _in_order(loader))
                snapshot.restore()  # back to the original before the next loader
        self._current = None
        return snapshot

    @torch.no_grad()
    def _estimate(self, pl_module: LightningModule, loader: Any) -> list[dict[str, torch.Tensor]]:
        for layer in self._layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average over the pass
            layer.train()
        seen = 0
        for batch_idx, batch in enumerate(loader):
            if self.max_batches is not None and batch_idx >= self.max_batches:
                break
            pl_module(self.loader_input(pl_module, batch))
            seen += 1
        if seen == 0:
            raise ValueError("AdaBN: a test/predict loader yields no batches; there is nothing to estimate.")
        statistics = []
        for layer in self._layers:
            assert layer.running_mean is not None and layer.running_var is not None
            mean, var = layer.running_mean.clone(), layer.running_var.clone()
            statistics.append({"running_mean": mean, "running_var": var})
        return statistics

    def before_batch(self, pl_module: LightningModule, batch: Any, dataloader_idx: int) -> None:
        """Load the statistics of this batch's loader (the original ones for a loader not adapted on)."""
        index = dataloader_idx if dataloader_idx in self._statistics else -1
        if index != self._current:
            for layer, values in zip(self._layers, self._statistics[index], strict=True):
                load_tensors(layer, values)
                layer.eval()
            self._current = index

    def finish(self) -> None:
        self._layers = []
        self._statistics = {}
        self._current = None


def _in_order(loader: Any) -> Any:
    """A loader over the same data, in order, independent of the run's own iterator.

    Lightning wraps a predict loader's batch sampler in an object whose iteration state is
    shared by every iterator of that loader, so iterating it again would cut the run short.
    """
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return loader
    size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None) or 1
    options = {"collate_fn": loader.collate_fn, "num_workers": loader.num_workers}
    return DataLoader(loader.dataset, batch_size=size, shuffle=False, **options)
