"""Transfer-learning losses, each as a function and an ``nn.Module``."""

from lt_transfer.losses.adversarial import (
    CoefficientSchedule,
    DomainAdversarialLoss,
    GradientReversal,
    dann_lr_factor,
    domain_accuracy,
    domain_adversarial_loss,
    domain_discriminator,
    grad_reverse,
    schedule_value,
    training_progress,
)
from lt_transfer.losses.coral import CORALLoss, coral_loss
from lt_transfer.losses.mmd import MMDLoss, mmd_loss

__all__: list[str] = [
    "CORALLoss",
    "CoefficientSchedule",
    "DomainAdversarialLoss",
    "GradientReversal",
    "MMDLoss",
    "coral_loss",
    "dann_lr_factor",
    "domain_accuracy",
    "domain_adversarial_loss",
    "domain_discriminator",
    "grad_reverse",
    "mmd_loss",
    "schedule_value",
    "training_progress",
]
