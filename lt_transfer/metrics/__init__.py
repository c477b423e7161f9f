"""Target-label-free validation metrics (torchmetrics) and domain-distance measures."""

from lt_transfer.metrics.domain_classifier_accuracy import (
    DomainClassifierAccuracy,
    domain_classifier_accuracy,
)
from lt_transfer.metrics.information_maximization import InformationMaximization, information_maximization
from lt_transfer.metrics.prediction_entropy import PredictionEntropy, prediction_entropy
from lt_transfer.metrics.proxy_a_distance import ProxyADistance, linear_domain_error, proxy_a_distance

__all__ = [
    "DomainClassifierAccuracy",
    "InformationMaximization",
    "PredictionEntropy",
    "ProxyADistance",
    "domain_classifier_accuracy",
    "information_maximization",
    "linear_domain_error",
    "prediction_entropy",
    "proxy_a_distance",
]
