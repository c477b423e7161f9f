"""LightningModules."""

from lt_transfer.modules.classifier import TransferClassifier
from lt_transfer.modules.distillation import DistillationModule, load_teacher
from lt_transfer.modules.domain_adaptation import DomainAdaptationModule, LeNetBackbone
from lt_transfer.modules.text_classifier import TextClassifier

__all__ = [
    "DistillationModule",
    "DomainAdaptationModule",
    "LeNetBackbone",
    "TextClassifier",
    "TransferClassifier",
    "load_teacher",
]
