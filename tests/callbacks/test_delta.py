"""DELTA callback: channel attention, the pretrained copy, the data order, and bad input."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer import Backbone, TransferClassifier
from lt_transfer.callbacks import DELTA
from tests.callbacks.regularized import Plain, loader, trainer


class FirstPenalty(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        self.values.append(float(trainer.callback_metrics["delta/penalty"]))


def test_attention_is_a_distribution_per_layer_and_the_copy_never_changes(tmp_path: Path) -> None:
    model = Plain()
    delta = DELTA(alpha=0.5, layers=["2", "4"], backbone="encoder", attention_batches=2)
    seen = FirstPenalty()
    trainer(tmp_path, [delta, seen]).fit(model, loader())
    for name, channels in (("2", 4), ("4", 6)):
        weights = delta.channel_weights[name]
        assert weights.shape == (channels,) and bool((weights >= 0).all())
        assert float(weights.sum()) == pytest.approx(1.0)
    # the copy is the starting encoder: its weights and BatchNorm statistics are those of a fresh one
    start = Plain().encoder.state_dict()
    assert sorted(delta.snapshot) == sorted(k for k in start if not k.endswith("num_batches_tracked"))
    assert all(torch.equal(delta.snapshot[k], start[k]) for k in delta.snapshot)
    # at the first step w = w0, and the copy normalises like the model: the penalty is exactly 0
    assert seen.values[0] == 0.0 and seen.values[-1] > 0.0


def test_pooling_shortcut_equals_the_rest_of_the_pretrained_network(tmp_path: Path) -> None:
    model = Plain()
    delta = DELTA(layers=["4"], backbone="encoder")
    trainer(tmp_path, [delta], max_steps=1).fit(model, loader())
    x = torch.randn(5, 3, 6, 6)
    copy = delta._copy
    maps = copy[:5](x)
    features = copy(x)
    shortcut = delta._rest_after("4", maps, features, x)
    general = delta._rest_after("4", maps, features + 1.0, x)  # features that pooling cannot explain
    masked = maps.clone()
    masked[:, 2] = 0
    torch.testing.assert_close(shortcut(masked), general(masked))
    torch.testing.assert_close(general(maps), features)


def test_attention_leaves_the_training_order_unchanged(tmp_path: Path) -> None:
    class Order(pl.Callback):
        def __init__(self) -> None:
            self.sums: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.sums.append(float(batch[0].sum()))

    orders = []
    for callbacks in ([], [DELTA(layers=["4"], backbone="encoder", attention_batches=3)]):
        pl.seed_everything(0)
        order = Order()
        trainer(tmp_path, [*callbacks, order], max_steps=8).fit(Plain(), loader(shuffle=True))
        orders.append(order.sums)
    assert orders[0] == orders[1]


def _vector_model() -> TransferClassifier:
    return TransferClassifier(Backbone(nn.Linear(4, 4), 4, pretrained=True), num_classes=2)


def _vectors() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(8, 4), torch.tensor([0, 1] * 4)), batch_size=4)


@pytest.mark.parametrize("attention", [True, False])
def test_a_backbone_without_feature_maps_is_an_error_that_says_what_delta_needs(
    tmp_path: Path, attention: bool
) -> None:
    with pytest.raises(
        ValueError, match=r"outputs a shape \(\d+, 4\); DELTA needs the feature maps of a convolutional"
    ):
        trainer(tmp_path, [DELTA(attention=attention)], max_steps=1).fit(_vector_model(), _vectors())


def test_bad_arguments_unknown_layers_and_unlabelled_batches(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"DELTA\(alpha=-0.1\)"):
        DELTA(alpha=-0.1)
    with pytest.raises(ValueError, match="non-empty list"):
        DELTA(layers="features.3")
    with pytest.raises(ValueError, match="has no layer 'missing'"):
        trainer(tmp_path, [DELTA(layers=["missing"], backbone="encoder")]).fit(Plain(), loader())
    unlabelled = DataLoader(TensorDataset(torch.randn(8, 3, 6, 6)), batch_size=4)

    class Unsupervised(Plain):
        def training_step(self, batch, batch_idx):
            return self(batch[0]).pow(2).mean()

    with pytest.raises(ValueError, match="have no labels; pass attention=False"):
        trainer(tmp_path, [DELTA(layers=["4"], backbone="encoder")]).fit(Unsupervised(), unlabelled)
    trainer(tmp_path, [DELTA(layers=["4"], backbone="encoder", attention=False)], max_steps=1).fit(
        Unsupervised(), unlabelled
    )


def test_one_dimensional_conv_maps_are_feature_maps(tmp_path: Path) -> None:
    trunk = nn.Sequential(
        nn.Conv1d(2, 5, 3), nn.BatchNorm1d(5), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten()
    )
    model = TransferClassifier(Backbone(trunk, 5, pretrained=True), num_classes=3)
    series = DataLoader(TensorDataset(torch.randn(12, 2, 16), torch.arange(12) % 3), batch_size=6)
    delta = DELTA(alpha=0.5, layers=["model.2"])
    seen = FirstPenalty()
    trainer(tmp_path, [delta, seen], max_steps=4).fit(model, series)
    assert delta.channel_weights["model.2"].shape == (5,)
    assert seen.values[0] == 0.0 and seen.values[-1] > 0.0
