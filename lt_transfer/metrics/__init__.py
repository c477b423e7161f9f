"""Target-label-free validation metrics (torchmetrics), how well they select checkpoints (regret,
Spearman correlation), domain-distance measures, and forecast accuracy (MASE, sMAPE) with the
reference forecasts it is compared with."""

from lt_transfer.metrics.batch_nuclear_norm import BatchNuclearNorm, BNMLoss, batch_nuclear_norm, bnm_loss
from lt_transfer.metrics.class_silhouette import ClassSilhouette, class_silhouette
from lt_transfer.metrics.deep_embedded_validation import (
    DeepEmbeddedValidation,
    deep_embedded_validation,
    density_ratio_weights,
    dev_risk,
)
from lt_transfer.metrics.domain_classifier_accuracy import (
    DomainClassifierAccuracy,
    domain_classifier_accuracy,
)
from lt_transfer.metrics.forecast_baselines import drift_forecast, naive_forecast, seasonal_naive_forecast
from lt_transfer.metrics.forecasting import SMAPE, MeanAbsoluteScaledError, mase, mase_scale, smape
from lt_transfer.metrics.information_maximization import InformationMaximization, information_maximization
from lt_transfer.metrics.prediction_entropy import PredictionEntropy, prediction_entropy
from lt_transfer.metrics.proxy_a_distance import ProxyADistance, linear_domain_error, proxy_a_distance
from lt_transfer.metrics.selection import selected_checkpoints, selection_regret, spearman_correlation
from lt_transfer.metrics.soft_neighborhood_density import SoftNeighborhoodDensity, soft_neighborhood_density

__all__ = [
    "BNMLoss",
    "BatchNuclearNorm",
    "ClassSilhouette",
    "DeepEmbeddedValidation",
    "DomainClassifierAccuracy",
    "InformationMaximization",
    "MeanAbsoluteScaledError",
    "PredictionEntropy",
    "ProxyADistance",
    "SMAPE",
    "SoftNeighborhoodDensity",
    "batch_nuclear_norm",
    "bnm_loss",
    "class_silhouette",
    "deep_embedded_validation",
    "density_ratio_weights",
    "dev_risk",
    "domain_classifier_accuracy",
    "drift_forecast",
    "information_maximization",
    "linear_domain_error",
    "mase",
    "mase_scale",
    "naive_forecast",
    "prediction_entropy",
    "proxy_a_distance",
    "seasonal_naive_forecast",
    "selected_checkpoints",
    "selection_regret",
    "smape",
    "soft_neighborhood_density",
    "spearman_correlation",
]
