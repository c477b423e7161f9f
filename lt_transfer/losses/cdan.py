"""CDAN(+E): a domain discriminator conditioned on the classifier's predictions.

Long, Cao, Wang & Jordan, "Conditional Adversarial Domain Adaptation" (NeurIPS 2018). DANN
aligns the feature distributions only; CDAN aligns the *joint* distribution of features
:math:`f` and predictions :math:`g = \\operatorname{softmax}(z)` by feeding the discriminator
their multilinear map, the flattened outer product

.. math::

    T_\\otimes(f, g) = f \\otimes g \\in \\mathbb R^{d_f C}, \\qquad
    [T_\\otimes]_{iC + c} = f_i\\, g_c ,

or, for wide features, the randomised multilinear map with random matrices
:math:`R_f \\in \\mathbb R^{d \\times d_f}`, :math:`R_g \\in \\mathbb R^{d \\times C}` drawn once
(standard normal) and kept fixed,

.. math::

    T_\\odot(f, g) = \\frac{1}{\\sqrt d}\\,(R_f f) \\odot (R_g g),

whose inner products approximate those of :math:`T_\\otimes` in expectation. The paper uses
:math:`T_\\otimes` when :math:`d_f C \\le 4096` and :math:`T_\\odot` with :math:`d = 1024`
otherwise (:func:`cdan_randomized_dim`).

Entropy conditioning (CDAN+E) weights each example by :math:`w = 1 + e^{-H(g)}`, so confident
(more transferable) predictions count more; the weights are normalised to sum to 1 within each
domain. The discriminator loss is the binary cross-entropy of source (1) versus target (0), each
domain weighing one half as in :func:`lt_transfer.losses.adversarial.domain_adversarial_loss`,

.. math::

    L = \\tfrac12 \\sum_{i \\in S} w_i\\,\\mathrm{BCE}(D(T_i), 1)
        + \\tfrac12 \\sum_{j \\in T} w_j\\,\\mathrm{BCE}(D(T_j), 0),

and reaches the feature extractor through the gradient reversal layer
(:func:`~lt_transfer.losses.adversarial.grad_reverse`) with strength ``coeff``. As in the
authors' code, the predictions only condition the discriminator: :math:`g` is detached, so
the adversarial gradient flows into the features, not into the classifier's outputs; the
entropy weights are detached too. The maps and the loss are computed in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lt_transfer.losses._float32 import float32, no_autocast
from lt_transfer.losses.adversarial import _check_pair, domain_adversarial_loss, grad_reverse
from lt_transfer.losses.entropy import entropy_loss

__all__ = [
    "CDANLoss",
    "cdan_input_width",
    "cdan_loss",
    "cdan_randomized_dim",
    "entropy_weights",
    "multilinear_map",
    "randomized_multilinear_map",
]

_MULTILINEAR_LIMIT = 4096  # above this width of the full map the paper switches to the randomised one
_PAPER_RANDOMIZED_DIM = 1024  # the randomised map's width in the paper


def _check_features_predictions(features: torch.Tensor, predictions: torch.Tensor, where: str) -> None:
    if features.ndim != 2 or predictions.ndim != 2 or len(features) != len(predictions):
        raise ValueError(
            f"{where}: expected (N, D) features and (N, C) predictions with the same N, got "
            f"{tuple(features.shape)} and {tuple(predictions.shape)}."
        )


def multilinear_map(features: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """Flattened outer product ``f ⊗ g``: ``(N, D)`` and ``(N, C)`` → ``(N, D * C)``.

    Entry ``i * C + c`` of a row is ``f_i * g_c``.

    Example:
        >>> multilinear_map(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.25, 0.75]]))
        tensor([[0.2500, 0.7500, 0.5000, 1.5000]])
    """
    _check_features_predictions(features, predictions, "multilinear_map")
    f, g = float32(features), float32(predictions)
    return (f.unsqueeze(2) * g.unsqueeze(1)).flatten(1)


def randomized_multilinear_map(
    features: torch.Tensor,
    predictions: torch.Tensor,
    random_features: torch.Tensor,
    random_predictions: torch.Tensor,
) -> torch.Tensor:
    """Randomised multilinear map ``(R_f f) ⊙ (R_g g) / sqrt(d)``: → ``(N, d)``.

    Args:
        features: ``(N, D)``.
        predictions: ``(N, C)`` class probabilities.
        random_features: ``R_f`` of shape ``(d, D)``, fixed during training.
        random_predictions: ``R_g`` of shape ``(d, C)``, fixed during training.

    Example:
        >>> f, g = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 0.5]])
        >>> r_f = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # R_f f = (1, 3)
        >>> r_g = torch.tensor([[2.0, 0.0], [0.0, 4.0]])  # R_g g = (1, 2)
        >>> randomized_multilinear_map(f, g, r_f, r_g)  # (1·1, 3·2) / √2
        tensor([[0.7071, 4.2426]])
    """
    _check_features_predictions(features, predictions, "randomized_multilinear_map")
    d = random_features.shape[0]
    width_f, width_g = features.shape[1], predictions.shape[1]
    if random_features.shape != (d, width_f) or random_predictions.shape != (d, width_g):
        raise ValueError(
            f"randomized_multilinear_map: random matrices {tuple(random_features.shape)} and "
            f"{tuple(random_predictions.shape)} must be (d, {width_f}) and (d, {width_g})."
        )
    f, g = float32(features), float32(predictions)
    with no_autocast(f):
        projected_f = f @ random_features.to(f).T
        projected_g = g @ random_predictions.to(g).T
        return projected_f * projected_g / math.sqrt(d)


def entropy_weights(logits: torch.Tensor) -> torch.Tensor:
    """CDAN+E example weights ``1 + exp(-H(softmax(z)))``, normalised to sum to 1 (one domain).

    Example:
        >>> entropy_weights(torch.tensor([[0.0, 0.0], [100.0, 0.0]]))  # (1.5, 2) / 3.5
        tensor([0.4286, 0.5714])
    """
    weights = 1.0 + torch.exp(-entropy_loss(logits.detach(), reduction="none"))
    return weights / weights.sum()


def cdan_randomized_dim(num_features: int, num_classes: int) -> int | None:
    """The paper's rule: ``None`` (full map) when ``num_features * num_classes <= 4096``, else 1024.

    Example:
        >>> cdan_randomized_dim(84, 10), cdan_randomized_dim(2048, 31)
        (None, 1024)
    """
    return None if num_features * num_classes <= _MULTILINEAR_LIMIT else _PAPER_RANDOMIZED_DIM


def cdan_input_width(num_features: int, num_classes: int, randomized_dim: int | None = None) -> int:
    """Width of the discriminator's input: ``num_features * num_classes``, or ``randomized_dim``.

    Example:
        >>> cdan_input_width(84, 10), cdan_input_width(2048, 31, randomized_dim=1024)
        (840, 1024)
    """
    return num_features * num_classes if randomized_dim is None else randomized_dim


def _discriminator_in_features(discriminator: nn.Module) -> int | None:
    for module in discriminator.modules():
        if isinstance(module, nn.Linear):
            return module.in_features or None  # a LazyLinear has 0 until its first call
    return None


def _check_discriminator(discriminator: nn.Module, width: int, description: str, where: str) -> None:
    in_features = _discriminator_in_features(discriminator)
    if in_features is not None and in_features != width:
        raise ValueError(
            f"{where}: the discriminator takes {in_features} inputs, but the conditional input is "
            f"{description} = {width} wide; build it with domain_discriminator({width}) "
            "(cdan_input_width(num_features, num_classes, randomized_dim) gives the width)."
        )


def _conditional_input(
    features: torch.Tensor, logits: torch.Tensor, random_matrices: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    predictions = float32(logits.detach()).softmax(1)
    if random_matrices is None:
        return multilinear_map(features, predictions)
    return randomized_multilinear_map(features, predictions, *random_matrices)


def cdan_loss(
    discriminator: nn.Module,
    source_features: torch.Tensor,
    target_features: torch.Tensor,
    source_logits: torch.Tensor,
    target_logits: torch.Tensor,
    coeff: float = 1.0,
    entropy_conditioning: bool = True,
    random_matrices: tuple[torch.Tensor, torch.Tensor] | None = None,
    validate_args: bool = True,
) -> torch.Tensor:
    """Conditional domain-adversarial loss (CDAN, or CDAN+E with ``entropy_conditioning``).

    Args:
        discriminator: maps the conditional input ``(N, width)`` to ``(N, 1)`` or ``(N,)``
            logits, ``width`` from :func:`cdan_input_width`
            (:func:`~lt_transfer.losses.adversarial.domain_discriminator`).
        source_features: ``(N_s, D)`` source features.
        target_features: ``(N_t, D)`` target features.
        source_logits: ``(N_s, C)`` classifier logits of the source examples.
        target_logits: ``(N_t, C)`` classifier logits of the target examples.
        coeff: gradient-reversal strength :math:`\\lambda` (schedule it from trainer progress).
        entropy_conditioning: weight examples by ``1 + exp(-H(g))`` (CDAN+E).
        random_matrices: ``(R_f, R_g)`` of shapes ``(d, D)`` and ``(d, C)`` for the randomised
            map; ``None`` uses the full multilinear map.
        validate_args: check shapes and the discriminator's input width.

    Returns:
        A float32 scalar.

    Raises:
        ValueError: mismatched shapes, or a discriminator whose first ``nn.Linear`` does not
            take ``D * C`` (or ``d``) inputs.

    Example:
        >>> from lt_transfer.losses.adversarial import domain_discriminator
        >>> discriminator = domain_discriminator(cdan_input_width(4, 3), hidden=8, depth=1)
        >>> fs = torch.randn(5, 4, requires_grad=True)
        >>> loss = cdan_loss(discriminator, fs, torch.randn(6, 4), torch.randn(5, 3), torch.randn(6, 3))
        >>> loss.backward(); fs.grad.shape
        torch.Size([5, 4])
    """
    if validate_args:
        _check_pair(source_features, target_features, "cdan_loss")
        if source_logits.ndim != 2 or source_logits.shape[1:] != target_logits.shape[1:]:
            raise ValueError(
                f"cdan_loss: source logits {tuple(source_logits.shape)} and target logits "
                f"{tuple(target_logits.shape)} must both be (N, C) with the same class count C."
            )
        _check_features_predictions(source_features, source_logits, "cdan_loss (source)")
        _check_features_predictions(target_features, target_logits, "cdan_loss (target)")
        width, description = source_features.shape[1] * source_logits.shape[1], "features × classes"
        if random_matrices is not None:
            width, description = random_matrices[0].shape[0], "the randomised dimension"
        _check_discriminator(discriminator, width, description, "cdan_loss")
    conditional = torch.cat(
        [
            _conditional_input(source_features, source_logits, random_matrices),
            _conditional_input(target_features, target_logits, random_matrices),
        ]
    )
    logits = float32(discriminator(grad_reverse(conditional, coeff))).reshape(len(conditional))
    source_d, target_d = logits[: len(source_features)], logits[len(source_features) :]
    if not entropy_conditioning:
        return domain_adversarial_loss(source_d, target_d)
    source_w = entropy_weights(source_logits).to(source_d)
    target_w = entropy_weights(target_logits).to(target_d)
    ones, zeros = torch.ones_like(source_d), torch.zeros_like(target_d)
    loss_s = F.binary_cross_entropy_with_logits(source_d, ones, source_w, reduction="sum")
    loss_t = F.binary_cross_entropy_with_logits(target_d, zeros, target_w, reduction="sum")
    return 0.5 * (loss_s + loss_t)


class CDANLoss(nn.Module):
    """CDAN(+E) with its discriminator and, for wide features, the fixed random matrices.

    The random matrices are buffers drawn from a generator seeded with ``seed``: every process
    of a DDP run draws the same ones, and checkpoints keep them, so a resumed run continues
    with the same map.

    Args:
        discriminator: takes :func:`cdan_input_width` inputs (checked here).
        num_features: feature width ``D``.
        num_classes: class count ``C``.
        randomized_dim: width ``d`` of the randomised map; ``None`` uses the full multilinear
            map (:func:`cdan_randomized_dim` gives the paper's choice).
        entropy_conditioning: CDAN+E example weights.
        seed: seed of the random matrices (only with ``randomized_dim``).
        validate_args: check shapes on every call.

    Raises:
        ValueError: bad sizes, or a discriminator input width that does not match.

    Example:
        >>> from lt_transfer.losses.adversarial import domain_discriminator
        >>> loss_fn = CDANLoss(domain_discriminator(16, hidden=8), 500, 10, randomized_dim=16)
        >>> loss_fn(torch.randn(4, 500), torch.randn(4, 500), torch.randn(4, 10), torch.randn(4, 10)).ndim
        0
        >>> try:
        ...     CDANLoss(domain_discriminator(10), num_features=4, num_classes=3)
        ... except ValueError as error:
        ...     print(str(error).split(";")[0])
        CDANLoss: the discriminator takes 10 inputs, but the conditional input is features × classes = 12 wide
    """

    random_features: torch.Tensor | None
    random_predictions: torch.Tensor | None

    def __init__(
        self,
        discriminator: nn.Module,
        num_features: int,
        num_classes: int,
        randomized_dim: int | None = None,
        entropy_conditioning: bool = True,
        seed: int = 0,
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(discriminator, nn.Module):
            raise TypeError(
                f"CDANLoss(discriminator=...) must be an nn.Module, got {type(discriminator).__name__}; "
                "see domain_discriminator()."
            )
        for name, value, low in (
            ("num_features", num_features, 1),
            ("num_classes", num_classes, 2),
            ("randomized_dim", 1 if randomized_dim is None else randomized_dim, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"CDANLoss({name}={value!r}) must be an int >= {low}.")
        self.num_features = num_features
        self.num_classes = num_classes
        self.randomized_dim = randomized_dim
        self.entropy_conditioning = entropy_conditioning
        self.validate_args = validate_args
        width = cdan_input_width(num_features, num_classes, randomized_dim)
        description = "features × classes" if randomized_dim is None else "the randomised dimension"
        _check_discriminator(discriminator, width, description, "CDANLoss")
        self.discriminator = discriminator
        if randomized_dim is None:
            self.register_buffer("random_features", None)
            self.register_buffer("random_predictions", None)
        else:
            generator = torch.Generator().manual_seed(seed)
            r_f = torch.randn(randomized_dim, num_features, generator=generator)
            r_g = torch.randn(randomized_dim, num_classes, generator=generator)
            self.register_buffer("random_features", r_f)
            self.register_buffer("random_predictions", r_g)

    def forward(
        self,
        source_features: torch.Tensor,
        target_features: torch.Tensor,
        source_logits: torch.Tensor,
        target_logits: torch.Tensor,
        coeff: float = 1.0,
    ) -> torch.Tensor:
        """Return the conditional domain loss; ``coeff`` is the reversal strength ``lambda``."""
        if self.validate_args and (
            source_features.shape[-1] != self.num_features or source_logits.shape[-1] != self.num_classes
        ):
            raise ValueError(
                f"CDANLoss(num_features={self.num_features}, num_classes={self.num_classes}) got "
                f"features {tuple(source_features.shape)} and logits {tuple(source_logits.shape)}."
            )
        random_matrices = None
        if self.random_features is not None and self.random_predictions is not None:
            random_matrices = (self.random_features, self.random_predictions)
        return cdan_loss(
            self.discriminator,
            source_features,
            target_features,
            source_logits,
            target_logits,
            coeff,
            self.entropy_conditioning,
            random_matrices,
            self.validate_args,
        )

    def extra_repr(self) -> str:
        return (
            f"num_features={self.num_features}, num_classes={self.num_classes}, "
            f"randomized_dim={self.randomized_dim}, entropy_conditioning={self.entropy_conditioning}"
        )
