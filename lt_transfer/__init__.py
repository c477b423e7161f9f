"""lt_transfer: PyTorch Lightning modules and callbacks for transfer learning.

The public API in one place. Our own code imports ``transformers`` and ``peft`` only when a
text backbone or LoRA is built (note that torchmetrics, imported by Lightning itself, already
imports ``transformers`` whenever it is installed).

Importing the package registers one ``atexit`` handler: a torch.distributed process group
still alive at exit is destroyed before the interpreter shuts down (``_distributed.py`` says
why: gloo workers of ``ddp_spawn`` otherwise abort at exit now and then).
"""

from lt_transfer._distributed import install_exit_handler
from lt_transfer.backbones import Backbone, LayerGroup, LeNetBackbone, build_backbone
from lt_transfer.callbacks.domain_report import DomainShiftReport
from lt_transfer.callbacks.feature_cache import FeatureCache
from lt_transfer.callbacks.negative_transfer import NegativeTransferMonitor
from lt_transfer.callbacks.progressive_unfreezing import ProgressiveUnfreezing
from lt_transfer.data import (
    DigitsDataModule,
    DomainAdaptationDataModule,
    TextClassificationDataModule,
    TweetSentimentDataModule,
)
from lt_transfer.freezing import freeze, unfreeze
from lt_transfer.metrics import (
    DomainClassifierAccuracy,
    InformationMaximization,
    PredictionEntropy,
    ProxyADistance,
    proxy_a_distance,
)
from lt_transfer.modules import (
    DistillationModule,
    DomainAdaptationModule,
    TextClassifier,
    TransferClassifier,
)

__version__ = "0.1.0"

install_exit_handler()

__all__ = [
    "Backbone",
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
    "TextClassificationDataModule",
    "TextClassifier",
    "TransferClassifier",
    "TweetSentimentDataModule",
    "build_backbone",
    "freeze",
    "proxy_a_distance",
    "unfreeze",
]
