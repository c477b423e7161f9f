"""LightningModules."""

from lt_transfer.modules.classifier import TransferClassifier

__all__ = ["TransferClassifier"]
