"""DomainShiftReport: how far apart are the source and target features, before and after training?

The report has two parts:

* the **proxy A-distance** (PAD, Ben-David et al. 2006/2010; see
  :mod:`lt_transfer.metrics.proxy_a_distance`) between source and target feature vectors:
  0 = a linear classifier cannot tell the domains apart, 2 = perfectly separable;
* a **2-D embedding plot** of the same features (PCA, and t-SNE — van der Maaten & Hinton,
  JMLR 2008 — through scikit-learn), coloured by domain and by class, as in the DANN paper's
  figures (Ganin et al., JMLR 2016). It is saved as a PNG and logged to TensorBoard as an image.

It works on any LightningModule: ``backbone`` names the attribute (or method) that maps an
input batch to feature vectors, and the two domains' data come from explicit loaders or
from the datamodule's validation loaders.

One job per file: ``features.py`` (extraction), ``embedding.py`` (PCA / t-SNE),
``plotting.py`` (the figure), ``report.py`` (:func:`domain_shift_report`, the same report as a
plain function, for scripts and notebooks; :func:`report_features` from features at hand) and
``callback.py`` (:class:`DomainShiftReport`: when, which loaders and how many of their batches
the trainer's limits allow, files, logging, DDP).
"""

from lt_transfer.callbacks.domain_report.callback import DomainShiftReport, ReportResult
from lt_transfer.callbacks.domain_report.embedding import EmbeddingMethod, embed_2d
from lt_transfer.callbacks.domain_report.features import (
    as_feature_vectors,
    extract_features,
    forward_with_features,
    resolve_feature_fn,
)
from lt_transfer.callbacks.domain_report.plotting import figure_to_array, plot_domain_embedding
from lt_transfer.callbacks.domain_report.report import check_same_width, domain_shift_report, report_features

__all__ = [
    "DomainShiftReport",
    "EmbeddingMethod",
    "ReportResult",
    "as_feature_vectors",
    "check_same_width",
    "domain_shift_report",
    "embed_2d",
    "extract_features",
    "figure_to_array",
    "forward_with_features",
    "plot_domain_embedding",
    "report_features",
    "resolve_feature_fn",
]
