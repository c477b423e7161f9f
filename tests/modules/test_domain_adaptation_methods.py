"""DomainAdaptationModule's CDAN(+E), MCC, DANN+MCC and self-training: fast_dev_run, resume, label-free."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer.backbones import LeNetBackbone
from lt_transfer.data.domain_adaptation import DomainAdaptationDataModule
from lt_transfer.losses import CDANLoss, mcc_loss, self_training_loss
from lt_transfer.modules.domain_adaptation import DomainAdaptationModule
from tests.label_guard import untouchable_labels
from tests.modules.test_domain_adaptation import _dm, _model, _trainer

#: The new methods and method combinations, with settings that make each term non-trivial here.
NEW_METHODS: dict[str, dict[str, object]] = {
    "cdan": {"method": "cdan"},
    "cdan_randomized": {"method": "cdan", "cdan_map": "randomized", "randomized_dim": 16},
    "mcc": {"method": "mcc"},
    "dann_mcc": {"method": "dann", "mcc_weight": 1.0},
    "self_training": {"method": "self_training", "pseudo_label_threshold": 0.4},
    "self_training_balanced": {"method": "self_training", "class_balanced_thresholds": True},
}
#: Every method that has a target term (all of them label-free on the target).
LABEL_FREE: dict[str, dict[str, object]] = {
    **NEW_METHODS,
    "dann": {"method": "dann"},
    "mmd": {"method": "mmd"},
    "coral": {"method": "coral"},
}


def _batch(n_source: int = 4, n_target: int = 6, **target: object) -> dict[str, object]:
    g = torch.Generator().manual_seed(1)
    source = (torch.randn(n_source, 3, 8, 8, generator=g), torch.arange(n_source) % 3)
    return {"source": source, "target": {"x": torch.randn(n_target, 3, 8, 8, generator=g) + 1, **target}}


@pytest.mark.parametrize("name", list(NEW_METHODS))
def test_fast_dev_run(name: str) -> None:
    trainer = _trainer(fast_dev_run=True)
    trainer.fit(_model(**NEW_METHODS[name]), _dm())
    metrics = trainer.callback_metrics
    assert math.isfinite(float(metrics["train/loss"])) and "train/transfer_loss" in metrics
    if name == "dann_mcc":
        assert "train/mcc_loss" in metrics and "train/domain_acc" in metrics
    if name.startswith("self_training"):
        assert 0.0 <= float(metrics["train/pseudo_label_rate"]) <= 1.0


@pytest.mark.parametrize("name", list(LABEL_FREE))
def test_target_labels_are_never_read(name: str) -> None:
    """A target batch's labels raise on any access (compute_losses) or are NaN (a whole fit)."""
    model = _model(**LABEL_FREE[name])
    out = model.compute_losses(_batch(y=untouchable_labels(6)), coefficient=0.5)
    assert torch.isfinite(out["loss"])
    g = torch.Generator().manual_seed(0)
    source = TensorDataset(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g))
    target = TensorDataset(torch.randn(16, 3, 8, 8, generator=g), torch.full((16,), float("nan")))
    data = DomainAdaptationDataModule.from_datasets(source, target, num_classes=3, batch_size=4)
    trainer = _trainer(max_steps=3, limit_val_batches=0)
    trainer.fit(_model(**LABEL_FREE[name]), data)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))


class _RecordSteps(Callback):
    """The coefficient, the learning rate and the method's state at every training step."""

    def __init__(self) -> None:
        self.steps: dict[int, tuple[float, float, list[float]]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        state = [float(b.sum()) for n, b in pl_module.named_buffers() if not n.startswith("backbone")]
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.steps[trainer.global_step] = (pl_module.coefficient(), lr, state)


def _ordered_loader() -> CombinedLoader:
    """Unshuffled source/target loaders: a resumed epoch sees the same batches as the first run."""
    g = torch.Generator().manual_seed(0)
    source = TensorDataset(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g))
    target = TensorDataset(torch.randn(16, 3, 8, 8, generator=g) + 1)
    loaders = {"source": DataLoader(source, batch_size=4), "target": DataLoader(target, batch_size=4)}
    return CombinedLoader(loaders, mode="max_size_cycle")


@pytest.mark.parametrize("name", list(NEW_METHODS))
def test_resume_equals_uninterrupted(name: str, tmp_path: Path) -> None:
    """Fit 3 epochs; resume from the end of epoch 1: the same schedule, state and final weights."""
    kwargs = {**NEW_METHODS[name], "lr_annealing": True}
    full = _RecordSteps()
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, save_on_train_epoch_end=True)
    uninterrupted = _model(**kwargs)
    _trainer(max_epochs=3, callbacks=[ckpt, full], enable_checkpointing=True, limit_val_batches=0).fit(
        uninterrupted, train_dataloaders=_ordered_loader()
    )
    path = next(p for p in tmp_path.iterdir() if p.name.startswith("epoch=0"))
    resumed_record = _RecordSteps()
    resumed = _model(**kwargs)
    _trainer(max_epochs=3, callbacks=[resumed_record], limit_val_batches=0).fit(
        resumed, train_dataloaders=_ordered_loader(), ckpt_path=path
    )
    assert sorted(resumed_record.steps) == list(range(4, 12))
    for step, (coefficient, lr, state) in resumed_record.steps.items():
        assert coefficient == pytest.approx(full.steps[step][0], abs=1e-12)
        assert lr == pytest.approx(full.steps[step][1], rel=1e-9)
        assert state == pytest.approx(full.steps[step][2], rel=1e-6)
    expected = uninterrupted.state_dict()
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)


def test_self_training_uses_the_strong_view_and_the_same_view_without_one() -> None:
    model = _model(method="self_training", pseudo_label_threshold=0.34, joint_forward=True)
    sizes: list[int] = []
    model.backbone.register_forward_hook(lambda m, inp, out: sizes.append(len(inp[0])))
    plain = _batch()
    strong_view = torch.randn(6, 3, 8, 8) * 3
    with_strong = _batch(x_strong=strong_view)
    same = _batch(x_strong=plain["target"]["x"].clone())  # type: ignore[index]
    out_plain = model.compute_losses(plain, coefficient=1.0)
    assert sizes == [10]  # source + target in one forward
    out_same = model.compute_losses(same, coefficient=1.0)
    assert sizes[1] == 16  # source + weak + strong views in one forward
    # BatchNorm sees the extra rows, so compare with the strong logits computed the same way
    model.eval()
    with torch.no_grad():
        xs, xt = with_strong["source"][0], with_strong["target"]["x"]  # type: ignore[index]
        out = model.compute_losses(with_strong, coefficient=1.0)
        logits = model(torch.cat([xs, xt, strong_view]))
        expected = self_training_loss(logits[4:10], logits[10:], threshold=0.34)
    torch.testing.assert_close(out["transfer_loss"], expected)
    assert out_plain["pseudo_label_rate"] > 0 and torch.isfinite(out_same["loss"])
    # other methods ignore a strong view
    sizes.clear()
    cdan = _model(method="cdan", joint_forward=True)
    cdan.backbone.register_forward_hook(lambda m, inp, out: sizes.append(len(inp[0])))
    cdan.compute_losses(with_strong, coefficient=1.0)
    assert sizes == [10]


def test_per_domain_forward_covers_the_new_methods() -> None:
    for kwargs in NEW_METHODS.values():
        model = _model(**kwargs, joint_forward=False)
        sizes: list[int] = []
        model.backbone.register_forward_hook(lambda m, inp, out, sizes=sizes: sizes.append(len(inp[0])))
        model.compute_losses(_batch(x_strong=torch.randn(6, 3, 8, 8)), coefficient=1.0)
        assert sizes == ([4, 12] if kwargs["method"] == "self_training" else [4, 6]), kwargs


def test_mcc_weight_adds_the_weighted_term_to_any_method() -> None:
    batch = _batch()
    for method in ("dann", "cdan", "mmd", "coral", "self_training"):
        model = _model(method=method, mcc_weight=0.5)
        model.eval()  # same BatchNorm statistics in both calls
        out = model.compute_losses(batch, coefficient=0.4)
        with torch.no_grad():
            target_logits = model(batch["target"]["x"])  # type: ignore[index]
        expected_mcc = mcc_loss(target_logits, temperature=2.5)
        torch.testing.assert_close(out["mcc_loss"], expected_mcc, rtol=1e-4, atol=1e-6)
        without = out["loss"] - 0.5 * 0.4 * out["mcc_loss"]
        if method in ("dann", "cdan"):
            expected = out["source_loss"] + out["transfer_loss"]
        else:
            expected = out["source_loss"] + 0.4 * out["transfer_loss"]
        torch.testing.assert_close(without, expected)
    alone = _model(method="mcc", trade_off=2.0).eval()
    out = alone.compute_losses(batch, coefficient=0.5)
    torch.testing.assert_close(out["loss"], out["source_loss"] + 2.0 * 0.5 * out["transfer_loss"])


def test_cdan_map_follows_the_papers_rule_and_its_state_is_checkpointed() -> None:
    def width(model: DomainAdaptationModule) -> int:
        assert isinstance(model.domain_loss, CDANLoss)
        return next(m for m in model.domain_loss.discriminator if isinstance(m, torch.nn.Linear)).in_features

    assert width(_model(method="cdan")) == 8 * 3  # small: the full multilinear map
    assert width(DomainAdaptationModule("lenet", method="cdan")) == 128 * 10
    wide = DomainAdaptationModule(LeNetBackbone(num_features=None), method="cdan")  # 768 x 10 > 4096
    assert width(wide) == 1024 and wide.domain_loss.random_features.shape == (1024, 768)
    randomized = _model(method="cdan", cdan_map="randomized", randomized_dim=16)
    assert width(randomized) == 16 and "domain_loss.random_features" in randomized.state_dict()
    full = _model(method="cdan", cdan_map="multilinear", entropy_conditioning=False)
    assert width(full) == 24 and not full.domain_loss.entropy_conditioning
    # the random matrices are the same in every process (seeded), so DDP ranks agree
    again = _model(method="cdan", cdan_map="randomized", randomized_dim=16)
    assert torch.equal(again.domain_loss.random_features, randomized.domain_loss.random_features)


def test_self_training_class_statistics_are_buffers_updated_in_training_only() -> None:
    model = _model(method="self_training", class_balanced_thresholds=True, pseudo_label_threshold=0.34)
    assert {"self_training_loss.learning_effect", "self_training_loss.unused"} <= set(model.state_dict())
    before = model.self_training_loss.unused.clone()
    model.compute_losses(_batch(), coefficient=1.0)
    assert not torch.equal(model.self_training_loss.unused, before)
    model.eval()
    after = model.self_training_loss.unused.clone()
    model.compute_losses(_batch(), coefficient=1.0)
    assert torch.equal(model.self_training_loss.unused, after)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "self_training", "pseudo_label_threshold": 1.5}, r"threshold=1.5\) must lie in"),
        ({"method": "self_training", "pseudo_label_threshold": 0.0}, "must lie in"),
        ({"method": "dann", "pseudo_label_threshold": 0.9}, "does not use pseudo_label_threshold"),
        ({"method": "mcc", "mcc_weight": 1.0}, "does not use mcc_weight.*weighs MCC with trade_off"),
        ({"method": "source_only", "mcc_weight": 1.0}, "does not use mcc_weight"),
        ({"method": "dann", "mcc_weight": -1.0}, r"mcc_weight=-1.0\) must be a finite number"),
        ({"method": "dann", "mcc_temperature": 2.0}, "does not use mcc_temperature"),
        ({"method": "mcc", "mcc_temperature": 0.0}, r"mcc_temperature=0.0\) must be a number > 0"),
        ({"method": "dann", "entropy_conditioning": True}, "does not use entropy_conditioning"),
        ({"method": "cdan", "cdan_map": "multilinear", "randomized_dim": 64}, "dim=64.*multilinear"),
        ({"method": "cdan", "cdan_map": "random"}, r"cdan_map='random'\) must be one of"),
        ({"method": "cdan", "randomized_dim": 0}, r"randomized_dim=0\) must be an int >= 1"),
        ({"method": "mmd", "trade_off_on": "reversal"}, "does not use trade_off_on"),
        ({"method": "adda"}, r"method='adda'\) must be one of \['dann', 'cdan'"),
    ],
)
def test_bad_method_arguments_name_the_argument(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DomainAdaptationModule(**kwargs)  # type: ignore[arg-type]


def test_method_arguments_used_by_their_methods_are_accepted() -> None:
    DomainAdaptationModule(method="dann", mcc_weight=0.3, mcc_temperature=2.0, trade_off_on="reversal")
    DomainAdaptationModule(method="cdan", trade_off_on="reversal", discriminator_hidden=32, randomized_dim=64)
    DomainAdaptationModule(method="self_training", pseudo_label_threshold=0.9, class_balanced_thresholds=True)
    model = DomainAdaptationModule(method="mcc", mcc_temperature=3.0)
    assert model.hparams.mcc_weight is None and model.hparams.pseudo_label_threshold is None
