"""LightningModules."""

from lt_transfer.modules.classifier import TransferClassifier
from lt_transfer.modules.distillation import DistillationModule, load_teacher

__all__ = ["DistillationModule", "TransferClassifier", "load_teacher"]
