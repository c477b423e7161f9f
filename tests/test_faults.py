"""Faults survived: training killed mid-epoch, resumed from the last checkpoint, bit-identical.

The claim proved here, for every module of the package (with the callbacks and caches that
carry state: ProgressiveUnfreezing + FeatureCache, DANN's schedules, the teacher cache, LoRA):

    with checkpoints at epoch ends (``ModelCheckpoint(save_last=True, every_n_epochs=1)``), a
    run killed in the middle of an epoch and resumed from ``last.ckpt`` loses only the work of
    the unfinished epoch (it is redone: the resumed run trains exactly the steps after the
    checkpoint) and ends bit-identical to a run that was never interrupted: every parameter
    and buffer, the optimizer and scheduler states, the callbacks' states (``torch.equal``).

Why epoch ends: on resume Lightning restarts an epoch's data iterator from its beginning
unless the loader itself is stateful, so a mid-epoch checkpoint of an ordinary loader cannot
be resumed exactly (Lightning warns about it). Why the data is seeded per epoch: Lightning
does not save random states in checkpoints, so what must replay exactly draws from streams
that are functions of the epoch: shuffling through ``DistributedSampler(shuffle=True, seed=s)``
(Lightning calls its ``set_epoch``; it needs no process group with ``num_replicas=1``) and the
global torch seed reset at each training step (dropout in the LoRA/BERT layers; a per-epoch
seed is not enough: where the epoch's loader iterator draws its base seed from the global
stream differs between a fresh epoch and the first epoch of a resumed run).

One test kills a real process with ``SIGKILL`` (``os.kill``) while it trains, after its
epoch-end checkpoint was written and training went on (so the file is complete: writing
checkpoints atomically is a separate matter), and resumes it here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import CombinedLoader
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from lt_transfer import (
    DistillationModule,
    DomainAdaptationModule,
    FeatureCache,
    ProgressiveUnfreezing,
    TextClassifier,
    TransferClassifier,
)
from tests.conftest import make_tiny_backbone
from tests.hf_tiny import save_tiny_bert

ROOT = Path(__file__).resolve().parents[1]
BATCH = 8
STEPS_PER_EPOCH = 4  # 32 training samples in batches of 8


class Crash(Exception):
    """The fault injected into training."""


class CrashAt(pl.Callback):
    """Raise :class:`Crash` after optimizer step ``step`` (mid-epoch)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise Crash(f"killed at step {self.step}")


class HangAt(pl.Callback):
    """Tell the parent process it may kill us (``ready`` file), then wait to be killed."""

    def __init__(self, step: int, ready: str) -> None:
        self.step, self.ready = step, ready

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            Path(self.ready).write_text(str(os.getpid()))
            time.sleep(600)


class StepSeed(pl.Callback):
    """The global torch random stream of each training step starts from a seed of (epoch, batch)."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:  # fmt: skip
        torch.manual_seed(1000 * (trainer.current_epoch + 1) + batch_idx)


class CountSteps(pl.Callback):
    """The steps this run trained, and the global step it started from."""

    def __init__(self) -> None:
        self.trained = 0
        self.started_at: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started_at = trainer.global_step

    def on_train_batch_end(self, *args: Any) -> None:
        self.trained += 1


def _epoch_seeded(dataset: Dataset, seed: int = 0, batch_size: int = BATCH) -> DataLoader:
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler)


def _images(n: int, seed: int, shift: float = 0.0, index: bool = False) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=generator) + shift
    y = torch.randint(0, 3, (n,), generator=generator)
    return TensorDataset(x, y, torch.arange(n)) if index else TensorDataset(x, y)


# ------------------------------------------------------------------- the setups
#: a setup builds (model, train loaders, val loaders, extra callbacks), each time from scratch
Setup = Callable[[], tuple[pl.LightningModule, Any, Any, list[pl.Callback]]]


def _classifier_unfreezing_cache() -> tuple[pl.LightningModule, Any, Any, list[pl.Callback]]:
    model = TransferClassifier(make_tiny_backbone(), num_classes=3, finetune="full", layer_decay=0.5)
    callbacks = [ProgressiveUnfreezing([2, 3]), FeatureCache(backbone="backbone")]
    val = DataLoader(_images(16, seed=1), batch_size=BATCH)
    return model, _epoch_seeded(_images(32, seed=0)), val, callbacks


def _dann() -> tuple[pl.LightningModule, Any, Any, list[pl.Callback]]:
    model = DomainAdaptationModule(
        make_tiny_backbone(), num_classes=3, method="dann", discriminator_hidden=8, lr_annealing=True
    )
    train = CombinedLoader(
        {
            "source": _epoch_seeded(_images(32, seed=0)),
            "target": _epoch_seeded(TensorDataset(_images(32, seed=2, shift=1.0).tensors[0]), seed=1),
        },
        mode="max_size_cycle",
    )
    return model, train, DataLoader(_images(16, seed=3, shift=1.0), batch_size=BATCH), []


def _distillation_cached() -> tuple[pl.LightningModule, Any, Any, list[pl.Callback]]:
    teacher = nn.Sequential(make_tiny_backbone(), nn.Linear(8, 3)).eval()
    student = TransferClassifier(make_tiny_backbone(), num_classes=3)
    model = DistillationModule(student, teacher, alpha=0.3, cache_teacher_outputs=True)
    val = DataLoader(_images(16, seed=1), batch_size=BATCH)
    return model, _epoch_seeded(_images(32, seed=0, index=True)), val, []


class _Tokenized(Dataset):
    """Pre-tokenized texts as tokenizer dicts (fixed padding), with labels."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch["labels"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {key: value[i] for key, value in self.batch.items()}


def _lora_text(folder: Path) -> Setup:
    texts = ["bad service", "the flight was very late again", "good crew thanks", "lost bag", "love it",
             "awful seat", "great new plane", "not good"]  # fmt: skip

    def build() -> tuple[pl.LightningModule, Any, Any, list[pl.Callback]]:
        model = TextClassifier(f"hf/{folder}", num_classes=2, finetune="lora", lora_r=2)
        tokenizer = model.backbone.tokenizer()
        encoded = dict(tokenizer(texts * 4, padding="max_length", max_length=12, return_tensors="pt"))
        encoded["labels"] = torch.tensor([i % 2 for i in range(32)])
        data = _Tokenized(encoded)
        val = DataLoader(_Tokenized({k: v[:8] for k, v in encoded.items()}), batch_size=BATCH)
        return model, _epoch_seeded(data), val, []

    return build


# ------------------------------------------------------------------- the runs
def _fit(
    setup: Setup,
    folder: Path,
    max_epochs: int,
    extra: list[pl.Callback] | None = None,
    ckpt_path: str | None = None,
) -> tuple[pl.Trainer, pl.LightningModule, CountSteps]:
    torch.manual_seed(0)
    model, train, val, callbacks = setup()
    count = CountSteps()
    checkpoints = ModelCheckpoint(
        dirpath=folder, save_last=True, every_n_epochs=1, save_on_train_epoch_end=True, save_top_k=-1
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=folder,
        callbacks=[*callbacks, StepSeed(), count, checkpoints, *(extra or [])],
    )
    trainer.fit(model, train, val, ckpt_path=ckpt_path)
    return trainer, model, count


def _snapshot(trainer: pl.Trainer, model: pl.LightningModule) -> dict[str, Any]:
    stateful = [cb for cb in trainer.callbacks if isinstance(cb, ProgressiveUnfreezing)]
    return {
        "module": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizers": [opt.state_dict() for opt in trainer.optimizers],
        "schedulers": [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs],
        "callbacks": [cb.state_dict() for cb in stateful],
        "progress": (trainer.global_step, trainer.current_epoch),
    }


def _assert_identical(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{i}]")
    elif callable(a):
        assert type(a) is type(b), where  # a scheduler's lr_lambda: compared by kind
    else:
        assert a == b, (where, a, b)


def _crash_resume_and_compare(setup: Setup, tmp_path: Path, max_epochs: int, crash_at: int) -> pl.Trainer:
    reference_trainer, reference, _ = _fit(setup, tmp_path / "uninterrupted", max_epochs)
    expected = _snapshot(reference_trainer, reference)
    assert expected["progress"] == (max_epochs * STEPS_PER_EPOCH, max_epochs)

    folder = tmp_path / "interrupted"
    with pytest.raises(Crash):
        _fit(setup, folder, max_epochs, extra=[CrashAt(crash_at)])
    return _assert_resumes_identically(setup, folder, max_epochs, crash_at, expected)


def _assert_resumes_identically(
    setup: Setup, folder: Path, max_epochs: int, crash_at: int, expected: dict[str, Any]
) -> pl.Trainer:
    completed = crash_at // STEPS_PER_EPOCH * STEPS_PER_EPOCH  # steps of the epochs that finished
    assert crash_at > completed  # the fault hit mid-epoch: the unfinished epoch's work is lost
    trainer, model, count = _fit(setup, folder, max_epochs, ckpt_path=str(folder / "last.ckpt"))
    assert count.started_at == completed  # resumed at the epoch-end checkpoint ...
    assert count.trained == max_epochs * STEPS_PER_EPOCH - completed  # ... redoing only what was lost
    _assert_identical(_snapshot(trainer, model), expected)
    return trainer


# ------------------------------------------------------------------- the tests
@pytest.mark.parametrize("crash_at", [6, 13])
def test_transfer_classifier_with_unfreezing_and_feature_cache(tmp_path: Path, crash_at: int) -> None:
    """Unfreezing at epochs 2 and 3. Killed in epoch 1: the resumed run rebuilds the cache and
    trains a cached epoch before the unfreezes. Killed in epoch 3: it resumes after the first
    unfreeze (re-applied before the optimizer state loads) and makes the second one."""
    trainer = _crash_resume_and_compare(_classifier_unfreezing_cache, tmp_path, 4, crash_at)
    cache = next(cb for cb in trainer.callbacks if isinstance(cb, FeatureCache))
    # uninterrupted: 2 builds (train and val caches, epoch 0, served through epoch 1). Features are not
    # checkpointed: killed in epoch 1, the resumed run builds both again for its frozen epoch.
    assert cache.builds == (4 if crash_at == 6 else 2)
    unfreezing = next(cb for cb in trainer.callbacks if isinstance(cb, ProgressiveUnfreezing))
    assert unfreezing.applied_epochs == [2, 3]


def test_domain_adaptation_dann_with_lr_annealing(tmp_path: Path) -> None:
    _crash_resume_and_compare(_dann, tmp_path, max_epochs=3, crash_at=10)


def test_distillation_with_teacher_cache(tmp_path: Path) -> None:
    _crash_resume_and_compare(_distillation_cached, tmp_path, max_epochs=3, crash_at=6)


def test_text_classifier_with_lora(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    setup = _lora_text(save_tiny_bert(tmp_path / "bert"))
    _crash_resume_and_compare(setup, tmp_path, max_epochs=3, crash_at=9)


# ------------------------------------------------------------------- SIGKILL
def _train_until_killed(folder: str, ready: str, step: int, threads: int) -> None:
    """The child process: the DANN run of :func:`test_domain_adaptation_dann_with_lr_annealing`."""
    torch.set_num_threads(threads)
    _fit(_dann, Path(folder), max_epochs=3, extra=[HangAt(step, ready)])
    raise SystemExit("the run was not killed")


def test_sigkill_mid_epoch_then_resume(tmp_path: Path) -> None:
    folder, ready, step = tmp_path / "killed", tmp_path / "ready", 10
    code = (
        "from tests.test_faults import _train_until_killed; "
        f"_train_until_killed({str(folder)!r}, {str(ready)!r}, {step}, {torch.get_num_threads()})"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = tmp_path / "child.log"
    with open(log, "w") as output:
        command = [sys.executable, "-c", code]
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            assert child.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the child never reached the step to be killed at"
            time.sleep(0.2)
        assert (folder / "last.ckpt").exists()  # the epoch-end checkpoint was written before
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    reference_trainer, reference, _ = _fit(_dann, tmp_path / "uninterrupted", max_epochs=3)
    _assert_resumes_identically(_dann, folder, 3, step, _snapshot(reference_trainer, reference))
