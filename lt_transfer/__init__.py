"""lt_transfer: PyTorch Lightning modules and callbacks for transfer learning.

The public API in one place. Our own code imports ``transformers`` and ``peft`` only when a
text backbone or LoRA is built (note that torchmetrics, imported by Lightning itself, already
imports ``transformers`` whenever it is installed).
"""

from lt_transfer.backbones import Backbone, LayerGroup, LeNetBackbone, build_backbone
from lt_transfer.callbacks.domain_report import DomainShiftReport
from lt_transfer.callbacks.feature_cache import FeatureCache
from lt_transfer.callbacks.negative_transfer import NegativeTransferMonitor
from lt_transfer.callbacks.progressive_unfreezing import ProgressiveUnfreezing
from lt_transfer.callbacks.test_time_adaptation import TENT, AdaBN
from lt_transfer.data import (
    DigitsDataModule,
    DomainAdaptationDataModule,
    TextClassificationDataModule,
    TweetSentimentDataModule,
)
from lt_transfer.freezing import freeze, unfreeze
from lt_transfer.metrics import (
    BatchNuclearNorm,
    ClassSilhouette,
    DeepEmbeddedValidation,
    DomainClassifierAccuracy,
    InformationMaximization,
    PredictionEntropy,
    ProxyADistance,
    SoftNeighborhoodDensity,
    proxy_a_distance,
)
from lt_transfer.modules import (
    DistillationModule,
    DomainAdaptationModule,
    SourceFreeAdaptationModule,
    TextClassifier,
    TransferClassifier,
)

__version__ = "0.1.0"

__all__ = [
    "AdaBN",
    "Backbone",
    "BatchNuclearNorm",
    "ClassSilhouette",
    "DeepEmbeddedValidation",
    "DigitsDataModule",
    "DistillationModule",
    "DomainAdaptationDataModule",
    "DomainAdaptationModule",
    "DomainClassifierAccuracy",
    "DomainShiftReport",
    "FeatureCache",
    "InformationMaximization",
    "LayerGroup",
    "LeNetBackbone",
    "NegativeTransferMonitor",
    "PredictionEntropy",
    "ProgressiveUnfreezing",
    "ProxyADistance",
    "SoftNeighborhoodDensity",
    "SourceFreeAdaptationModule",
    "TENT",
    "TextClassificationDataModule",
    "TextClassifier",
    "TransferClassifier",
    "TweetSentimentDataModule",
    "build_backbone",
    "freeze",
    "proxy_a_distance",
    "unfreeze",
]
