"""The time-series backbones in the transfer machinery, unchanged: fine-tuning modes, freeze,
ProgressiveUnfreezing, FeatureCache, DomainAdaptationModule and the transferability scores."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from lt_transfer import (
    DomainAdaptationModule,
    FeatureCache,
    ProgressiveUnfreezing,
    TimeSeriesClassificationDataModule,
    TransferClassifier,
    freeze,
)
from lt_transfer.backbones import FCNBackbone, InceptionTimeBackbone, ResNet1DBackbone
from lt_transfer.data import combined_train_loader
from lt_transfer.ranking import SCORES


def _trainer(**kwargs) -> pl.Trainer:
    options = dict(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    return pl.Trainer(**{**options, **kwargs})


def _data(name: str = "GunPoint", **kwargs) -> TimeSeriesClassificationDataModule:
    options = {"length": 32, "length_mode": "resample", "labels_per_class": 4, "batch_size": 4, **kwargs}
    return TimeSeriesClassificationDataModule(name, **options)


def _tiny(kind: str = "fcn", in_channels: int = 1):
    torch.manual_seed(0)
    if kind == "fcn":
        return FCNBackbone(in_channels, filters=(4, 8, 4))
    if kind == "resnet1d":
        return ResNet1DBackbone(in_channels, filters=(4, 4, 4))
    return InceptionTimeBackbone(in_channels, depth=3, filters=2, bottleneck=2, kernel_sizes=(9, 5))


@pytest.mark.parametrize("kind", ["fcn", "resnet1d", "inception"])
def test_transfer_classifier_fits_a_ucr_set(kind: str) -> None:
    data = _data()
    model = TransferClassifier(_tiny(kind), num_classes=data.num_classes)
    trainer = _trainer(max_epochs=1)
    trainer.fit(model, data)
    assert trainer.global_step == 2  # 8 series, batch 4
    assert trainer.test(model, data, verbose=False)[0]["test/acc"] >= 0


def test_partial_finetuning_and_freeze_by_group() -> None:
    model = TransferClassifier(_tiny("resnet1d"), num_classes=2, finetune="partial", trainable_groups=1)
    assert [g.name for g in model.trainable_layer_groups()] == ["block3"]
    model.train()
    assert not model.backbone.model.block1.training and model.backbone.model.block3.training
    names = freeze(model, groups=[1])
    assert names and all(".block2." in name for name in names)
    assert [g.name for g in model.trainable_layer_groups()] == ["block3"]


def test_progressive_unfreezing_unfreezes_every_block() -> None:
    data = _data()
    model = TransferClassifier(_tiny("fcn"), num_classes=2)
    callback = ProgressiveUnfreezing(unfreeze_at_epoch=[1, 2, 3])
    _trainer(max_epochs=4, callbacks=[callback]).fit(model, data)
    assert [g.name for g in model.trainable_layer_groups()] == ["block1", "block2", "block3"]
    optimizer_params = {id(p) for g in model.trainer.optimizers[0].param_groups for p in g["params"]}
    assert all(id(p) in optimizer_params for p in model.backbone.parameters())


def test_feature_cache_computes_each_series_once() -> None:
    data = _data(labels_per_class=6, val_fraction=None)
    model = TransferClassifier(_tiny("inception"), num_classes=2, finetune="frozen")
    cache = FeatureCache(backbone="backbone", cache_val=False)
    _trainer(max_epochs=3, callbacks=[cache], limit_val_batches=0).fit(model, data)
    assert (cache.builds, cache.computed_samples) == (1, 12)


def test_domain_adaptation_between_two_ucr_sets() -> None:
    source, target = _data("GunPoint"), _data("ArrowHead", labels_per_class=3)
    for dm in (source, target):
        dm.setup("fit")
    train = combined_train_loader(
        DataLoader(source.train_set, batch_size=4, shuffle=True),
        DataLoader(target.train_set, batch_size=4, shuffle=True),
    )
    model = DomainAdaptationModule(_tiny("fcn"), num_classes=2, method="dann", discriminator_hidden=8)
    before = [p.detach().clone() for p in model.domain_loss.parameters()]
    trainer = _trainer(max_epochs=1)
    trainer.fit(model, train_dataloaders=train, val_dataloaders=DataLoader(source.train_set, batch_size=8))
    assert trainer.global_step == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, model.domain_loss.parameters(), strict=True))
    assert 0 <= float(trainer.callback_metrics["val/0/acc"]) <= 1


def test_transferability_scores_on_series_features() -> None:
    data = _data(labels_per_class=10)
    data.setup("fit")
    x, y = data.train_set.tensors
    backbone = _tiny("fcn").eval()
    with torch.no_grad():
        features = backbone(x)
    for name in ("logme", "h_score", "transrate"):
        assert torch.isfinite(torch.tensor(SCORES[name](features, y)))


def test_multivariate_unequal_length_set_with_a_spec_backbone() -> None:
    data = TimeSeriesClassificationDataModule("JapaneseVowels", labels_per_class=2, batch_size=6)
    assert (data.in_channels, data.length, data.num_classes) == (12, 29, 9)
    model = TransferClassifier(FCNBackbone(in_channels=data.in_channels, filters=(4, 4, 4)), num_classes=9)
    trainer = _trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(model, data)
    assert trainer.global_step == 3
