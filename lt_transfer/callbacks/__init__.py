"""Callbacks that work on any LightningModule."""

from lt_transfer.callbacks.domain_report import DomainShiftReport
from lt_transfer.callbacks.feature_cache import FeatureCache, FeatureCacheMemoryError
from lt_transfer.callbacks.negative_transfer import NegativeTransferMonitor
from lt_transfer.callbacks.prediction_writer import PredictionWriter
from lt_transfer.callbacks.progressive_unfreezing import ProgressiveUnfreezing
from lt_transfer.callbacks.target_validation import VALIDATOR_MODES, TargetValidation
from lt_transfer.callbacks.test_time_adaptation import TENT, AdaBN

__all__: list[str] = [
    "AdaBN",
    "DomainShiftReport",
    "FeatureCache",
    "FeatureCacheMemoryError",
    "NegativeTransferMonitor",
    "PredictionWriter",
    "ProgressiveUnfreezing",
    "TargetValidation",
    "VALIDATOR_MODES",
    "TENT",
]
