"""Tests for ProgressiveUnfreezing: resume, DDP, schedulers, identity, BatchNorm, AMP, plug-in, CLI."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins import MixedPrecision
from torch import nn
from torch.optim import lr_scheduler as sched
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer.callbacks import ProgressiveUnfreezing
from tests.ddp import ddp_trainer, run_two_ranks

STEPS_PER_EPOCH = 4


def _data(n: int = 32, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.randn(n, 4, generator=generator), torch.randint(0, 2, (n,), generator=generator)
    )


def _loader() -> DataLoader:
    return DataLoader(_data(), batch_size=8, shuffle=False)


def _scheduler(name: str, optimizer: torch.optim.Optimizer, max_lr: float | list[float] = 0.1):
    """Build the scheduler ``name``; returns (scheduler, interval)."""
    total = 6 * STEPS_PER_EPOCH
    if name == "step":
        return sched.StepLR(optimizer, step_size=1, gamma=0.5), "epoch"
    if name == "multistep":
        return sched.MultiStepLR(optimizer, milestones=[1, 3], gamma=0.3), "epoch"
    if name == "exponential":
        return sched.ExponentialLR(optimizer, gamma=0.8), "step"
    if name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=total, eta_min=0.001), "step"
    if name == "lambda":
        return sched.LambdaLR(optimizer, lambda epoch: 1.0 / (1 + epoch)), "epoch"
    if name == "onecycle":
        return sched.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total), "step"
    if name == "plateau":
        return sched.ReduceLROnPlateau(optimizer, factor=0.5, patience=0, min_lr=1e-4), "epoch"
    if name == "sequential":
        first = sched.LinearLR(optimizer, start_factor=0.5, total_iters=2)
        second = sched.CosineAnnealingLR(optimizer, T_max=4, eta_min=0.002)
        return sched.SequentialLR(optimizer, [first, second], milestones=[2]), "epoch"
    if name == "chained":
        first = sched.ExponentialLR(optimizer, gamma=0.9)
        second = sched.MultiStepLR(optimizer, milestones=[2], gamma=0.5)
        return sched.ChainedScheduler([first, second], optimizer), "epoch"
    if name == "cyclic":  # cycles Adam's beta1 too: the new groups' momentum must cycle with them
        base_lr = [m / 10 for m in max_lr] if isinstance(max_lr, list) else max_lr / 10
        return sched.CyclicLR(optimizer, base_lr=base_lr, max_lr=max_lr, step_size_up=3), "step"
    if name == "cosine_warm_restarts":
        return sched.CosineAnnealingWarmRestarts(optimizer, T_0=3, T_mult=2, eta_min=0.002), "step"
    if name == "multiplicative":
        return sched.MultiplicativeLR(optimizer, lambda epoch: 0.7), "epoch"
    if name == "constant":
        return sched.ConstantLR(optimizer, factor=0.5, total_iters=10), "step"
    if name == "polynomial":
        return sched.PolynomialLR(optimizer, total_iters=total, power=2.0), "step"
    if name == "hf_linear_warmup":
        from transformers import get_linear_schedule_with_warmup

        return get_linear_schedule_with_warmup(optimizer, 3, total), "step"
    if name == "hf_cosine_warmup":
        from transformers import get_cosine_schedule_with_warmup

        return get_cosine_schedule_with_warmup(optimizer, 3, total), "step"
    raise ValueError(name)


SCHEDULERS = [
    "step",
    "multistep",
    "exponential",
    "cosine",
    "lambda",
    "onecycle",
    "plateau",
    "sequential",
    "chained",
    "cyclic",
    "cosine_warm_restarts",
    "multiplicative",
    "constant",
    "polynomial",
    "hf_linear_warmup",
    "hf_cosine_warmup",
]


class PlugInModule(pl.LightningModule):
    """Written without knowledge of lt_transfer: own names, Adam over trainable params, a scheduler."""

    def __init__(self, scheduler: str | None = "multistep", head_bn: bool = False, lr: float = 0.1) -> None:
        super().__init__()
        self.scheduler_name = scheduler
        self.lr = lr
        self.feature_extractor = nn.Sequential(
            nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)
        )
        self.classifier = nn.Sequential(nn.BatchNorm1d(8), nn.Linear(8, 2)) if head_bn else nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.feature_extractor(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        self.log("score", 1.0, on_epoch=True, on_step=False)  # constant: deterministic plateau
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.lr)
        if self.scheduler_name is None:
            return optimizer
        scheduler, interval = _scheduler(self.scheduler_name, optimizer)
        config = {"scheduler": scheduler, "interval": interval}
        if self.scheduler_name == "plateau":
            config["monitor"] = "score"
        return {"optimizer": optimizer, "lr_scheduler": config}


def _trainer(tmp_path: Path, callbacks: list, max_epochs: int = 4, **kwargs) -> pl.Trainer:
    defaults = dict(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        deterministic=True,
    )
    defaults.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **defaults)


class LrRecorder(pl.Callback):
    """Record every group's lr (and Adam's beta1, which CyclicLR cycles) at every training batch
    (after the unfreezing callback ran)."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.beta1: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])
        self.beta1.append([g["betas"][0] for g in trainer.optimizers[0].param_groups if "betas" in g])


# ------------------------------------------------------------------ schedulers
def _reference_lrs(
    name: str, scales: list[float], unfreeze_epochs: list[int], max_epochs: int
) -> tuple[list[list[float]], list[list[float]]]:
    """An independent uninterrupted run: every group is in the optimizer from the start with
    lr = scale * head lr; the scheduler is stepped exactly as Lightning steps it. Returns the lrs
    and Adam's beta1 of the groups the real run has at each training batch."""
    params = [nn.Parameter(torch.zeros(1)) for _ in scales]
    base = 0.1
    optimizer = torch.optim.Adam(
        [{"params": [p], "lr": base * s} for p, s in zip(params, scales, strict=True)]
    )
    scheduler, interval = _scheduler(name, optimizer, max_lr=[base * s for s in scales])
    lrs, beta1 = [], []
    for epoch in range(max_epochs):
        visible = 1 + sum(1 for e in unfreeze_epochs if e <= epoch)  # groups present in the real run
        for _ in range(STEPS_PER_EPOCH):
            lrs.append([g["lr"] for g in optimizer.param_groups][:visible])
            beta1.append([g["betas"][0] for g in optimizer.param_groups][:visible])
            optimizer.step()
            if interval == "step":
                scheduler.step()
        if interval == "epoch":
            scheduler.step(1.0) if name == "plateau" else scheduler.step()
    return lrs, beta1


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_group_follows_its_scheduler_exactly(tmp_path: Path, name: str) -> None:
    # one layer group per step (no no_decay split), two unfreeze steps
    callback = ProgressiveUnfreezing(
        unfreeze_at_epoch=[1, 3],
        groups_per_step=1,
        backbone="feature_extractor",
        backbone_lr_scale=0.5,
        no_decay=False,
    )
    recorder = LrRecorder()
    model = PlugInModule(scheduler=name)
    _trainer(tmp_path, [callback, recorder], max_epochs=5).fit(model, _loader())
    expected, beta1 = _reference_lrs(name, [1.0, 0.5, 0.5], [1, 3], 5)
    assert [len(r) for r in recorder.lrs] == [len(r) for r in expected]
    for got, want in zip(recorder.lrs, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-12, abs=0)
    for got, want in zip(recorder.beta1, beta1, strict=True):
        assert got == pytest.approx(want, rel=1e-12, abs=0)


def test_unsupported_scheduler_raises_at_fit_start(tmp_path: Path) -> None:
    class Custom(sched.LRScheduler):
        def get_lr(self):
            return [g["lr"] for g in self.optimizer.param_groups]

    class Module(PlugInModule):
        def configure_optimizers(self):
            optimizer = torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)
            return {"optimizer": optimizer, "lr_scheduler": Custom(optimizer)}

    callback = ProgressiveUnfreezing(1, backbone="feature_extractor")
    with pytest.raises(ValueError, match="lr scheduler Custom .*Use one of"):
        _trainer(tmp_path, [callback], max_epochs=2).fit(Module(None), _loader())


# ---------------------------------------------------------------------- resume
def _snapshot(trainer: pl.Trainer, model: pl.LightningModule) -> dict:
    optimizer = trainer.optimizers[0]
    return {
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "opt": optimizer.state_dict(),
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "lrs": [g["lr"] for g in optimizer.param_groups],
        "sched": trainer.lr_scheduler_configs[0].scheduler.state_dict(),
    }


def _assert_same(a: dict, b: dict) -> None:
    assert a["requires_grad"] == b["requires_grad"]
    assert a["lrs"] == b["lrs"]
    assert a["weights"].keys() == b["weights"].keys()
    for key in a["weights"]:
        assert torch.equal(a["weights"][key], b["weights"][key]), key
    assert len(a["opt"]["param_groups"]) == len(b["opt"]["param_groups"])
    for ga, gb in zip(a["opt"]["param_groups"], b["opt"]["param_groups"], strict=True):
        assert ga == gb
    assert a["opt"]["state"].keys() == b["opt"]["state"].keys()
    for index, state in a["opt"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["opt"]["state"][index][key]), (index, key)
    assert a["sched"] == b["sched"]


def test_resume_before_at_and_after_an_unfreeze_equals_uninterrupted(tmp_path: Path) -> None:
    def run(ckpt_path: str | None, callbacks: list) -> tuple[pl.Trainer, PlugInModule]:
        pl.seed_everything(0)
        model = PlugInModule(scheduler="step")
        unfreezing = ProgressiveUnfreezing(
            [1, 3],
            groups_per_step=2,
            backbone="feature_extractor",
            backbone_lr_scale=0.3,
            layer_decay=0.5,
            warmup_epochs=1,
        )
        trainer = _trainer(
            tmp_path, [unfreezing, *callbacks], max_epochs=5, enable_checkpointing=bool(callbacks)
        )
        trainer.fit(model, _loader(), ckpt_path=ckpt_path)
        return trainer, model

    checkpoints = ModelCheckpoint(
        dirpath=tmp_path / "ckpt",
        filename="{epoch}",
        save_top_k=-1,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
    )
    trainer, model = run(None, [checkpoints])
    reference = _snapshot(trainer, model)
    assert all(p.requires_grad for p in model.feature_extractor[3:].parameters())
    # end of epoch 0: before the unfreeze at epoch 1; end of 1: at it; end of 3: after the last
    for epoch in (0, 1, 3):
        resumed_trainer, resumed = run(str(tmp_path / "ckpt" / f"epoch={epoch}.ckpt"), [])
        _assert_same(_snapshot(resumed_trainer, resumed), reference)


# ------------------------------------------------------------------------- DDP
class GatherParams(pl.Callback):
    def __init__(self, out: str) -> None:
        self.out = out
        self.diffs: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        gathered = pl_module.all_gather(flat)
        self.diffs.append(float((gathered[0] - gathered[1]).abs().max()))
        if trainer.global_rank == 0:
            Path(self.out).write_text(json.dumps(self.diffs))


def test_ddp_ranks_identical_after_unfreeze(tmp_path: Path) -> None:
    """Exact: the largest parameter difference between the ranks is 0.0 after every epoch (without
    the re-wrap after an unfreeze the unfrozen groups are never all-reduced and the ranks drift)."""
    out = tmp_path / "diffs.json"
    model = PlugInModule(scheduler="step")
    callback = ProgressiveUnfreezing(1, backbone="feature_extractor", backbone_lr_scale=0.5)
    trainer = _trainer(
        tmp_path,
        [callback, GatherParams(str(out))],
        max_epochs=3,
        strategy="ddp_spawn",
        devices=2,
        deterministic=False,
    )
    trainer.fit(model, DataLoader(_data(64), batch_size=8, shuffle=True))
    diffs = json.loads(out.read_text())
    assert diffs == [0.0, 0.0, 0.0]


def _resume_worker(rank: int, out: str) -> None:
    def run(ckpt_path: str | None, callbacks: list) -> PlugInModule:
        pl.seed_everything(0, verbose=False)
        model = PlugInModule(scheduler="step")
        unfreezing = ProgressiveUnfreezing(
            [1, 3], groups_per_step=2, backbone="feature_extractor", backbone_lr_scale=0.5
        )
        trainer = ddp_trainer(
            max_epochs=5, callbacks=[unfreezing, *callbacks], enable_checkpointing=bool(callbacks)
        )
        trainer.fit(model, DataLoader(_data(64), batch_size=8, shuffle=True), ckpt_path=ckpt_path)
        return model

    checkpoints = ModelCheckpoint(
        dirpath=Path(out) / "ckpt", filename="{epoch}", save_top_k=-1, save_on_train_epoch_end=True
    )
    results = {"uninterrupted": [p.detach().clone() for p in run(None, [checkpoints]).parameters()]}
    for epoch in (1, 3):  # ends of the epochs of the two unfreeze steps
        resumed = run(str(Path(out) / "ckpt" / f"epoch={epoch}.ckpt"), [])
        results[f"resumed after epoch {epoch}"] = [p.detach().clone() for p in resumed.parameters()]
    torch.save(results, Path(out) / f"rank{rank}.pt")


def test_ddp_resume_after_an_unfreeze_keeps_ranks_identical_and_equals_uninterrupted(tmp_path: Path) -> None:
    """Resumed under DDP from a checkpoint written after an unfreeze, the re-applied groups are
    re-wrapped at fit start: the two ranks (different shards, so different gradients) stay
    bit-identical and the run equals the uninterrupted DDP run bit for bit. Without the re-wrap
    the re-applied groups are never all-reduced and the ranks differ by about 1e-2."""
    run_two_ranks(_resume_worker, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert list(ranks[0]) == ["uninterrupted", "resumed after epoch 1", "resumed after epoch 3"]
    for name, params in ranks[0].items():
        for index, (a, b) in enumerate(zip(params, ranks[1][name], strict=True)):
            assert torch.equal(a, b), (name, index, float((a - b).abs().max()))
        for a, b in zip(params, ranks[0]["uninterrupted"], strict=True):
            assert torch.equal(a, b), name


# -------------------------------------------------------------------- identity
def test_equal_valued_params_each_in_exactly_one_group(tmp_path: Path) -> None:
    model = PlugInModule(scheduler=None, head_bn=True)  # fresh BN weights: all ones in head and backbone
    callback = ProgressiveUnfreezing(1, backbone="feature_extractor")
    _trainer(tmp_path, [callback], max_epochs=2).fit(model, _loader())
    optimizer = model.trainer.optimizers[0]
    ids = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert (
        set(ids)
        == {id(p) for p in model.parameters() if p.requires_grad}
        == {id(p) for p in model.parameters()}
    )


# ------------------------------------------------------------------- BatchNorm
class CheckTrainEvalEqual(pl.Callback):
    def __init__(self) -> None:
        self.checked = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        x = batch[0]
        frozen = pl_module.feature_extractor
        with torch.no_grad():
            during_training = frozen(x)
            was = [m.training for m in frozen.modules()]
            frozen.eval()
            in_eval = frozen(x)
            for module, mode in zip(frozen.modules(), was, strict=True):
                module.training = mode
        assert torch.equal(during_training, in_eval)
        self.checked += 1


def test_frozen_batchnorm_stats_unchanged_through_fit_and_validate(tmp_path: Path) -> None:
    model = PlugInModule(scheduler=None)
    bn = model.feature_extractor[1]
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    check = CheckTrainEvalEqual()
    callback = ProgressiveUnfreezing(10, backbone="feature_extractor")
    model.validation_step = lambda batch, batch_idx: nn.functional.cross_entropy(model(batch[0]), batch[1])
    trainer = _trainer(tmp_path, [callback, check], max_epochs=2, num_sanity_val_steps=0)
    trainer.fit(model, _loader(), _loader())
    trainer.validate(model, _loader(), verbose=False)
    assert check.checked == 2 * STEPS_PER_EPOCH
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_module_that_calls_train_mid_epoch_keeps_frozen_groups_in_eval(tmp_path: Path) -> None:
    """A module that puts itself back in train mode between batches (after an evaluation pass of
    its own, say) does not make frozen BatchNorm train: before every training batch the callback
    puts the frozen groups back in eval mode, so their statistics stay bit-identical (found by
    ``make mutants``: without that guard every other test passed while the running statistics
    moved)."""
    model = PlugInModule(scheduler=None)
    bn = model.feature_extractor[1]
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    modes = []

    def own_evaluation_pass(outputs: object, batch: object, batch_idx: int) -> None:
        model.eval()
        with torch.no_grad():
            model(batch[0])  # type: ignore[index]
        model.train()  # the whole model, frozen groups included

    def record_mode(batch: object, batch_idx: int) -> None:
        modes.append(bn.training)

    model.on_train_batch_end = own_evaluation_pass  # type: ignore[method-assign]
    model.on_train_batch_start = record_mode  # type: ignore[method-assign]
    callback = ProgressiveUnfreezing(10, backbone="feature_extractor")
    _trainer(tmp_path, [callback], max_epochs=2, num_sanity_val_steps=0).fit(model, _loader())
    assert modes == [False] * (2 * STEPS_PER_EPOCH)
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_bn_without_running_stats_is_an_error_unless_frozen_mode_train(tmp_path: Path) -> None:
    model = PlugInModule(scheduler=None)
    model.feature_extractor[1] = nn.BatchNorm1d(8, track_running_stats=False)
    with pytest.raises(ValueError, match="track_running_stats=False.*frozen_mode='train'"):
        _trainer(tmp_path, [ProgressiveUnfreezing(1, backbone="feature_extractor")], 1).fit(model, _loader())
    _trainer(tmp_path, [ProgressiveUnfreezing(1, backbone="feature_extractor", frozen_mode="train")], 1).fit(
        model, _loader()
    )


# ------------------------------------------------------------------------- AMP
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_amp_unfreezing_mid_run(tmp_path: Path, precision: str) -> None:
    class Losses(pl.Callback):
        losses: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses.append(float(outputs["loss"]))

    model = PlugInModule(scheduler="step", lr=0.01)
    initial = [p.detach().clone() for p in model.feature_extractor.parameters()]
    kwargs = (
        {"precision": precision}
        if precision == "bf16-mixed"
        else {"plugins": [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=2.0**8))]}
    )
    losses = Losses()
    callback = ProgressiveUnfreezing(1, backbone="feature_extractor")
    _trainer(tmp_path, [callback, losses], max_epochs=2, **kwargs).fit(model, _loader())
    assert losses.losses and all(math.isfinite(v) for v in losses.losses)
    assert all(
        not torch.equal(a, b) for a, b in zip(initial, model.feature_extractor.parameters(), strict=True)
    )


# --------------------------------------------------------------------- plug-in
def test_plug_in_module_unfreezes_as_configured_and_logs_named_lrs(tmp_path: Path) -> None:
    model = PlugInModule(scheduler="multistep")
    first = [p.detach().clone() for p in model.feature_extractor.parameters()]
    seen = []

    class Watch(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append([p.requires_grad for p in pl_module.feature_extractor.parameters()])

    callback = ProgressiveUnfreezing(1, every_n_epochs=1, backbone="feature_extractor", verbose=True)
    trainer = _trainer(
        tmp_path,
        [callback, Watch(), LearningRateMonitor("epoch")],
        max_epochs=5,
        logger=CSVLogger(tmp_path),
    )
    trainer.fit(model, _loader())
    # groups 5, 3, 1, 0 of feature_extractor unfreeze at epochs 1, 2, 3, 4
    per_group = [[flags[i] for i in (6, 4, 2, 0)] for flags in seen]
    assert per_group == [[False] * 4, [True, False, False, False], [True, True, False, False],
                         [True, True, True, False], [True] * 4]  # fmt: skip
    assert all(
        not torch.equal(a, b) for a, b in zip(first, model.feature_extractor.parameters(), strict=True)
    )
    header = (Path(trainer.logger.log_dir) / "metrics.csv").read_text().splitlines()[0]
    assert "lr-Adam/feature_extractor.5" in header and "lr-Adam/feature_extractor.1.no_decay" in header


def test_lr_finder_runs_with_the_callback(tmp_path: Path) -> None:
    from lightning.pytorch.tuner import Tuner

    model = PlugInModule(scheduler=None)
    callback = ProgressiveUnfreezing(1, backbone="feature_extractor")
    trainer = _trainer(tmp_path, [callback], max_epochs=2)
    finder = Tuner(trainer).lr_find(model, train_dataloaders=_loader(), num_training=6, min_lr=1e-4)
    assert finder is not None and len(finder.results["lr"]) > 0
    trainer.fit(model, _loader())
    assert callback.applied_steps == 1


# ------------------------------------------------------------------- TransferClassifier
def test_transfer_classifier_uses_layer_groups_and_layer_decay(tmp_path: Path) -> None:
    from lt_transfer import Backbone, TransferClassifier

    trunk = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    model = TransferClassifier(
        Backbone(trunk, 8), num_classes=2, optimizer=lambda p: torch.optim.SGD(p, lr=0.1)
    )
    callback = ProgressiveUnfreezing([1, 2], groups_per_step=2, backbone_lr_scale=0.5, layer_decay=0.5)
    assert callback.plan_for(model) == [(1, ["4", "2"]), (2, ["0"])]
    _trainer(tmp_path, [callback], max_epochs=3).fit(model, _loader())
    groups = {g["name"]: g["lr"] for g in model.trainer.optimizers[0].param_groups}
    expected = {"head": 0.1, "backbone.4": 0.05, "backbone.2": 0.025, "backbone.0": 0.0125}
    expected.update({f"{name}.no_decay": lr for name, lr in expected.items()})
    assert groups == pytest.approx(expected)


# -------------------------------------------------------------------- bad input
def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        ProgressiveUnfreezing([3, 2])
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        ProgressiveUnfreezing(1, every_n_epochs=0)
    with pytest.raises(ValueError, match="backbone_lr_scale=-1"):
        ProgressiveUnfreezing(1, backbone_lr_scale=-1)
    with pytest.raises(ValueError, match="layer_decay=2"):
        ProgressiveUnfreezing(1, layer_decay=2)


def test_setup_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="backbone='encoder'.*It has: .*feature_extractor"):
        _trainer(tmp_path, [ProgressiveUnfreezing(1, backbone="encoder")], 1).fit(
            PlugInModule(None), _loader()
        )
    with pytest.raises(ValueError, match="5 unfreeze steps.*only 4 layer groups"):
        callback = ProgressiveUnfreezing([1, 2, 3, 4, 5], backbone="feature_extractor")
        _trainer(tmp_path, [callback], 1).fit(PlugInModule(None), _loader())

    class AllParams(PlugInModule):
        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.1)

    with pytest.raises(ValueError, match="already in the optimizer.*requires_grad"):
        _trainer(tmp_path, [ProgressiveUnfreezing(1, backbone="feature_extractor")], 1).fit(
            AllParams(None), _loader()
        )

    class TwoOptimizers(PlugInModule):
        def configure_optimizers(self):
            trainable = [p for p in self.parameters() if p.requires_grad]
            return torch.optim.Adam(trainable[:1]), torch.optim.Adam(trainable[1:])

        def training_step(self, batch, batch_idx):
            return None

    model = TwoOptimizers(None)
    model.automatic_optimization = False
    with pytest.raises(ValueError, match="2 optimizers; pass optimizer_index"):
        _trainer(tmp_path, [ProgressiveUnfreezing(1, backbone="feature_extractor")], 1).fit(model, _loader())


def test_optimizer_index_chooses_the_optimizer_and_leaves_the_others_untouched(tmp_path: Path) -> None:
    """README: with several optimizers, ``optimizer_index=i`` receives the unfrozen groups."""

    class TwoOptimizers(PlugInModule):
        def __init__(self) -> None:
            super().__init__(scheduler=None)
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            head, other = self.optimizers()
            loss = nn.functional.cross_entropy(self(batch[0]), batch[1])
            for optimizer in (head, other):
                optimizer.zero_grad()
            self.manual_backward(loss)
            for optimizer in (head, other):
                optimizer.step()

        def configure_optimizers(self):
            extra = nn.Parameter(torch.zeros(1))
            self.register_parameter("extra", extra)
            trainable = [p for p in self.classifier.parameters()]
            return torch.optim.Adam(trainable, lr=0.1), torch.optim.SGD([extra], lr=0.1)

    model = TwoOptimizers()
    callback = ProgressiveUnfreezing(1, backbone="feature_extractor", optimizer_index=0)
    trainer = _trainer(tmp_path, [callback], max_epochs=2)
    trainer.fit(model, _loader())
    head, other = trainer.optimizers
    backbone = {id(p) for p in model.feature_extractor.parameters()}
    assert backbone <= {id(p) for g in head.param_groups for p in g["params"]}
    assert len(other.param_groups) == 1
    assert [id(p) for p in other.param_groups[0]["params"]] == [id(model.extra)]


def test_no_backward_through_frozen_groups(tmp_path: Path) -> None:
    """README: frozen groups take no part in backward (the frozen phase is faster): the output of
    the frozen part does not require grad and its parameters never get a gradient."""
    records: list[tuple[int, bool]] = []
    model = PlugInModule(scheduler=None)
    # groups 5, 3, 1, 0 unfreeze at epochs 1, 2, 3, 4: the BatchNorm (group 1) is frozen until 3
    model.feature_extractor[1].register_forward_hook(
        lambda m, i, out: records.append((model.current_epoch, out.requires_grad)) if model.training else None
    )

    class NoGrad(pl.Callback):
        def on_after_backward(self, trainer, pl_module):
            if trainer.current_epoch < 3:
                assert all(p.grad is None for p in pl_module.feature_extractor[:2].parameters())

    callback = ProgressiveUnfreezing(1, every_n_epochs=1, backbone="feature_extractor")
    _trainer(tmp_path, [callback, NoGrad()], max_epochs=4).fit(model, _loader())
    assert {epoch: flag for epoch, flag in records} == {0: False, 1: False, 2: False, 3: True}


@pytest.mark.parametrize("strategy", ["DeepSpeedStrategy", "FSDPStrategy"])
def test_sharding_strategies_are_rejected(strategy: str) -> None:
    fake = type(strategy, (), {})()
    trainer = SimpleNamespace(strategy=fake)
    with pytest.raises(ValueError, match=f"does not support strategy {strategy}"):
        ProgressiveUnfreezing(1).setup(trainer, PlugInModule(None), "fit")


# ------------------------------------------------------------------- CLI, pickle
def test_configured_from_yaml_and_picklable(tmp_path: Path) -> None:
    from lightning.pytorch.cli import LightningCLI

    config = tmp_path / "config.yaml"
    config.write_text(
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: lt_transfer.callbacks.ProgressiveUnfreezing\n"
        "      init_args:\n"
        "        unfreeze_at_epoch: [1, 3]\n"
        "        groups_per_step: 2\n"
        "        backbone: feature_extractor\n"
        "        backbone_lr_scale: 0.2\n"
        "        layer_decay: 0.8\n"
        "        warmup_epochs: 1\n"
    )
    cli = LightningCLI(
        PlugInModule,
        args=["--config", str(config), "--trainer.logger=false", "--trainer.enable_checkpointing=false"],
        run=False,
        save_config_callback=None,
    )
    callback = next(c for c in cli.trainer.callbacks if isinstance(c, ProgressiveUnfreezing))
    assert (callback.milestones, callback.groups_per_step, callback.backbone_lr_scale) == ([1, 3], 2, 0.2)
    restored = pickle.loads(pickle.dumps(callback))
    assert restored.plan_for(PlugInModule(None)) == [(1, ["5", "3"]), (3, ["1", "0"])]


# --------------------------------------------------------------------- warm-up
def test_warmup_scales_only_inside_the_optimizer_step(tmp_path: Path) -> None:
    effective: list[tuple[int, float]] = []

    class Spy(pl.Callback):
        def on_train_start(self, trainer, pl_module):  # registered after the callback's own pre-hook
            optimizer = trainer.optimizers[0]
            optimizer.register_step_pre_hook(
                lambda opt, args, kwargs: effective.append(
                    (trainer.current_epoch, opt.param_groups[-1]["lr"])
                )
            )

    recorder = LrRecorder()
    callback = ProgressiveUnfreezing(1, backbone="feature_extractor", backbone_lr_scale=0.5, warmup_epochs=2)
    _trainer(tmp_path, [callback, Spy(), recorder], max_epochs=4).fit(PlugInModule(scheduler=None), _loader())
    per_epoch = {epoch: lr for epoch, lr in effective}
    assert per_epoch[1] == pytest.approx(0.05 / 3) and per_epoch[2] == pytest.approx(0.1 / 3)
    assert per_epoch[3] == pytest.approx(0.05)
    assert all(
        lrs[-1] == pytest.approx(0.05) for lrs in recorder.lrs[STEPS_PER_EPOCH:]
    )  # scheduled lr untouched


# ------------------------------------------------------- the model's lr policy
def _classifier(**kwargs) -> pl.LightningModule:
    from lt_transfer import Backbone, TransferClassifier

    trunk = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    pretrained = kwargs.pop("pretrained", False)
    return TransferClassifier(
        Backbone(trunk, 8, pretrained=pretrained),
        num_classes=2,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        **kwargs,
    )


def _unfrozen_lrs(tmp_path: Path, model: pl.LightningModule, callback: ProgressiveUnfreezing) -> dict:
    _trainer(tmp_path, [callback], max_epochs=3).fit(model, _loader())
    groups = model.trainer.optimizers[0].param_groups
    return {g["name"]: g["lr"] for g in groups if not g["name"].endswith(".no_decay")}


def test_callback_takes_the_models_backbone_lr_scale_and_layer_decay(tmp_path: Path) -> None:
    """The model's finetune policy is no longer silently replaced by the callback's own defaults."""
    model = _classifier(backbone_lr_scale=0.5, layer_decay=0.5)
    lrs = _unfrozen_lrs(tmp_path, model, ProgressiveUnfreezing([1, 2], groups_per_step=2))
    assert lrs == pytest.approx({"head": 0.1, "backbone.4": 0.05, "backbone.2": 0.025, "backbone.0": 0.0125})
    # nothing given anywhere: the model's resolved defaults (1.0 from scratch, 0.1 pretrained)
    scratch = _unfrozen_lrs(tmp_path, _classifier(), ProgressiveUnfreezing(1))
    assert scratch["backbone.0"] == pytest.approx(0.1)
    pretrained = _unfrozen_lrs(tmp_path, _classifier(pretrained=True), ProgressiveUnfreezing(1))
    assert pretrained["backbone.0"] == pytest.approx(0.01)
    # given on the callback only (or equal on both): the callback's
    only_callback = _unfrozen_lrs(tmp_path, _classifier(), ProgressiveUnfreezing(1, backbone_lr_scale=0.3))
    assert only_callback["backbone.0"] == pytest.approx(0.03)
    both = _unfrozen_lrs(tmp_path, _classifier(layer_decay=0.5), ProgressiveUnfreezing(1, layer_decay=0.5))
    assert both["backbone.0"] == pytest.approx(0.1 * 0.25)


def test_conflicting_lr_settings_and_non_full_finetune_are_errors(tmp_path: Path) -> None:
    cases = [
        (_classifier(backbone_lr_scale=0.5), ProgressiveUnfreezing(1, backbone_lr_scale=0.3),
         r"ProgressiveUnfreezing\(backbone_lr_scale=0.3\) and TransferClassifier\(backbone_lr_scale=0.5\) "
         "disagree; set it in one place"),
        (_classifier(layer_decay=0.9), ProgressiveUnfreezing(1, layer_decay=0.8), "decay=0.8.*disagree"),
        (_classifier(finetune="frozen"), ProgressiveUnfreezing(1), "finetune='frozen'.*finetune='full'"),
        (_classifier(finetune="partial", trainable_groups=1), ProgressiveUnfreezing(1), "finetune='partial'"),
    ]  # fmt: skip
    for model, callback, match in cases:
        with pytest.raises(ValueError, match=match):
            _trainer(tmp_path, [callback], max_epochs=1).fit(model, _loader())


def test_frozen_mode_must_be_eval_or_train() -> None:
    with pytest.raises(ValueError, match="frozen_mode='frozen'"):
        ProgressiveUnfreezing(1, frozen_mode="frozen")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layer_decay=0"):
        ProgressiveUnfreezing(1, layer_decay=0)


# ---------------------------------------------------------------- knobs agree
@pytest.mark.parametrize(
    ("limits", "cut"),
    [
        ({"max_epochs": 3}, r"stops after epoch 2 \(max_epochs=3\).*epoch 3: \['1', '0'\]"),
        ({"max_epochs": 10, "max_steps": 10}, r"stops after epoch 2 \(max_steps=10 at 4 optimizer steps per "
         r"epoch\)"),
        ({"max_epochs": 10, "max_steps": 3, "accumulate_grad_batches": 2}, r"stops after epoch 1 .*"
         r"at 2 optimizer steps per epoch.*epoch 3: \['1', '0'\]"),
        ({"max_epochs": 1}, r"stops after epoch 0 .*epoch 1: \['5', '3'\]; epoch 3: \['1', '0'\]\), so the "
         r"layer groups \['5', '3', '1', '0'\] stay frozen"),
    ],
)  # fmt: skip
def test_a_plan_cut_short_by_max_epochs_or_max_steps_warns_at_fit_start(
    tmp_path: Path, limits: dict, cut: str
) -> None:
    callback = ProgressiveUnfreezing([1, 3], groups_per_step=2, backbone="feature_extractor")
    limits = dict(limits)
    trainer = _trainer(tmp_path, [callback], max_epochs=limits.pop("max_epochs"), **limits)
    with pytest.warns(UserWarning, match=f"ProgressiveUnfreezing: training {cut}"):
        trainer.fit(PlugInModule(scheduler=None), _loader())


def test_a_plan_that_fits_does_not_warn(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    callback = ProgressiveUnfreezing([1, 3], groups_per_step=2, backbone="feature_extractor")
    _trainer(tmp_path, [callback], max_epochs=4).fit(PlugInModule(scheduler=None), _loader())
    smoke = ProgressiveUnfreezing([1, 3], groups_per_step=2, backbone="feature_extractor")
    _trainer(tmp_path, [smoke], fast_dev_run=True).fit(PlugInModule(scheduler=None), _loader())
    assert not [w for w in recwarn if "training stops after epoch" in str(w.message)]
    assert callback.applied_steps == 2


def _lr_columns(log_dir: str) -> dict[str, list[str]]:
    import csv

    with open(Path(log_dir) / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    return {key: [row[key] for row in rows if row[key]] for key in rows[0] if key.startswith("lr-")}


@pytest.mark.parametrize("kind", ["plug_in", "transfer_classifier"])
def test_lr_monitor_series_keep_their_names_across_an_unfreeze(tmp_path: Path, kind: str) -> None:
    """An unnamed head group is ``pg1`` from the first step (not ``lr-Adam``, then ``lr-Adam/pg1``)."""
    model = PlugInModule(scheduler=None) if kind == "plug_in" else _classifier()
    backbone = "feature_extractor" if kind == "plug_in" else None
    callback = ProgressiveUnfreezing(1, backbone=backbone)
    logger = CSVLogger(tmp_path, name=kind)
    trainer = _trainer(
        tmp_path, [callback, LearningRateMonitor("step")], max_epochs=2, logger=logger, log_every_n_steps=1
    )
    trainer.fit(model, _loader())
    columns = _lr_columns(trainer.logger.log_dir)
    head = "lr-Adam/pg1" if kind == "plug_in" else "lr-SGD/head"
    assert len(columns[head]) == 2 * STEPS_PER_EPOCH  # one series, from the first step to the last
    assert "lr-Adam" not in columns and "lr-SGD" not in columns
    unfrozen = [name for name in columns if name != head and not name.endswith("no_decay")]
    assert unfrozen and all(len(columns[name]) == STEPS_PER_EPOCH for name in unfrozen)
