"""Evaluation helpers shared by the classification LightningModules.

Both :class:`~lt_transfer.TransferClassifier` and :class:`~lt_transfer.DomainAdaptationModule`
name their validation/test loaders after ``eval_names`` (their own hyper-parameter, else the
datamodule's attribute) and keep one accuracy metric per stage and loader in ``_metrics``.
"""

from __future__ import annotations

from lightning.pytorch import LightningModule
from torchmetrics.classification import MulticlassAccuracy

__all__ = ["eval_loader_name", "stage_accuracy"]


def eval_loader_name(module: LightningModule, dataloader_idx: int) -> str | None:
    """Name of evaluation loader ``dataloader_idx``, or ``None`` when no names are configured.

    Raises:
        ValueError: when fewer names than loaders are given.

    Example:
        >>> from lt_transfer import TransferClassifier
        >>> from lt_transfer.backbones import Backbone
        >>> from torch import nn
        >>> model = TransferClassifier(Backbone(nn.Linear(4, 4), 4), num_classes=2,
        ...                            eval_names=["source", "target"])
        >>> eval_loader_name(model, 1)
        'target'
    """
    names = module.hparams.eval_names
    if names is None and module._trainer is not None:
        names = getattr(module.trainer.datamodule, "eval_names", None)
    if names is None:
        return None
    if dataloader_idx >= len(names):
        raise ValueError(
            f"eval_names={list(names)} names {len(names)} dataloaders but got dataloader index "
            f"{dataloader_idx}; give one name per validation/test dataloader."
        )
    return names[dataloader_idx]


def stage_accuracy(module: LightningModule, stage: str, index: int) -> tuple[MulticlassAccuracy, str]:
    """The accuracy metric of ``stage`` and loader ``index``, created on first use.

    Returns the metric and its attribute path (for ``self.log(..., metric_attribute=...)``).

    Example:
        >>> from lt_transfer import TransferClassifier
        >>> from lt_transfer.backbones import Backbone
        >>> from torch import nn
        >>> model = TransferClassifier(Backbone(nn.Linear(4, 4), 4), num_classes=2)
        >>> stage_accuracy(model, "val", 1)[1]
        '_metrics.val_1'
    """
    key = f"{stage}_{index}"
    if key not in module._metrics:
        metric = MulticlassAccuracy(num_classes=module.hparams.num_classes, average="micro")
        module._metrics[key] = metric.to(module.device)
    return module._metrics[key], f"_metrics.{key}"
