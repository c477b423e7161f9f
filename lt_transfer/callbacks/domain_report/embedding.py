"""2-D embeddings of feature vectors for the domain-shift plot: PCA, or t-SNE through scikit-learn.

t-SNE: van der Maaten & Hinton, "Visualizing Data using t-SNE", JMLR 2008; the DANN paper
(Ganin et al., JMLR 2016) shows domain adaptation this way.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

__all__ = ["EmbeddingMethod", "embed_2d"]

EmbeddingMethod = Literal["pca", "tsne"]


def embed_2d(features: torch.Tensor, method: EmbeddingMethod = "pca", seed: int = 0) -> np.ndarray:
    """Project ``(N, D)`` features to ``(N, 2)`` with PCA or t-SNE (scikit-learn).

    Raises:
        ValueError: unknown method.
        ImportError: ``"tsne"`` without scikit-learn.

    Example:
        >>> embed_2d(torch.randn(20, 5)).shape
        (20, 2)
    """
    x = features.double()
    if method == "pca":
        x = x - x.mean(dim=0, keepdim=True)
        _, _, v = torch.linalg.svd(x, full_matrices=False)
        out = x @ v[:2].T
        if out.shape[1] < 2:
            out = torch.cat([out, torch.zeros(len(out), 2 - out.shape[1], dtype=out.dtype)], dim=1)
        return out.numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
        return tsne.fit_transform(x.numpy())
    raise ValueError(f"embed_2d(method={method!r}) must be 'pca' or 'tsne'.")
