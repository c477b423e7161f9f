"""Linear-probe accuracy on a held-out slice: the baseline every transferability score must beat.

A logistic regression (L2-regularised, scikit-learn's lbfgs, on standardised features)
is fitted on a stratified, seeded part of the labelled target sample and scored on the
rest: the accuracy a frozen-backbone fine-tune would get, at the cost of one small fit.
It is what "linear evaluation" of representations measures (e.g. Kornblith, Shlens & Le,
"Do Better ImageNet Models Transfer Better?", CVPR 2019). Higher is better.
"""

from __future__ import annotations

import warnings

from lt_transfer.ranking._inputs import ArrayLike, as_features, as_labels, stratified_split

__all__ = ["linear_probe_accuracy"]


def linear_probe_accuracy(
    features: ArrayLike, labels: ArrayLike, test_fraction: float = 0.25, c: float = 1.0, seed: int = 0
) -> float:
    """Held-out accuracy of a logistic regression on ``(N, D)`` features (higher is better).

    Args:
        features: ``(N, D)`` features of the labelled target samples.
        labels: ``(N,)`` class indices ``0..C-1`` (at least 2 samples per class).
        test_fraction: share of each class held out.
        c: inverse L2 regularisation strength.
        seed: seed of the split.

    Raises:
        ValueError: ``c <= 0``, a class with fewer than 2 samples, or the errors of the other
            scores (NaN/Inf, single class, ...).

    Example:
        >>> import numpy as np
        >>> features = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
        >>> linear_probe_accuracy(features, np.array([0, 0, 0, 1, 1, 1]))
        1.0
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if not c > 0:
        raise ValueError(f"linear_probe_accuracy(c={c!r}) must be > 0 (inverse regularisation strength).")
    f = as_features(features, "linear_probe_accuracy")
    y, num_classes = as_labels(labels, len(f), "linear_probe_accuracy")
    train, test = stratified_split(y, num_classes, test_fraction, seed, "linear_probe_accuracy")
    x, y = f.numpy(), y.numpy()
    scaler = StandardScaler().fit(x[train])
    classifier = LogisticRegression(C=c, max_iter=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning on separable features is expected
        classifier.fit(scaler.transform(x[train]), y[train])
    return float((classifier.predict(scaler.transform(x[test])) == y[test]).mean())
