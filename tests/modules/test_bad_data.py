"""Bad data caught in every module and stage: labels, channels, NaN/Inf, empty loaders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.utilities import CombinedLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lt_transfer.modules._base as base
from lt_transfer import DistillationModule, DomainAdaptationModule, NonFiniteLossError, TransferClassifier
from lt_transfer.backbones import Backbone
from tests.conftest import make_tiny_backbone


def _trainer(**kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = dict(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def _batches(n: int = 4, channels: int = 3, seed: int = 0, labels: list[int] | None = None) -> list[tuple]:
    """``n`` collated ``(x, y)`` batches of 4 samples (labels in [0, 3) unless given per batch)."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for i in range(n):
        x = torch.randn(4, channels, 8, 8, generator=generator)
        y = torch.randint(0, 3, (4,), generator=generator)
        if labels is not None:
            y[1] = labels[i]
        batches.append((x, y))
    return batches


def _loader(batches: list[Any]) -> DataLoader:
    return DataLoader(batches, batch_size=None)


def _classifier(**kwargs: Any) -> TransferClassifier:
    torch.manual_seed(0)
    return TransferClassifier(make_tiny_backbone(), num_classes=3, **kwargs)


def _teacher() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(make_tiny_backbone(), nn.Linear(8, 3))


def _distillation(**kwargs: Any) -> DistillationModule:
    return DistillationModule(_classifier(), _teacher(), **kwargs)


def _domain_adaptation(method: str = "dann", **kwargs: Any) -> DomainAdaptationModule:
    torch.manual_seed(0)
    if method == "dann":
        kwargs["discriminator_hidden"] = 8
    return DomainAdaptationModule(make_tiny_backbone(), num_classes=3, method=method, **kwargs)


def _da_loader(source: list[tuple], target: list[tuple] | None = None) -> CombinedLoader:
    target = target if target is not None else [(x + 1.0,) for x, _ in _batches(len(source), seed=9)]
    return CombinedLoader({"source": _loader(source), "target": _loader(target)}, mode="min_size")


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------ labels
@pytest.mark.parametrize("kind", ["classifier", "domain_adaptation", "distillation"])
def test_bad_label_in_a_later_training_batch_names_batch_values_and_fix(kind: str) -> None:
    source = _batches(labels=[0, 1, 7, 2])  # only batch 2 is bad
    if kind == "classifier":
        model: pl.LightningModule = _classifier()
        train: Any = _loader(source)
    elif kind == "distillation":
        model = _distillation()
        train = _loader(source)
    else:
        model = _domain_adaptation(method="coral")
        train = _da_loader(source)
    name = type(model).__name__
    expected = (
        rf"{name} has num_classes=3 but got labels in \[\d, 7\] \(train batch 2 \(epoch 0\): 1 label\(s\) "
        r"out of range, values \[7\]\); set num_classes"
    )
    with pytest.raises(ValueError, match=expected):
        _trainer().fit(model, train)


@pytest.mark.parametrize("kind", ["classifier", "domain_adaptation", "distillation"])
def test_bad_labels_in_validation_and_test_batches_name_loader_and_batch(kind: str) -> None:
    build = {"classifier": _classifier, "domain_adaptation": _domain_adaptation}
    model = build.get(kind, _distillation)(eval_names=["source", "target"])
    good, bad = _loader(_batches(2)), _loader(_batches(3, labels=[0, -3, 1]))
    expected = r"labels in \[-3, \d\] \(val batch 1 \(dataloader 1 'target', epoch 0\)"
    with pytest.raises(ValueError, match=expected):
        _trainer().validate(model, [good, bad], verbose=False)
    with pytest.raises(ValueError, match=r"values \[-3\]"):
        _trainer().test(model, [good, bad], verbose=False)
    with pytest.raises(ValueError, match=r"test batch 1 \(dataloader 0 'source'"):
        _trainer().test(model, [bad], verbose=False)


def test_distillation_ignore_index_labels_are_never_an_error() -> None:
    model = _distillation()
    _trainer(max_steps=2).fit(model, _loader(_batches(labels=[-1, 0, -1, 2])))  # -1 = unlabelled
    with pytest.raises(ValueError, match=r"values \[-2\].*ignore_index=-1"):
        _trainer(max_steps=3).fit(_distillation(), _loader(_batches(labels=[-1, 0, -2, 2])))


def test_labels_are_checked_once_per_batch_on_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """One host-side check per batch (before the transfer); the step reuses its result."""
    devices: list[str] = []
    real = base.label_range_problem

    def spy(y: torch.Tensor, *args: Any) -> Any:
        devices.append(y.device.type)
        return real(y, *args)

    monkeypatch.setattr(base, "label_range_problem", spy)
    model = _classifier()
    _trainer(limit_val_batches=2).fit(model, _loader(_batches(3)), _loader(_batches(2, seed=1)))
    assert devices == ["cpu"] * 5
    # outside a Trainer (no host pre-check) the step checks the labels itself
    with pytest.raises(ValueError, match=r"train batch 9.*1 label\(s\) out of range"):
        model.training_step((torch.randn(2, 3, 8, 8), torch.tensor([0, 3])), 9)


def test_label_check_costs_microseconds_per_batch() -> None:
    """The per-batch check is one aminmax on host memory: far below a millisecond."""
    import timeit

    y = torch.randint(0, 10, (256,))
    seconds = min(timeit.repeat(lambda: base.label_range_problem(y, 10), number=200, repeat=5)) / 200
    assert seconds < 1e-4


# ---------------------------------------------------------------- channels
def _grey_backbone() -> Backbone:
    return make_tiny_backbone(in_channels=1)


@pytest.mark.parametrize("kind", ["classifier", "domain_adaptation", "distillation"])
def test_grey_images_into_an_rgb_backbone_name_channels_3(kind: str) -> None:
    grey = _batches(2, channels=1)
    if kind == "domain_adaptation":
        model: pl.LightningModule = _domain_adaptation(method="mmd")
        train: Any = _da_loader(grey, [(x,) for x, _ in _batches(2, channels=1, seed=3)])
    else:
        model = _classifier() if kind == "classifier" else _distillation()
        train = _loader(grey)
    with pytest.raises(ValueError, match=r"expects 3-channel input but the batch has 1 channel\(s\) "
                       r"\(input shape \(\d+, 1, 8, 8\)\)\. Grey images into an RGB backbone: build the "
                       r"DataModule with channels=3") as info:  # fmt: skip
        _trainer().fit(model, train)
    assert isinstance(info.value.__cause__, RuntimeError)  # torch's own error stays attached
    with pytest.raises(ValueError, match="channels=3"):
        _trainer().predict(model, _loader([x for x, _ in grey]))


def test_rgb_images_into_a_grey_network_name_channels_1() -> None:
    model = TransferClassifier(_grey_backbone(), num_classes=3)
    with pytest.raises(ValueError, match=r"RGB images into a grey-scale network: build the DataModule with "
                       r"channels=1"):  # fmt: skip
        _trainer().validate(model, _loader(_batches(1)), verbose=False)


def test_an_inner_layer_mismatch_keeps_torchs_error() -> None:
    broken = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(5, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = TransferClassifier(Backbone(broken, num_features=4), num_classes=3)
    with pytest.raises(RuntimeError, match="to have 5 channels, but got 4 channels"):
        model(torch.zeros(2, 3, 8, 8))


# ------------------------------------------------------------------ NaN/Inf
def _with_nan(batches: list[tuple], batch: int, sample: int = 2) -> list[tuple]:
    bad = [(x.clone(), y) for x, y in batches]
    bad[batch][0][sample, 1, 3, 4] = float("nan")  # one NaN pixel
    return bad


def test_nan_pixel_raises_by_default_and_leaves_weights_and_bn_stats_untouched() -> None:
    batches = _batches()
    reference = _classifier()
    _trainer(max_steps=2).fit(reference, _loader(batches[:2]))
    model = _classifier()
    expected = (
        r"TransferClassifier: non-finite training loss \(nan\) at train batch 2 \(epoch 0\), global step 2: "
        r"input has 1 NaN and 0 Inf value\(s\) \(samples \[2\]\)\. No optimizer step was taken.*"
        r"nan_policy='skip_batch'"
    )
    with pytest.raises(NonFiniteLossError, match=expected):
        _trainer().fit(model, _loader(_with_nan(batches, 2)))
    state = _state(model)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    _assert_equal_states(state, _state(reference))  # BatchNorm running statistics included


def test_skip_batch_equals_a_run_without_that_batch_and_counts_it(tmp_path: Path) -> None:
    batches = _batches()
    reference = _classifier()
    _trainer().fit(reference, _loader([batches[0], batches[2], batches[3]]))
    model = _classifier(nan_policy="skip_batch")
    trainer = _trainer(max_epochs=2, logger=pl.loggers.CSVLogger(tmp_path))
    trainer.fit(model, _loader(_with_nan(batches, 1)))
    assert model.skipped_batches == 2 and trainer.global_step == 8  # one per epoch; training went on
    assert float(trainer.callback_metrics["train/skipped_batches"]) == 1.0
    assert all(torch.isfinite(v).all() for v in _state(model).values() if v.is_floating_point())
    once = _classifier(nan_policy="skip_batch")
    _trainer().fit(once, _loader(_with_nan(batches, 1)))
    _assert_equal_states(_state(once), _state(reference))


def test_skip_batch_keeps_gradient_accumulation_exact() -> None:
    """The skipped batch closes a window: the window's good batch still makes its (partial) step."""
    batches = _batches()
    reference = _classifier()
    _trainer(accumulate_grad_batches=2).fit(reference, _loader(batches[:3]))  # last window: batch 2 alone
    model = _classifier(nan_policy="skip_batch")
    _trainer(accumulate_grad_batches=2).fit(model, _loader(_with_nan(batches, 3)))
    _assert_equal_states(_state(model), _state(reference))


def test_skip_batch_under_16_mixed_leaves_the_grad_scaler_alone() -> None:
    def run(batches: list[tuple]) -> tuple[TransferClassifier, torch.amp.GradScaler]:
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
        model = _classifier(nan_policy="skip_batch")
        _trainer(plugins=[MixedPrecision("16-mixed", "cpu", scaler)]).fit(model, _loader(batches))
        return model, scaler

    batches = _batches()
    model, scaler = run(_with_nan(batches, 1))
    reference, reference_scaler = run([batches[0], batches[2], batches[3]])
    assert model.skipped_batches == 1
    assert scaler.get_scale() == reference_scaler.get_scale()  # no growth/backoff from the skipped batch
    _assert_equal_states(_state(model), _state(reference))


def test_warn_policy_warns_and_trains_on_the_batch() -> None:
    model = _classifier(nan_policy="warn")
    expected = r"non-finite training loss \(nan\) at train batch 1.*Training on it"
    with pytest.warns(UserWarning, match=expected):
        _trainer().fit(model, _loader(_with_nan(_batches(), 1)))
    assert any(not torch.isfinite(p).all() for p in model.parameters())  # what "warn" accepts


def test_non_finite_target_input_and_model_output_are_told_apart() -> None:
    source = _batches(2)
    target = [(x + 1.0,) for x, _ in _batches(2, seed=9)]
    target[0][0][3, 0, 0, 0] = float("inf")
    expected = r"train batch 0.*target input has 0 NaN and 1 Inf value\(s\) \(samples \[3\]\)"
    with pytest.raises(NonFiniteLossError, match=expected):
        _trainer().fit(_domain_adaptation(method="coral"), _da_loader(source, target))

    class Overflow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3 * 8 * 8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.flatten(1)) * float("inf")

    model = TransferClassifier(Backbone(Overflow(), num_features=8), num_classes=3)
    with pytest.raises(NonFiniteLossError, match="inputs and labels are finite: the model produced"):
        _trainer().fit(model, _loader(_batches(1)))


def test_distillation_skip_batch_with_teacher_cache_never_keeps_nan_rows() -> None:
    batches = [(x, y, torch.arange(4 * i, 4 * i + 4)) for i, (x, y) in enumerate(_with_nan(_batches(), 1))]
    model = _distillation(nan_policy="skip_batch", cache_teacher_outputs=True)
    trainer = _trainer(max_epochs=3)
    trainer.fit(model, _loader(batches))  # epochs 1-2 check the cache against the teacher: no mismatch
    assert model.skipped_batches == 3
    cache = model._teacher_cache
    assert cache.filled is not None and cache.filled.tolist() == [True] * 6 + [False] + [True] * 9
    assert all(torch.isfinite(p).all() for p in model.student.parameters())


@pytest.mark.parametrize("policy", ["raise", "skip_batch"])
def test_distillation_names_a_nan_pixel_and_teacher_logits(policy: str) -> None:
    model = _distillation(nan_policy=policy)
    if policy == "raise":
        with pytest.raises(NonFiniteLossError, match=r"input has 1 NaN.*teacher logits has 3 NaN"):
            _trainer().fit(model, _loader(_with_nan(_batches(), 0)))
    else:
        _trainer().fit(model, _loader(_with_nan(_batches(), 0)))
        assert model.skipped_batches == 1


class _WriteWeights(pl.Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        flat = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        gathered = pl_module.all_gather(flat)
        if trainer.global_rank == 0:
            finite = bool(torch.isfinite(gathered).all())
            Path(self.out).write_text(
                json.dumps({"diff": float((gathered[0] - gathered[1]).abs().max()), "finite": finite,
                            "skipped": pl_module.skipped_batches})  # fmt: skip
            )


def test_skip_batch_under_ddp_all_ranks_skip_together(tmp_path: Path) -> None:
    """Exact: ranks bit-identical (difference 0.0), one skipped step on both (no tolerance)."""
    batches = _batches(8)
    x = torch.cat([b[0] for b in batches])
    x[5, 0, 0, 0] = float("nan")  # one sample: one rank sees it, both skip that step
    data = TensorDataset(x, torch.cat([b[1] for b in batches]))
    loader = DataLoader(data, batch_size=4)  # Lightning gives each rank its DistributedSampler
    out = tmp_path / "out.json"
    model = _classifier(nan_policy="skip_batch")
    trainer = _trainer(strategy="ddp_spawn", devices=2, callbacks=[_WriteWeights(str(out))])
    trainer.fit(model, loader)
    result = json.loads(out.read_text())
    assert result == {"diff": 0.0, "finite": True, "skipped": 1}


# ------------------------------------------------------------- empty loaders
def test_empty_training_loader_is_an_error() -> None:
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(ValueError, match="TransferClassifier: the training loader yields no batches"):
        _trainer().fit(_classifier(), empty)
    too_few = DataLoader(TensorDataset(torch.zeros(3, 3, 8, 8), torch.zeros(3, dtype=torch.long)),
                         batch_size=4, drop_last=True)  # fmt: skip
    with pytest.raises(ValueError, match="drop_last=True with fewer samples than batch_size"):
        _trainer().fit(_distillation(), too_few)


@pytest.mark.parametrize("sanity_steps", [0, 2])
def test_empty_validation_loader_is_an_error_in_fit(sanity_steps: int) -> None:
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long)), batch_size=4)
    seen: list[int] = []

    class Count(pl.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            seen.append(1)

    model = _classifier(eval_names=["source", "target"])
    trainer = _trainer(max_epochs=3, num_sanity_val_steps=sanity_steps, callbacks=[Count()])
    with pytest.raises(ValueError, match=r"validation loader 1 \('target'\) yields no batches"):
        trainer.fit(model, _loader(_batches(2)), [_loader(_batches(1)), empty])
    assert len(seen) <= 2  # at the latest at the end of the first epoch
    _trainer(limit_val_batches=0).fit(_classifier(), _loader(_batches(2)), empty)  # switched off: fine
    _trainer().fit(_classifier(), _loader(_batches(2)), [])  # no validation loader at all: fine


def test_empty_loaders_in_validate_and_test_are_errors() -> None:
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(ValueError, match="validation loader 0 yields no batches"):
        _trainer().validate(_domain_adaptation(), empty, verbose=False)
    with pytest.raises(ValueError, match="test loader 1 yields no batches"):
        _trainer().test(_classifier(), [_loader(_batches(1)), empty], verbose=False)


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"nan_policy='skip'\) must be 'raise'.*'skip_batch'.*'warn'"):
        _classifier(nan_policy="skip")
    with pytest.raises(ValueError, match=r"DomainAdaptationModule\(lr=0\) must be a finite number > 0"):
        _domain_adaptation(lr=0)
