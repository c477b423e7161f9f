"""lt_transfer: PyTorch Lightning modules and callbacks for transfer learning.

The public API in one place. Our own code imports ``transformers`` and ``peft`` only when a
text backbone or LoRA is built (note that torchmetrics, imported by Lightning itself, already
imports ``transformers`` whenever it is installed).

Importing the package registers one ``atexit`` handler: a torch.distributed process group
still alive at exit is destroyed before the interpreter shuts down (``_distributed.py`` says
why: gloo workers of ``ddp_spawn`` otherwise abort at exit now and then).
"""

from lt_transfer._distributed import install_exit_handler
from lt_transfer.backbones import (
    Backbone,
    FCNBackbone,
    InceptionTimeBackbone,
    LayerGroup,
    LeNetBackbone,
    Preprocessing,
    ResNet1DBackbone,
    SmallCNNBackbone,
    build_backbone,
)
from lt_transfer.callbacks.bss import BSS
from lt_transfer.callbacks.delta import DELTA
from lt_transfer.callbacks.domain_report import DomainShiftReport
from lt_transfer.callbacks.feature_cache import FeatureCache, FeatureCacheMemoryError
from lt_transfer.callbacks.l2sp import L2SP
from lt_transfer.callbacks.negative_transfer import NegativeTransferMonitor
from lt_transfer.callbacks.prediction_writer import PredictionWriter
from lt_transfer.callbacks.progressive_unfreezing import ProgressiveUnfreezing
from lt_transfer.callbacks.target_validation import TargetValidation
from lt_transfer.callbacks.test_time_adaptation import TENT, AdaBN
from lt_transfer.callbacks.weight_interpolation import WeightInterpolation, interpolation_sweep
from lt_transfer.data import (
    DigitsDataModule,
    DomainAdaptationDataModule,
    FashionMNISTDataModule,
    ForecastingDataModule,
    ImageFolderDataModule,
    TextClassificationDataModule,
    TimeSeriesClassificationDataModule,
    TweetSentimentDataModule,
    TweetShiftDataModule,
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
    TransferForecaster,
)
from lt_transfer.ranking import Candidate, RankingTable, rank_models

__version__ = "0.1.0"

install_exit_handler()

__all__ = [
    "AdaBN",
    "BSS",
    "Backbone",
    "BatchNuclearNorm",
    "Candidate",
    "ClassSilhouette",
    "DELTA",
    "DeepEmbeddedValidation",
    "DigitsDataModule",
    "DistillationModule",
    "DomainAdaptationDataModule",
    "DomainAdaptationModule",
    "DomainClassifierAccuracy",
    "DomainShiftReport",
    "FashionMNISTDataModule",
    "FCNBackbone",
    "FeatureCache",
    "FeatureCacheMemoryError",
    "ForecastingDataModule",
    "ImageFolderDataModule",
    "InceptionTimeBackbone",
    "InformationMaximization",
    "L2SP",
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
    "ResNet1DBackbone",
    "SmallCNNBackbone",
    "SoftNeighborhoodDensity",
    "TargetValidation",
    "SourceFreeAdaptationModule",
    "TENT",
    "TextClassificationDataModule",
    "TextClassifier",
    "TimeSeriesClassificationDataModule",
    "TransferClassifier",
    "TransferForecaster",
    "TweetSentimentDataModule",
    "TweetShiftDataModule",
    "WeightInterpolation",
    "build_backbone",
    "freeze",
    "interpolation_sweep",
    "proxy_a_distance",
    "rank_models",
    "unfreeze",
]
