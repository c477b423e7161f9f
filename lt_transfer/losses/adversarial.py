"""Domain-adversarial training: gradient reversal, the domain loss and coefficient schedules.

DANN (Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015;
Ganin et al., JMLR 2016) trains a domain discriminator ``D`` on features ``f = G(x)`` to tell
source from target, while the feature extractor ``G`` receives the *reversed* gradient of
the discriminator's loss. The gradient reversal layer (GRL) is the identity in the forward
pass and multiplies the gradient by ``-lambda`` in the backward pass, so one backward pass
minimises the domain loss for ``D`` and maximises it for ``G``.

The coefficient ``lambda`` grows over training progress ``p in [0, 1]``:

.. math::

    \\lambda_p = \\frac{2}{1 + \\exp(-\\gamma p)} - 1, \\qquad \\gamma = 10,

and the paper anneals the learning rate as :math:`\\mu_p = \\mu_0 / (1 + 10 p)^{0.75}`.
``p`` must come from the trainer (:func:`training_progress`), never from a counter bumped in
``forward``: a counter advances during validation and sanity checks and restarts on resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CoefficientSchedule",
    "DomainAdversarialLoss",
    "GradientReversal",
    "ProgressUnit",
    "ScheduleName",
    "dann_lr_factor",
    "domain_accuracy",
    "domain_adversarial_loss",
    "domain_discriminator",
    "grad_reverse",
    "schedule_value",
    "training_progress",
]

ScheduleName = Literal["dann", "constant", "linear"]
ProgressUnit = Literal["step", "epoch"]


class _GradientReversalFunction(torch.autograd.Function):
    """Identity forward, ``-coeff * grad`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output * (-ctx.coeff), None


def _check_coeff(coeff: float, where: str) -> float:
    value = float(coeff)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}(coeff={coeff!r}) must be a finite number >= 0 (0 blocks the gradient).")
    return value


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Gradient reversal: return ``x`` unchanged; its gradient becomes ``-coeff * grad``.

    Args:
        x: any tensor.
        coeff: the reversal strength ``lambda >= 0``; 0 gives a zero gradient to ``x``.

    Example:
        >>> x = torch.ones(3, requires_grad=True)
        >>> (2 * grad_reverse(x, coeff=0.5)).sum().backward()
        >>> x.grad
        tensor([-1., -1., -1.])
    """
    return _GradientReversalFunction.apply(x, _check_coeff(coeff, "grad_reverse"))


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse` (Ganin & Lempitsky 2015).

    Args:
        coeff: default reversal strength, used when ``forward`` gets no ``coeff``. It is a
            plain attribute; schedule it from trainer progress (:class:`CoefficientSchedule`)
            and pass it to ``forward``, rather than mutating it inside ``forward``.

    Example:
        >>> grl = GradientReversal()
        >>> x = torch.ones(2, requires_grad=True)
        >>> grl(x, coeff=3.0).sum().backward()
        >>> x.grad
        tensor([-3., -3.])
    """

    def __init__(self, coeff: float = 1.0) -> None:
        super().__init__()
        self.coeff = _check_coeff(coeff, "GradientReversal")

    def forward(self, x: torch.Tensor, coeff: float | None = None) -> torch.Tensor:
        return grad_reverse(x, self.coeff if coeff is None else coeff)

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}"


# ------------------------------------------------------------------ schedules
def schedule_value(
    progress: float,
    schedule: ScheduleName = "dann",
    gamma: float = 10.0,
    max_value: float = 1.0,
    warmup: float = 0.1,
) -> float:
    """Coefficient at training progress ``p`` (``progress``, in ``[0, 1]``).

    * ``"dann"``: ``max_value * (2 / (1 + exp(-gamma * p)) - 1)`` (Ganin & Lempitsky 2015);
    * ``"constant"``: ``max_value``;
    * ``"linear"``: ``max_value * min(1, p / warmup)`` (linear warm-up over the first
      ``warmup`` fraction of training).

    Example:
        >>> round(schedule_value(0.5), 4), schedule_value(0.0), round(schedule_value(1.0), 4)
        (0.9866, 0.0, 0.9999)
        >>> schedule_value(0.05, "linear", warmup=0.1)
        0.5
    """
    p = float(progress)
    if not -1e-9 <= p <= 1 + 1e-9:
        raise ValueError(f"schedule_value(progress={progress!r}) must be in [0, 1].")
    p = min(max(p, 0.0), 1.0)
    if schedule == "dann":
        return max_value * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)
    if schedule == "constant":
        return float(max_value)
    if schedule == "linear":
        return max_value * min(1.0, p / warmup)
    raise ValueError(f"schedule_value(schedule={schedule!r}) must be 'dann', 'constant' or 'linear'.")


def dann_lr_factor(progress: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """The DANN paper's learning-rate annealing factor ``1 / (1 + alpha * p) ** beta``.

    Example:
        >>> dann_lr_factor(0.0), round(dann_lr_factor(1.0), 4)
        (1.0, 0.1656)
    """
    return 1.0 / (1.0 + alpha * min(max(float(progress), 0.0), 1.0)) ** beta


def training_progress(trainer: Any, unit: ProgressUnit = "step") -> float:
    """Training progress ``p in [0, 1]`` read from the trainer's own counters.

    ``"step"``: ``global_step / estimated_stepping_batches`` (optimizer steps done so far;
    validation, sanity checks and prediction never move it, and a resumed run restores it).
    ``"epoch"``: ``current_epoch / max_epochs`` (constant within an epoch).

    Raises:
        ValueError: when training length is unbounded (``max_epochs=-1`` and no
            ``max_steps``), because progress is then undefined.

    Example:
        >>> from types import SimpleNamespace
        >>> trainer = SimpleNamespace(global_step=25, estimated_stepping_batches=100)
        >>> training_progress(trainer)
        0.25
    """
    if unit == "step":
        total = float(trainer.estimated_stepping_batches)
        if not math.isfinite(total) or total <= 0:
            raise ValueError(
                f"A progress-based schedule needs a bounded training length, but the trainer "
                f"estimates {total} optimizer steps. Set Trainer(max_steps=...) or a finite "
                "max_epochs, or use schedule='constant'."
            )
        return min(trainer.global_step / total, 1.0)
    if unit == "epoch":
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            raise ValueError(
                f"schedule_unit='epoch' needs a finite Trainer(max_epochs=...), got "
                f"max_epochs={max_epochs!r}; set max_epochs or use schedule_unit='step'."
            )
        return min(trainer.current_epoch / max_epochs, 1.0)
    raise ValueError(f"training_progress(unit={unit!r}) must be 'step' or 'epoch'.")


@dataclass(frozen=True)
class CoefficientSchedule:
    """A coefficient schedule over trainer progress: configuration only, no hidden state.

    The value is a pure function of the trainer's ``global_step`` (or ``current_epoch``), so
    it never moves during validation and continues exactly on resume.

    Attributes:
        schedule: ``"dann"``, ``"constant"`` or ``"linear"`` (see :func:`schedule_value`).
        unit: progress per optimizer ``"step"`` or per ``"epoch"``.
        gamma: steepness of the ``"dann"`` schedule (10 in the paper).
        max_value: the coefficient's final value.
        warmup: fraction of training of the ``"linear"`` warm-up.

    Example:
        >>> from types import SimpleNamespace
        >>> schedule = CoefficientSchedule("linear", warmup=0.5)
        >>> schedule(SimpleNamespace(global_step=10, estimated_stepping_batches=40))
        0.5
    """

    schedule: ScheduleName = "dann"
    unit: ProgressUnit = "step"
    gamma: float = 10.0
    max_value: float = 1.0
    warmup: float = 0.1

    def __post_init__(self) -> None:
        if self.schedule not in ("dann", "constant", "linear"):
            raise ValueError(
                f"CoefficientSchedule(schedule={self.schedule!r}) must be 'dann', 'constant' or 'linear'."
            )
        if self.unit not in ("step", "epoch"):
            raise ValueError(f"CoefficientSchedule(unit={self.unit!r}) must be 'step' or 'epoch'.")
        if not self.gamma > 0:
            raise ValueError(f"CoefficientSchedule(gamma={self.gamma!r}) must be > 0 (the paper uses 10).")
        if not (math.isfinite(self.max_value) and self.max_value >= 0):
            raise ValueError(f"CoefficientSchedule(max_value={self.max_value!r}) must be finite and >= 0.")
        if not 0 < self.warmup <= 1:
            raise ValueError(f"CoefficientSchedule(warmup={self.warmup!r}) must be in (0, 1].")

    def value(self, progress: float) -> float:
        """Coefficient at progress ``p``."""
        return schedule_value(progress, self.schedule, self.gamma, self.max_value, self.warmup)

    def progress(self, trainer: Any) -> float:
        """Progress ``p`` read from ``trainer`` (see :func:`training_progress`)."""
        return training_progress(trainer, self.unit)

    def __call__(self, trainer: Any) -> float:
        """Coefficient for the trainer's current progress (``"constant"`` needs no bound)."""
        if self.schedule == "constant":
            return float(self.max_value)
        return self.value(self.progress(trainer))


# --------------------------------------------------------------------- losses
def _check_pair(source: torch.Tensor, target: torch.Tensor, where: str) -> None:
    if source.dim() != 2 or target.dim() != 2:
        raise ValueError(
            f"{where}: expected 2-D (batch, features) tensors, got source {tuple(source.shape)} "
            f"and target {tuple(target.shape)}; flatten or pool the features first."
        )
    if source.shape[1] != target.shape[1]:
        raise ValueError(
            f"{where}: source features have width {source.shape[1]} but target features have "
            f"width {target.shape[1]}; both domains must go through the same feature extractor."
        )
    if len(source) == 0 or len(target) == 0:
        raise ValueError(f"{where}: got an empty batch (source {len(source)}, target {len(target)} rows).")


def domain_adversarial_loss(source_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Binary domain-classification loss, source = 1 and target = 0, from raw logits.

    .. math::

        L_d = \\tfrac12 \\big(\\operatorname{mean}_i \\operatorname{BCE}(d^s_i, 1)
              + \\operatorname{mean}_j \\operatorname{BCE}(d^t_j, 0)\\big)

    Each domain weighs one half whatever the batch sizes. It uses
    ``binary_cross_entropy_with_logits`` (safe under ``autocast``, unlike ``sigmoid`` +
    ``binary_cross_entropy``) and computes in float32.

    Args:
        source_logits: ``(N_s,)`` or ``(N_s, 1)`` discriminator logits of source features.
        target_logits: ``(N_t,)`` or ``(N_t, 1)`` discriminator logits of target features.

    Example:
        >>> loss = domain_adversarial_loss(torch.zeros(4), torch.zeros(2))
        >>> round(loss.item(), 4)  # log 2: a discriminator that cannot tell the domains apart
        0.6931
    """
    s = source_logits.float().reshape(-1)
    t = target_logits.float().reshape(-1)
    if s.numel() == 0 or t.numel() == 0:
        raise ValueError(f"domain_adversarial_loss: empty logits (source {s.numel()}, target {t.numel()}).")
    loss_s = F.binary_cross_entropy_with_logits(s, torch.ones_like(s))
    loss_t = F.binary_cross_entropy_with_logits(t, torch.zeros_like(t))
    return 0.5 * (loss_s + loss_t)


def domain_accuracy(source_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Balanced accuracy of the domain discriminator (0.5 = domains indistinguishable).

    Example:
        >>> domain_accuracy(torch.tensor([2.0, -1.0]), torch.tensor([-3.0, -2.0]))
        tensor(0.7500)
    """
    s = (source_logits.detach().reshape(-1) > 0).float().mean()
    t = (target_logits.detach().reshape(-1) <= 0).float().mean()
    return 0.5 * (s + t)


def domain_discriminator(
    in_features: int, hidden: int = 256, depth: int = 2, dropout: float = 0.0
) -> nn.Module:
    """An MLP domain discriminator ``in_features → hidden (× depth) → 1 logit``.

    The DANN paper uses one hidden layer of 100 units for MNIST and ``1024 → 1024`` for
    larger benchmarks.

    Example:
        >>> domain_discriminator(8, hidden=4, depth=1)(torch.zeros(3, 8)).shape
        torch.Size([3, 1])
    """
    if in_features < 1 or hidden < 1 or depth < 0:
        raise ValueError(
            f"domain_discriminator(in_features={in_features}, hidden={hidden}, depth={depth}): "
            "widths must be >= 1 and depth >= 0."
        )
    if not 0 <= dropout < 1:
        raise ValueError(f"domain_discriminator(dropout={dropout}) must be in [0, 1).")
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class DomainAdversarialLoss(nn.Module):
    """DANN's domain loss: gradient reversal → discriminator → :func:`domain_adversarial_loss`.

    Minimising it trains the discriminator to separate the domains and, through the
    reversed gradient, the feature extractor to confuse it (Ganin & Lempitsky 2015).

    Args:
        discriminator: maps ``(N, D)`` features to ``(N, 1)`` or ``(N,)`` logits (see
            :func:`domain_discriminator`).
        validate_args: check shapes on every call (turn off on hot paths once checked).

    Example:
        >>> loss_fn = DomainAdversarialLoss(domain_discriminator(4, hidden=8, depth=1))
        >>> fs = torch.randn(5, 4, requires_grad=True)
        >>> loss = loss_fn(fs, torch.randn(3, 4), coeff=0.5)
        >>> loss.backward(); fs.grad.shape
        torch.Size([5, 4])
    """

    def __init__(self, discriminator: nn.Module, validate_args: bool = True) -> None:
        super().__init__()
        if not isinstance(discriminator, nn.Module):
            raise TypeError(
                "DomainAdversarialLoss(discriminator=...) must be an nn.Module, got "
                f"{type(discriminator).__name__}; see domain_discriminator()."
            )
        self.discriminator = discriminator
        self.validate_args = validate_args

    def logits(
        self, source: torch.Tensor, target: torch.Tensor, coeff: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Discriminator logits of both domains, the features passed through the GRL together."""
        if self.validate_args:
            _check_pair(source, target, "DomainAdversarialLoss")
        features = grad_reverse(torch.cat([source, target]), coeff)
        logits = self.discriminator(features).reshape(len(features))
        return logits[: len(source)], logits[len(source) :]

    def forward(self, source: torch.Tensor, target: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
        """Return the scalar domain loss; ``coeff`` is the reversal strength ``lambda``."""
        return domain_adversarial_loss(*self.logits(source, target, coeff))
