"""TransRate: the mutual information between features and labels, as coding rates.

Huang, Huang, Rong, Yang & Wei ("Frustratingly Easy Transferability Estimation", ICML 2022)
estimate :math:`I(Z; Y) = H(Z) - H(Z \\mid Y)` of the candidate's features :math:`Z` and the
target labels with the coding rate of Ma et al. (rate-distortion at distortion
:math:`\\epsilon`) on the centred features :math:`\\hat Z \\in \\mathbb R^{N \\times D}`:

.. math::
    R(\\hat Z, \\epsilon) = \\tfrac12 \\log\\det\\Big(I_D + \\frac{1}{N\\epsilon} \\hat Z^\\top \\hat Z\\Big),
    \\qquad
    \\mathrm{TrR} = R(\\hat Z, \\epsilon) - \\frac1C \\sum_{c=1}^{C} R(\\hat Z_c, \\epsilon),

where :math:`\\hat Z_c` holds the :math:`N_c` rows of class :math:`c` (scaled by
:math:`1/(N_c\\epsilon)`), averaged over classes as in the authors' code. As there, the
class rows are *not* re-centred: each class term sees its spread plus its mean's offset
from the global mean, so TransRate rewards classes that occupy different directions. (With
two balanced classes the centred means are opposite, :math:`\\pm\\mu`, and add the same
term to both classes: the score then only sees differences in the class spreads.) Higher
is better. The value depends on the feature scale through :math:`\\epsilon` (``eps``, 1e-4 as in the
paper), so compare candidates whose features come from the same kind of layer. The log
determinants use the smaller of the :math:`D \\times D` and :math:`N \\times N` Gram
matrices (Sylvester's identity), in float64.
"""

from __future__ import annotations

import torch

from lt_transfer.ranking._inputs import ArrayLike, as_features, as_labels

__all__ = ["coding_rate", "transrate"]


def coding_rate(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``0.5 * logdet(I + Z^T Z / (N eps))`` of ``(N, D)`` rows ``z`` (float64).

    Example:
        >>> coding_rate(torch.tensor([[1.0], [-1.0]], dtype=torch.float64), eps=1.0)  # log(1 + 2/2) / 2
        tensor(0.3466, dtype=torch.float64)
    """
    n, d = z.shape
    gram = z.T @ z if d <= n else z @ z.T
    return 0.5 * torch.linalg.slogdet(torch.eye(len(gram), dtype=z.dtype) + gram / (n * eps))[1]


def transrate(features: ArrayLike, labels: ArrayLike, eps: float = 1e-4) -> float:
    """TransRate of ``(N, D)`` features for class labels (higher is better).

    Args:
        features: ``(N, D)`` features of the target samples from the candidate model.
        labels: ``(N,)`` class indices ``0..C-1``.
        eps: distortion :math:`\\epsilon` of the coding rate.

    Raises:
        ValueError: ``eps <= 0``, NaN/Inf features, a single class, fewer samples than classes.

    Example:
        >>> features = torch.tensor([[2, 0], [2, 0.2], [0, 2], [0.2, 2], [-2, -2], [-2.2, -2]])
        >>> round(transrate(features, torch.tensor([0, 0, 1, 1, 2, 2])), 2)  # one direction per class
        2.42
        >>> round(transrate(features, torch.tensor([0, 1, 2, 0, 1, 2])), 2)  # labels unrelated to features
        0.13
    """
    if not eps > 0:
        raise ValueError(f"transrate(eps={eps!r}) must be > 0.")
    z = as_features(features, "transrate")
    y, num_classes = as_labels(labels, len(z), "transrate")
    z = z - z.mean(0)
    conditional = torch.stack([coding_rate(z[y == c], eps) for c in range(num_classes)]).mean()
    return float(coding_rate(z, eps) - conditional)
