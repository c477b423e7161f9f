"""DistillationModule's training loss against the objective written out by hand.

``loss = alpha * CE(student logits, labels) + (1 - alpha) * T² * KL(softmax(teacher / T) ||
softmax(student / T))``, the KL averaged over the batch and the cross-entropy over the labelled
samples (label ``-1``: soft term only). The expected value is computed in float64 from the
student and the teacher as they are when each training batch starts, with nothing from
``lt_transfer.losses``; the loss the step returned must equal it for every batch of a short fit.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer import DistillationModule


def _objective(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, alpha: float, temperature: float
) -> float:
    s, t = student.double(), teacher.double()
    p_teacher = torch.softmax(t / temperature, dim=1)
    log_p_student = torch.log_softmax(s / temperature, dim=1)
    kl = (p_teacher * (p_teacher.log() - log_p_student)).sum(1).mean()
    soft = (1 - alpha) * temperature**2 * kl
    labelled = labels != -1
    if not bool(labelled.any()):
        return float(soft)
    log_p = torch.log_softmax(s[labelled], dim=1)
    ce = -log_p[torch.arange(int(labelled.sum())), labels[labelled]].mean()
    return float(alpha * ce + soft)


class ExpectedLoss(Callback):
    """The objective at the start of every training batch, and the loss the step returned."""

    def __init__(self, alpha: float, temperature: float) -> None:
        self.alpha, self.temperature = alpha, temperature
        self.expected: list[float] = []
        self.returned: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        x, y = batch
        with torch.no_grad():
            student, teacher = pl_module.student(x), pl_module.teacher(x)
        self.expected.append(_objective(student, teacher, y, self.alpha, self.temperature))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.returned.append(float(outputs["loss"]))


@pytest.mark.parametrize(("alpha", "temperature"), [(0.1, 8.0), (0.5, 1.0), (0.3, 4.0), (0.0, 2.0)])
def test_training_loss_is_alpha_ce_plus_one_minus_alpha_t2_kl(alpha: float, temperature: float) -> None:
    """Every batch of a 2-epoch fit (the student changes between batches; the teacher has dropout
    and BatchNorm, which must stay in eval mode). Batch 1 holds unlabelled samples (-1), batch 2
    only unlabelled ones. Tolerance: rtol=1e-5 (float32 step vs float64 formula; measured < 1e-6).
    Ignoring the temperature, the T² factor, alpha or the batch mean changes the loss by 10% or more."""
    torch.manual_seed(0)
    teacher = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.5), nn.Linear(12, 4)
    )
    teacher[2].running_mean.normal_()  # BatchNorm statistics that differ from any batch's
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    module = DistillationModule(student, teacher, alpha=alpha, temperature=temperature)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 1, 4, 4, generator=g)
    y = torch.randint(0, 4, (24,), generator=g)
    y[[9, 12, 14]] = -1  # batch 1: some unlabelled samples
    y[16:] = -1  # batch 2: none labelled
    record = ExpectedLoss(alpha, temperature)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=8))
    assert len(record.returned) == 2 * 3
    assert record.returned == pytest.approx(record.expected, rel=1e-5)
    assert record.expected[0] != record.expected[3]  # the student trained between the epochs
