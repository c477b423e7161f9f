"""LightningModules."""

from lt_transfer.modules.classifier import TransferClassifier
from lt_transfer.modules.distillation import DistillationModule
from lt_transfer.modules.domain_adaptation import DomainAdaptationModule
from lt_transfer.modules.text_classifier import TextClassifier

__all__ = [
    "DistillationModule",
    "DomainAdaptationModule",
    "TextClassifier",
    "TransferClassifier",
]
