"""LightningModules: one per file; the classifiers are built on the shared skeleton of ``_base.py``."""

from lt_transfer.modules._nan_policy import NonFiniteLossError
from lt_transfer.modules.classifier import TransferClassifier
from lt_transfer.modules.distillation import DistillationModule
from lt_transfer.modules.domain_adaptation import DomainAdaptationModule
from lt_transfer.modules.forecaster import TransferForecaster
from lt_transfer.modules.source_free import SourceFreeAdaptationModule
from lt_transfer.modules.text_classifier import TextClassifier

__all__ = [
    "DistillationModule",
    "DomainAdaptationModule",
    "NonFiniteLossError",
    "SourceFreeAdaptationModule",
    "TextClassifier",
    "TransferClassifier",
    "TransferForecaster",
]
