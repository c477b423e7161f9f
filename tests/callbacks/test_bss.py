"""BSS callback: the logged penalty, k against the batch size, features of the wrong shape."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lt_transfer.callbacks import BSS
from lt_transfer.losses import bss_loss
from tests.callbacks.regularized import Plain, loader, trainer


def test_logged_penalty_is_bss_of_the_batch_features(tmp_path: Path) -> None:
    class Expected(pl.Callback):
        value: float | None = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.value is None:
                with torch.no_grad():
                    self.value = float(bss_loss(pl_module.encoder(batch[0]), k=2, eta=0.5))

    expected = Expected()
    run = trainer(tmp_path, [expected, BSS(eta=0.5, k=2, backbone="encoder")], max_steps=1)
    run.fit(Plain(), loader())
    # the first training forward sees the same weights and batch (BatchNorm: same batch statistics)
    assert float(run.callback_metrics["bss/penalty"]) == pytest.approx(expected.value)
    assert expected.value > 0


def test_k_at_least_the_batch_size_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"BSS\(k=8\) must be smaller than the batch size 8"):
        trainer(tmp_path, [BSS(k=8, backbone="encoder")]).fit(Plain(), loader(batch_size=8))
    with pytest.raises(ValueError, match=r"BSS\(k=0\) must be an int >= 1"):
        BSS(k=0)
    with pytest.raises(ValueError, match=r"BSS\(eta=-1\)"):
        BSS(eta=-1)


def test_a_short_last_batch_is_trained_without_the_penalty_and_warned_about(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="drop_last=True"):
        trainer(tmp_path, [BSS(k=1, backbone="encoder")], max_steps=5).fit(Plain(), loader(n=33))


def test_features_that_are_not_n_by_d_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"shrinks the singular values of pooled \(N, D\) batch features"):
        trainer(tmp_path, [BSS(backbone="encoder.0")]).fit(Plain(), loader())
