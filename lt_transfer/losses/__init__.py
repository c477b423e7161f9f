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
from lt_transfer.losses.bss import BSSLoss, bss_loss
from lt_transfer.losses.coral import CORALLoss, coral_loss
from lt_transfer.losses.delta import DELTALoss, delta_channel_attention, delta_loss
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
from lt_transfer.losses.l2sp import L2SPLoss, l2sp_loss, parameter_snapshot
from lt_transfer.losses.mmd import MMDLoss, mmd_loss

__all__: list[str] = [
    "BSSLoss",
    "CORALLoss",
    "CoefficientSchedule",
    "DELTALoss",
    "DistillationLoss",
    "DistillationTerms",
    "DomainAdversarialLoss",
    "GradientReversal",
    "HintLoss",
    "KDLoss",
    "L2SPLoss",
    "MMDLoss",
    "bss_loss",
    "coral_loss",
    "dann_lr_factor",
    "delta_channel_attention",
    "delta_loss",
    "distillation_loss",
    "distillation_terms",
    "domain_accuracy",
    "domain_adversarial_loss",
    "domain_discriminator",
    "grad_reverse",
    "hint_loss",
    "kd_loss",
    "l2sp_loss",
    "mmd_loss",
    "parameter_snapshot",
    "schedule_value",
    "training_progress",
]
