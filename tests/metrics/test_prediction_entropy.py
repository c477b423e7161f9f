import math

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer.metrics import PredictionEntropy, prediction_entropy


def test_uniform_and_one_hot_limits():
    uniform = torch.zeros(5, 4)
    assert prediction_entropy(uniform).item() == pytest.approx(math.log(4))
    assert prediction_entropy(uniform, normalize=True).item() == pytest.approx(1.0)
    one_hot = torch.eye(4)
    assert prediction_entropy(one_hot, from_logits=False).item() == pytest.approx(0.0, abs=1e-6)


def test_class_equals_functional_over_batches():
    logits = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    metric = PredictionEntropy()
    for chunk in logits.split(7):
        metric.update(chunk)
    assert metric.compute().item() == pytest.approx(prediction_entropy(logits).item(), rel=1e-5)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_empty_is_nan_and_bad_shape_raises():
    assert torch.isnan(PredictionEntropy().compute())
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        prediction_entropy(torch.zeros(4))


class _UnlabelledTargetModel(pl.LightningModule):
    """Logs the target entropy from an unlabelled validation loader."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 3)
        self.entropy = PredictionEntropy()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        (x,) = batch
        self.entropy(self.net(x))
        self.log("val/target/entropy", self.entropy, on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_usable_by_model_checkpoint_without_target_labels(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    train = DataLoader(TensorDataset(x, y), batch_size=16)
    val = DataLoader(TensorDataset(torch.randn(32, 4, generator=g)), batch_size=16)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/target/entropy", mode="min")
    trainer = pl.Trainer(
        max_epochs=3,
        logger=False,
        callbacks=[checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(_UnlabelledTargetModel(), train, val)
    assert checkpoint.best_model_score is not None and torch.isfinite(checkpoint.best_model_score)
    assert checkpoint.best_model_path
