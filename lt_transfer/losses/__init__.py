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
from lt_transfer.losses.distillation import (
    DistillationLoss,
    DistillationTerms,
    HintLoss,
    KDLoss,
    distillation_loss,
    distillation_terms,
    hint_loss,
    kd_loss,
)
from lt_transfer.losses.mmd import MMDLoss, mmd_loss

__all__: list[str] = [
    "CORALLoss",
    "CoefficientSchedule",
    "DistillationLoss",
    "DistillationTerms",
    "DomainAdversarialLoss",
    "GradientReversal",
    "HintLoss",
    "KDLoss",
    "MMDLoss",
    "coral_loss",
    "dann_lr_factor",
    "distillation_loss",
    "distillation_terms",
    "domain_accuracy",
    "domain_adversarial_loss",
    "domain_discriminator",
    "grad_reverse",
    "hint_loss",
    "kd_loss",
    "mmd_loss",
    "schedule_value",
    "training_progress",
]
