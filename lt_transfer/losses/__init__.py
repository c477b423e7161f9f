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
from lt_transfer.losses.attention_transfer import (
    AttentionTransferLoss,
    attention_map,
    attention_transfer_loss,
)
from lt_transfer.losses.bss import BSSLoss, bss_loss
from lt_transfer.losses.cdan import (
    CDANLoss,
    cdan_input_width,
    cdan_loss,
    cdan_randomized_dim,
    entropy_weights,
    multilinear_map,
    randomized_multilinear_map,
)
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
from lt_transfer.losses.dkd import DKDLoss, DKDTerms, dkd_loss, dkd_terms
from lt_transfer.losses.entropy import EntropyLoss, entropy_loss
from lt_transfer.losses.information_maximization import (
    InformationMaximizationLoss,
    information_maximization_loss,
)
from lt_transfer.losses.l2sp import L2SPLoss, l2sp_loss, parameter_snapshot
from lt_transfer.losses.mcc import MCCLoss, mcc_loss
from lt_transfer.losses.mmd import MMDLoss, mmd_loss
from lt_transfer.losses.self_training import (
    SelfTrainingLoss,
    confident_pseudo_labels,
    flexmatch_thresholds,
    self_training_loss,
)
from lt_transfer.losses.shot import ShotCentroids, nearest_centroid_labels, shot_centroids, shot_pseudo_labels

__all__: list[str] = [
    "AttentionTransferLoss",
    "BSSLoss",
    "CDANLoss",
    "CORALLoss",
    "CoefficientSchedule",
    "DELTALoss",
    "DKDLoss",
    "DKDTerms",
    "DistillationLoss",
    "DistillationTerms",
    "DomainAdversarialLoss",
    "EntropyLoss",
    "GradientReversal",
    "HintLoss",
    "InformationMaximizationLoss",
    "KDLoss",
    "L2SPLoss",
    "MCCLoss",
    "MMDLoss",
    "SelfTrainingLoss",
    "ShotCentroids",
    "attention_map",
    "attention_transfer_loss",
    "bss_loss",
    "cdan_input_width",
    "cdan_loss",
    "cdan_randomized_dim",
    "confident_pseudo_labels",
    "coral_loss",
    "dann_lr_factor",
    "delta_channel_attention",
    "delta_loss",
    "distillation_loss",
    "distillation_terms",
    "dkd_loss",
    "dkd_terms",
    "domain_accuracy",
    "domain_adversarial_loss",
    "domain_discriminator",
    "entropy_loss",
    "entropy_weights",
    "flexmatch_thresholds",
    "grad_reverse",
    "hint_loss",
    "information_maximization_loss",
    "kd_loss",
    "l2sp_loss",
    "mcc_loss",
    "mmd_loss",
    "multilinear_map",
    "nearest_centroid_labels",
    "parameter_snapshot",
    "randomized_multilinear_map",
    "schedule_value",
    "self_training_loss",
    "shot_centroids",
    "shot_pseudo_labels",
    "training_progress",
]
