"""Proxy A-distance: how far apart two domains are, as seen by a linear classifier.

Ben-David et al. ("Analysis of Representations for Domain Adaptation", NeurIPS 2006;
"A theory of learning from different domains", Machine Learning 2010) bound the target
error of a classifier by its source error plus the :math:`\\mathcal{H}`-divergence of the
two feature distributions. Its computable proxy trains a classifier to tell source from
target features and measures its held-out error :math:`\\epsilon`:

.. math::
    \\hat d_{\\mathcal A} = 2\\,(1 - 2\\epsilon)

0 means the domains are indistinguishable, 2 means perfectly separable. Glorot, Bordes &
Bengio (ICML 2011) and Ganin et al. (JMLR 2016) use it to compare representations before
and after adaptation.

Here the classifier is an L2-regularised logistic regression (scikit-learn) on
standardised features, trained on a random half of each domain and evaluated on the other
half; :math:`\\epsilon` is the *balanced* error (mean of the per-domain errors), so unequal
sample counts do not bias it. :math:`\\epsilon > 0.5` can only come from sampling noise,
so the distance is clamped at 0.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torchmetrics import Metric

from lt_transfer.metrics._states import concatenated

__all__ = ["MIN_SAMPLES", "ProxyADistance", "linear_domain_error", "proxy_a_distance"]


#: The fewest samples per domain the distance is computed from (half of them are held out).
MIN_SAMPLES = 4


def _check_features(source: torch.Tensor, target: torch.Tensor) -> None:
    if source.dim() != 2 or target.dim() != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(
            f"proxy A-distance needs (N, D) source and target features of the same width, got "
            f"{tuple(source.shape)} and {tuple(target.shape)}; flatten or pool the features first."
        )
    for name, x in (("source", source), ("target", target)):
        if len(x) < MIN_SAMPLES:
            raise ValueError(f"proxy A-distance needs at least {MIN_SAMPLES} {name} samples, got {len(x)}.")


def _split(n: int, test_fraction: float, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = torch.randperm(n, generator=generator).numpy()
    n_test = min(max(1, round(n * test_fraction)), n - 1)
    return order[n_test:], order[:n_test]


def linear_domain_error(
    source: torch.Tensor,
    target: torch.Tensor,
    test_fraction: float = 0.5,
    c: float = 1.0,
    seed: int = 0,
) -> float:
    """Held-out balanced error of a linear source-vs-target classifier.

    Args:
        source: ``(N_s, D)`` source features.
        target: ``(N_t, D)`` target features.
        test_fraction: share of each domain held out for measuring the error.
        c: inverse L2 regularisation strength of the logistic regression.
        seed: seed of the train/test split.

    Raises:
        ValueError: on mismatched shapes, fewer than 4 samples per domain, or bad arguments.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(100, 4, generator=g), torch.randn(100, 4, generator=g) + 5
        >>> linear_domain_error(a, b)
        0.0
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    _check_features(source, target)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction!r} must be in (0, 1).")
    if not c > 0:
        raise ValueError(f"c={c!r} (inverse regularisation) must be > 0.")
    generator = torch.Generator().manual_seed(seed)
    s = source.detach().double().cpu().numpy()
    t = target.detach().double().cpu().numpy()
    s_train, s_test = _split(len(s), test_fraction, generator)
    t_train, t_test = _split(len(t), test_fraction, generator)
    x_train = np.concatenate([s[s_train], t[t_train]])
    y_train = np.concatenate([np.ones(len(s_train)), np.zeros(len(t_train))])
    scaler = StandardScaler().fit(x_train)
    classifier = LogisticRegression(C=c, class_weight="balanced", max_iter=500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning on separable data is expected
        classifier.fit(scaler.transform(x_train), y_train)
    err_s = float(np.mean(classifier.predict(scaler.transform(s[s_test])) != 1))
    err_t = float(np.mean(classifier.predict(scaler.transform(t[t_test])) != 0))
    return 0.5 * (err_s + err_t)


def proxy_a_distance(
    source: torch.Tensor,
    target: torch.Tensor,
    test_fraction: float = 0.5,
    c: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """Proxy A-distance ``2 (1 - 2 eps)`` between two feature samples, in ``[0, 2]``.

    See :func:`linear_domain_error` for the arguments.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> same = proxy_a_distance(torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g))
        >>> far = proxy_a_distance(torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g) + 5)
        >>> bool(same < 0.3), float(far)
        (True, 2.0)
    """
    error = linear_domain_error(source, target, test_fraction, c, seed)
    return torch.tensor(max(0.0, 2.0 * (1.0 - 2.0 * error)), dtype=torch.float32)


class ProxyADistance(Metric):
    """Proxy A-distance of features collected over an epoch (lower = domains closer).

    ``update`` takes source features, target features or both (so it fits validation
    steps that see one domain per dataloader). Features are kept (``cat`` states, gathered
    from all processes under DDP); ``compute`` uses at most ``max_samples`` per domain
    (a seeded random subset), so the cost stays bounded.

    Args:
        max_samples: most samples per domain used by ``compute`` (``None``: all).
        test_fraction: share of each domain held out to measure the classifier's error.
        c: inverse L2 regularisation of the logistic regression.
        seed: seed of the subset and of the train/test split.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> metric = ProxyADistance()
        >>> metric.update(source=torch.randn(100, 3, generator=g))
        >>> metric.update(target=torch.randn(100, 3, generator=g) + 6)
        >>> metric.compute()
        tensor(2.)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(
        self,
        max_samples: int | None = 2000,
        test_fraction: float = 0.5,
        c: float = 1.0,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if max_samples is not None and max_samples < 4:
            raise ValueError(f"ProxyADistance(max_samples={max_samples!r}) must be >= 4 or None.")
        if not 0 < test_fraction < 1:
            raise ValueError(f"ProxyADistance(test_fraction={test_fraction!r}) must be in (0, 1).")
        if not c > 0:
            raise ValueError(f"ProxyADistance(c={c!r}) must be > 0.")
        self.max_samples = max_samples
        self.test_fraction = test_fraction
        self.c = c
        self.seed = seed
        self.add_state("source_features", [], dist_reduce_fx="cat")
        self.add_state("target_features", [], dist_reduce_fx="cat")

    def update(self, source: torch.Tensor | None = None, target: torch.Tensor | None = None) -> None:
        """Add ``(N, D)`` source features, target features, or both."""
        if source is None and target is None:
            raise ValueError("ProxyADistance.update needs source, target or both feature tensors.")
        if source is not None:
            self.source_features.append(source.detach().flatten(1).float())
        if target is not None:
            self.target_features.append(target.detach().flatten(1).float())

    def _subset(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        if self.max_samples is None or len(x) <= self.max_samples:
            return x
        generator = torch.Generator().manual_seed(self.seed + offset)
        return x[torch.randperm(len(x), generator=generator)[: self.max_samples].to(x.device)]

    def compute(self) -> torch.Tensor:
        """The proxy A-distance; NaN until both domains have at least 4 samples.

        The states are lists of batches in one process and single tensors after a DDP
        gather; :func:`~lt_transfer.metrics._states.concatenated` reads both.
        """
        source, target = concatenated(self.source_features), concatenated(self.target_features)
        if source is None or target is None:
            return torch.tensor(float("nan"))
        source, target = self._subset(source, 0), self._subset(target, 1)
        if len(source) < 4 or len(target) < 4:
            return torch.tensor(float("nan"))
        return proxy_a_distance(source, target, self.test_fraction, self.c, self.seed)
