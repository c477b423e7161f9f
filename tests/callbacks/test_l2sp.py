"""L2SP callback: the penalty value, the snapshot, warnings and errors of bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision
from torch import nn

from lt_transfer import Backbone, TransferClassifier
from lt_transfer.callbacks import L2SP
from lt_transfer.losses import l2sp_loss
from tests.callbacks.regularized import Plain, loader, trainer


class PenaltyAtFirstStep(pl.Callback):
    """The logged penalty and the reference L2-SP loss at the first optimizer step."""

    def __init__(self, callback: L2SP) -> None:
        self.callback = callback
        self.logged: float | None = None
        self.expected: float | None = None

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        if self.logged is None:
            self.logged = float(trainer.callback_metrics["l2sp/penalty"])
            named = [*pl_module.encoder.named_parameters(prefix="encoder")]
            named += [*pl_module.classifier.named_parameters(prefix="classifier")]
            head = [n for n, _ in pl_module.classifier.named_parameters(prefix="classifier")]
            snapshot = self.callback.snapshot
            self.expected = float(l2sp_loss(named, snapshot, head, self.callback.alpha, self.callback.beta))


def test_logged_penalty_is_the_l2sp_loss_and_the_snapshot_the_starting_weights(tmp_path: Path) -> None:
    model = Plain()
    start = {f"encoder.{n}": p.detach().clone() for n, p in model.encoder.named_parameters()}
    l2sp = L2SP(alpha=0.5, beta=0.1, backbone="encoder", head="classifier")
    probe = PenaltyAtFirstStep(l2sp)
    trainer(tmp_path, [l2sp, probe]).fit(model, loader())
    assert probe.logged == pytest.approx(probe.expected) and probe.logged > 0  # the head's plain L2
    assert sorted(l2sp.snapshot) == sorted(start)
    assert all(torch.equal(l2sp.snapshot[k], v) for k, v in start.items())
    assert l2sp.distance(model) > 0


def test_snapshot_is_kept_across_fits_of_the_same_callback(tmp_path: Path) -> None:
    model = Plain()
    l2sp = L2SP(backbone="encoder", head="classifier")
    trainer(tmp_path, [l2sp]).fit(model, loader())
    first = {k: v.clone() for k, v in l2sp.snapshot.items()}
    trainer(tmp_path, [l2sp]).fit(model, loader())  # a second fit continues: w0 stays the pretrained one
    assert all(torch.equal(first[k], l2sp.snapshot[k]) for k in first)


def test_random_backbone_warns(tmp_path: Path) -> None:
    model = TransferClassifier(Backbone(nn.Linear(4, 4), 4, pretrained=False), num_classes=2)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(8, 4), torch.tensor([0, 1] * 4)), batch_size=4
    )
    with pytest.warns(UserWarning, match="not pretrained"):
        trainer(tmp_path, [L2SP()], max_steps=1).fit(model, data)


def test_bad_arguments_and_paths_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"L2SP\(alpha=-1\) must be a number >= 0"):
        L2SP(alpha=-1)
    with pytest.raises(ValueError, match="name the head"):
        L2SP(beta=0.1, head=None)
    L2SP(beta=0.0, head=None)  # no head needed without its term
    with pytest.raises(ValueError, match=r"L2SP\(backbone='backbone'\): Plain has no such sub-module"):
        trainer(tmp_path, [L2SP(head="classifier")]).fit(Plain(), loader())
    with pytest.raises(ValueError, match=r"L2SP\(head='head'\)"):
        trainer(tmp_path, [L2SP(backbone="encoder")]).fit(Plain(), loader())


def test_fused_optimizer_under_16_mixed_is_refused(tmp_path: Path) -> None:
    class Fused(Plain):
        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.01, fused=True)

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    plugin = MixedPrecision("16-mixed", "cpu", scaler)
    with pytest.raises(ValueError, match="fused=True"):
        trainer(tmp_path, [L2SP(backbone="encoder", head="classifier")], plugins=[plugin]).fit(
            Fused(), loader()
        )


def test_picklable_without_live_parameters(tmp_path: Path) -> None:
    l2sp = L2SP(backbone="encoder", head="classifier")
    trainer(tmp_path, [l2sp], max_steps=1).fit(Plain(), loader())
    copy = pickle.loads(pickle.dumps(l2sp))
    assert sorted(copy.snapshot) == sorted(l2sp.snapshot) and copy._backbone_params == []
