"""Callbacks that work on any LightningModule."""

from lt_transfer.callbacks.bss import BSS
from lt_transfer.callbacks.delta import DELTA
from lt_transfer.callbacks.domain_report import DomainShiftReport
from lt_transfer.callbacks.feature_cache import FeatureCache, FeatureCacheMemoryError
from lt_transfer.callbacks.l2sp import L2SP
from lt_transfer.callbacks.negative_transfer import NegativeTransferMonitor
from lt_transfer.callbacks.prediction_writer import PredictionWriter
from lt_transfer.callbacks.progressive_unfreezing import ProgressiveUnfreezing
from lt_transfer.callbacks.target_validation import (
    DEFAULT_MONITOR,
    DEFAULT_VALIDATOR,
    VALIDATOR_MODES,
    TargetValidation,
)
from lt_transfer.callbacks.test_time_adaptation import TENT, AdaBN
from lt_transfer.callbacks.weight_interpolation import (
    InterpolationSweep,
    WeightInterpolation,
    interpolate_weights,
    interpolation_sweep,
    pretrained_state,
)

__all__: list[str] = [
    "AdaBN",
    "BSS",
    "DEFAULT_MONITOR",
    "DEFAULT_VALIDATOR",
    "DELTA",
    "DomainShiftReport",
    "FeatureCache",
    "FeatureCacheMemoryError",
    "InterpolationSweep",
    "L2SP",
    "NegativeTransferMonitor",
    "PredictionWriter",
    "ProgressiveUnfreezing",
    "TargetValidation",
    "VALIDATOR_MODES",
    "TENT",
    "WeightInterpolation",
    "interpolate_weights",
    "interpolation_sweep",
    "pretrained_state",
]
