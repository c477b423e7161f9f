"""lt_transfer: PyTorch Lightning modules and callbacks for transfer learning.

The public API in one place. Our own code imports ``transformers`` and ``peft`` only when a
text backbone or LoRA is built (note that torchmetrics, imported by Lightning itself, already
imports ``transformers`` whenever it is installed).
"""

from lt_transfer.backbones import (
    Backbone,
    LayerGroup,
    LeNetBackbone,
    Preprocessing,
    SmallCNNBackbone,
    build_backbone,
)
from lt_transfer.callbacks.domain_report import DomainShiftReport
from lt_transfer.callbacks.feature_cache import FeatureCache
from lt_transfer.callbacks.negative_transfer import NegativeTransferMonitor
from lt_transfer.callbacks.prediction_writer import PredictionWriter
from lt_transfer.callbacks.progressive_unfreezing import ProgressiveUnfreezing
from lt_transfer.callbacks.target_validation import TargetValidation
from lt_transfer.callbacks.test_time_adaptation import TENT, AdaBN
from lt_transfer.data import (
    DigitsDataModule,
    DomainAdaptationDataModule,
    ImageFolderDataModule,
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
    NonFiniteLossError,
    SourceFreeAdaptationModule,
    TextClassifier,
    TransferClassifier,
)
from lt_transfer.ranking import Candidate, RankingTable, rank_models

__version__ = "0.1.0"

__all__ = [
    "AdaBN",
    "Backbone",
    "BatchNuclearNorm",
    "Candidate",
    "ClassSilhouette",
    "DeepEmbeddedValidation",
    "DigitsDataModule",
    "DistillationModule",
    "DomainAdaptationDataModule",
    "DomainAdaptationModule",
    "DomainClassifierAccuracy",
    "DomainShiftReport",
    "FeatureCache",
    "ImageFolderDataModule",
    "InformationMaximization",
    "LayerGroup",
    "LeNetBackbone",
    "NegativeTransferMonitor",
    "NonFiniteLossError",
    "PredictionEntropy",
    "PredictionWriter",
    "Preprocessing",
    "ProgressiveUnfreezing",
    "ProxyADistance",
    "RankingTable",
    "SmallCNNBackbone",
    "SoftNeighborhoodDensity",
    "TargetValidation",
    "SourceFreeAdaptationModule",
    "TENT",
    "TextClassificationDataModule",
    "TextClassifier",
    "TransferClassifier",
    "TweetSentimentDataModule",
    "build_backbone",
    "freeze",
    "proxy_a_distance",
    "rank_models",
    "unfreeze",
]
