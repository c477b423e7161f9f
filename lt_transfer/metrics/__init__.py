"""Target-label-free validation metrics (torchmetrics) and domain-distance measures."""

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
from lt_transfer.metrics.information_maximization import InformationMaximization, information_maximization
from lt_transfer.metrics.prediction_entropy import PredictionEntropy, prediction_entropy
from lt_transfer.metrics.proxy_a_distance import ProxyADistance, linear_domain_error, proxy_a_distance
from lt_transfer.metrics.soft_neighborhood_density import SoftNeighborhoodDensity, soft_neighborhood_density

__all__ = [
    "BNMLoss",
    "BatchNuclearNorm",
    "ClassSilhouette",
    "DeepEmbeddedValidation",
    "DomainClassifierAccuracy",
    "InformationMaximization",
    "PredictionEntropy",
    "ProxyADistance",
    "SoftNeighborhoodDensity",
    "batch_nuclear_norm",
    "bnm_loss",
    "class_silhouette",
    "deep_embedded_validation",
    "density_ratio_weights",
    "dev_risk",
    "domain_classifier_accuracy",
    "information_maximization",
    "linear_domain_error",
    "prediction_entropy",
    "proxy_a_distance",
    "soft_neighborhood_density",
]
