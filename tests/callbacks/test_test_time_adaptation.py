"""TENT and AdaBN: adapt during test/predict on any classifier, restore afterwards, need BatchNorm."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer import AdaBN, DomainAdaptationModule, LeNetBackbone, TransferClassifier
from lt_transfer.backbones import Backbone
from lt_transfer.callbacks.test_time_adaptation import TENT
from lt_transfer.losses import entropy_loss
from tests.conftest import make_tiny_backbone
from tests.label_guard import ReadyBatches, untouchable_labels


def _trainer(callbacks: list[Callback], **kwargs: object) -> pl.Trainer:
    options = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    options.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **options)  # type: ignore[arg-type]


def _classifier() -> TransferClassifier:
    torch.manual_seed(0)
    return TransferClassifier(make_tiny_backbone(), num_classes=3).eval()


def _data(n: int = 32, shift: float = 2.0, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g) * 2 + shift
    return TensorDataset(x, torch.randint(0, 3, (n,), generator=g))


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tiny network's BatchNorm entries (its blocks are conv, BatchNorm, ReLU)."""
    return {k: v.clone() for k, v in model.state_dict().items() if ".1." in k}


class _Snoop(Callback):
    """Runs after the adaptation callback: records the BatchNorm state the model predicts with."""

    def __init__(self) -> None:
        self.states: list[tuple[int, dict[str, torch.Tensor], bool]] = []

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        layer = pl_module.backbone.model.stem[1]
        self.states.append((dataloader_idx, _bn_state(pl_module), layer.training))


def test_tent_adapts_only_batch_norm_affine_parameters_and_restores_them() -> None:
    model = _classifier()
    before = copy.deepcopy(model.state_dict())
    snoop = _Snoop()
    loader = DataLoader(_data(), batch_size=8)
    _trainer([TENT(optimizer=lambda p: torch.optim.SGD(p, lr=0.5)), snoop]).test(model, loader)
    assert len(snoop.states) == 4 and all(training for _, _, training in snoop.states)  # batch statistics
    adapted = snoop.states[-1][1]
    assert not torch.equal(adapted["backbone.model.stem.1.weight"], before["backbone.model.stem.1.weight"])
    for key, value in model.state_dict().items():  # everything restored, values and modes
        assert torch.equal(value, before[key]), key
    assert not model.backbone.model.stem[1].training
    assert all(p.requires_grad for p in model.parameters())


def test_tent_keep_lowers_the_entropy_and_leaves_other_weights_alone() -> None:
    model = _classifier()
    before = copy.deepcopy(model.state_dict())
    data = _data(64)
    with torch.no_grad():
        entropy_before = float(entropy_loss(model(data.tensors[0])))
    tent = TENT(optimizer=lambda p: torch.optim.Adam(p, lr=0.05), steps=3, keep=True)
    _trainer([tent]).test(model, DataLoader(data, batch_size=16))
    model.eval()
    with torch.no_grad():
        entropy_after = float(entropy_loss(model(data.tensors[0])))
    assert entropy_after < entropy_before
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(".1." in k for k in changed)  # only BatchNorm entries (affine and statistics)
    assert any(k.endswith(".weight") for k in changed) and not model.backbone.model.stem[1].training


def test_tent_and_adabn_need_batch_norm() -> None:
    model = DomainAdaptationModule(LeNetBackbone(batch_norm=False), method="source_only").eval()
    loader = DataLoader(TensorDataset(torch.randn(4, 3, 28, 28)), batch_size=2)
    with pytest.raises(ValueError, match="TENT needs BatchNorm layers with affine parameters"):
        _trainer([TENT()]).predict(model, loader)
    with pytest.raises(ValueError, match="AdaBN needs BatchNorm layers that keep running statistics"):
        _trainer([AdaBN()]).predict(model, loader)
    with pytest.raises(ValueError, match="steps=0"):
        TENT(steps=0)
    with pytest.raises(ValueError, match="max_batches=0"):
        AdaBN(max_batches=0)
    with pytest.raises(ValueError, match="dataloader_idx=-1"):
        AdaBN(dataloader_idx=-1)
    with pytest.raises(ValueError, match="dataloader_idx=3.*1 dataloader"):
        _trainer([AdaBN(dataloader_idx=3)]).predict(_classifier(), DataLoader(_data(8), batch_size=4))


def test_adabn_statistics_are_the_target_data_averages() -> None:
    """With BatchNorm at the input, AdaBN's running mean is the data mean and the variance the mean
    of the (unbiased) per-batch variances: momentum=None averages the batches."""
    trunk = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    torch.manual_seed(0)
    model = TransferClassifier(Backbone(trunk, 4), num_classes=3).eval()
    x = _data(32, shift=3.0).tensors[0]
    _trainer([AdaBN(keep=True)]).predict(model, DataLoader(TensorDataset(x), batch_size=8))
    layer = model.backbone.model[0]
    torch.testing.assert_close(layer.running_mean, x.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-5)
    variances = torch.stack([b.transpose(0, 1).flatten(1).var(1) for b in x.split(8)]).mean(0)
    torch.testing.assert_close(layer.running_var, variances, rtol=1e-5, atol=1e-5)
    assert layer.momentum == 0.1 and not layer.training


def test_adabn_undoes_an_input_shift_that_source_statistics_cannot() -> None:
    """A source-trained model with BatchNorm at its input; the target is the source scaled and shifted
    per channel. With the target's statistics the model predicts as on the source."""
    trunk = nn.Sequential(nn.BatchNorm2d(3), nn.Flatten())
    torch.manual_seed(0)
    model = TransferClassifier(Backbone(trunk, 3 * 8 * 8), num_classes=3)
    source = _data(96, shift=0.0)
    trunk[0].momentum = None  # the source data's exact statistics
    model.train()
    model(source.tensors[0])
    model.eval()
    with torch.no_grad():
        on_source = model(source.tensors[0]).argmax(1)
    target = TensorDataset(source.tensors[0] * 3 + 5, source.tensors[1])
    with torch.no_grad():
        on_target = model(target.tensors[0]).argmax(1)
    assert (on_target != on_source).float().mean() > 0.1  # the shift breaks the source statistics
    predictions = _trainer([AdaBN()]).predict(model, DataLoader(target, batch_size=96))
    assert torch.equal(predictions[0].argmax(1), on_source)


def test_adabn_gives_each_loader_its_own_statistics_and_restores_them() -> None:
    model = _classifier()
    before = copy.deepcopy(model.state_dict())
    snoop = _Snoop()
    loaders = [DataLoader(_data(16, shift=shift), batch_size=8) for shift in (0.0, 4.0)]
    _trainer([AdaBN(), snoop]).test(model, loaders)
    mean = "backbone.model.stem.1.running_mean"
    first = [s[mean] for i, s, _ in snoop.states if i == 0]
    second = [s[mean] for i, s, _ in snoop.states if i == 1]
    assert len(first) == len(second) == 2 and torch.equal(first[0], first[1])
    assert not torch.allclose(first[0], second[0]) and not torch.allclose(first[0], before[mean])
    assert not any(training for _, _, training in snoop.states)  # eval mode with the new statistics
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # only loader 1: loader 0 keeps the original statistics
    snoop = _Snoop()
    _trainer([AdaBN(dataloader_idx=1), snoop]).test(model, loaders)
    assert all(torch.equal(s[mean], before[mean]) for i, s, _ in snoop.states if i == 0)
    assert all(not torch.equal(s[mean], before[mean]) for i, s, _ in snoop.states if i == 1)


def test_tent_on_one_loader_only() -> None:
    model = _classifier()
    snoop = _Snoop()
    loaders = [DataLoader(_data(16), batch_size=8), DataLoader(_data(16, seed=1), batch_size=8)]
    _trainer([TENT(dataloader_idx=1), snoop]).test(model, loaders)
    modes = [(i, training) for i, _, training in snoop.states]
    assert modes == [(0, False), (0, False), (1, True), (1, True)]


class _Failing(TransferClassifier):
    def test_step(self, batch, batch_idx, dataloader_idx=0):  # noqa: ANN001, ANN201
        raise RuntimeError("boom")


@pytest.mark.parametrize("callback", [TENT(keep=True), AdaBN(keep=True)], ids=["tent", "adabn"])
def test_a_failing_run_restores_the_model_even_with_keep(callback: Callback) -> None:
    torch.manual_seed(0)
    model = _Failing(make_tiny_backbone(), num_classes=3).eval()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeError, match="boom"):
        _trainer([callback]).test(model, DataLoader(_data(16), batch_size=8))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("make", [TENT, AdaBN], ids=["tent", "adabn"])
def test_fast_dev_run_and_labels_never_read(make: type) -> None:
    """Predict batches whose labels raise when read; a fast_dev_run test on a DomainAdaptationModule."""
    model = _classifier()
    batches = ReadyBatches([{"x": torch.randn(8, 3, 8, 8) + 2, "y": untouchable_labels(8)} for _ in range(2)])
    predictions = _trainer([make()]).predict(model, batches)
    assert len(predictions) == 2 and predictions[0].shape == (8, 3)
    da = DomainAdaptationModule(make_tiny_backbone(), num_classes=3, method="source_only").eval()
    trainer = _trainer([make()], fast_dev_run=True)
    trainer.test(da, DataLoader(_data(16), batch_size=8))
    assert "test/0/acc" in trainer.callback_metrics
