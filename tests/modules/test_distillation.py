"""Tests for lt_transfer/modules/distillation.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lt_transfer import DistillationModule, TransferClassifier
from tests.conftest import make_tiny_backbone

NUM_CLASSES = 3


def make_teacher(num_classes: int = NUM_CLASSES, seed: int = 0) -> nn.Sequential:
    """A CNN with BatchNorm and dropout: both would misbehave in train mode."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )


def make_student(num_classes: int = NUM_CLASSES, seed: int = 1) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, num_classes))


def tensors(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.randint(
        0, NUM_CLASSES, (n,), generator=generator
    )


def loader(*parts: torch.Tensor, batch_size: int = 8, shuffle: bool = False) -> DataLoader:
    return DataLoader(TensorDataset(*parts), batch_size=batch_size, shuffle=shuffle)


def trainer(**kwargs: Any) -> pl.Trainer:
    defaults: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=1,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1)


class TeacherModeSpy(Callback):
    """Records the teacher's mode at every training and validation batch."""

    def __init__(self) -> None:
        self.modes: list[tuple[str, bool]] = []
        self.backward_checks = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.modes.append(("train", pl_module.teacher.training))
        assert pl_module.student.training

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self.modes.append(("val", pl_module.teacher.training))

    def on_after_backward(self, trainer: pl.Trainer, pl_module: Any) -> None:
        assert all(p.grad is None for p in pl_module.teacher.parameters())
        assert all(p.grad is not None for p in pl_module.student.parameters())
        self.backward_checks += 1


class TinyTeacherModule(pl.LightningModule):
    """A LightningModule teacher saved to and loaded from a checkpoint."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = make_teacher(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---------------------------------------------------------------------------- teacher frozen


def test_teacher_frozen_and_in_eval_mode_through_fit_and_validate() -> None:
    teacher = make_teacher()
    before = copy.deepcopy(teacher.state_dict())
    module = DistillationModule(make_student(), teacher, alpha=0.5, temperature=2.0, optimizer=sgd)
    x, y = tensors()
    spy = TeacherModeSpy()
    # validation every 2 steps: Lightning's train() / mode restore happen several times
    fit_trainer = trainer(max_epochs=2, val_check_interval=2, callbacks=[spy])
    fit_trainer.fit(module, loader(x, y, shuffle=True), loader(x, y))
    fit_trainer.validate(module, loader(x, y), verbose=False)
    assert {stage for stage, _ in spy.modes} == {"train", "val"}
    assert not any(training for _, training in spy.modes)
    assert spy.backward_checks == 8
    after = module.teacher.state_dict()
    for key, value in before.items():  # weights and BatchNorm running stats / counters
        assert torch.equal(value, after[key]), key
    assert all(not p.requires_grad and p.grad is None for p in module.teacher.parameters())
    optimizer_ids = {id(p) for group in fit_trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimizer_ids & {id(p) for p in module.teacher.parameters()}
    assert optimizer_ids == {id(p) for p in module.student.parameters()}
    module.train()
    assert module.student.training and not module.teacher.training


def test_label_free_batches_train_with_the_soft_loss() -> None:
    teacher = make_teacher()
    module = DistillationModule(make_student(), teacher, alpha=0.5, temperature=1.0, optimizer=sgd)
    x, _ = tensors(64)
    with torch.no_grad():
        target = F.softmax(teacher.eval()(x), -1)

    def soft_error() -> float:
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(module(x), -1), target, reduction="batchmean"))

    start = soft_error()
    trainer(max_epochs=8).fit(module, DataLoader(x, batch_size=16))  # plain tensors: no labels at all
    assert soft_error() < 0.5 * start
    # mixed batches: -1 marks unlabelled samples, labelled ones also get the hard loss
    y = torch.randint(0, NUM_CLASSES, (64,))
    y[::2] = -1
    trainer(max_steps=2).fit(module, loader(x, y))
    # a hard-only mix cannot learn from label-free batches: an error, not a silent no-op
    with pytest.raises(ValueError, match="alpha=1.0"):
        DistillationModule(make_student(), make_teacher(), alpha=1.0)


# ------------------------------------------------------------------------- class mismatch


def test_class_mismatch_is_an_error_unless_mapped() -> None:
    x, y = tensors(16)
    module = DistillationModule(make_student(), make_teacher(num_classes=5), optimizer=sgd)
    with pytest.raises(ValueError, match="class_mapping"):
        trainer(max_steps=1).fit(module, loader(x, y))
    mapped = DistillationModule(
        make_student(), make_teacher(num_classes=5), class_mapping=[4, 0, 2], num_classes=3, optimizer=sgd
    )
    trainer(max_steps=2).fit(mapped, loader(x, y))
    with torch.no_grad():
        full = mapped.teacher(x)
    assert torch.equal(mapped.teacher_logits(x), full[:, [4, 0, 2]])
    with pytest.raises(ValueError, match="one teacher index per student class"):
        DistillationModule(make_student(), make_teacher(5), class_mapping=[0, 1], num_classes=3)
    bad = DistillationModule(make_student(), make_teacher(5), class_mapping=[0, 1, 7], optimizer=sgd)
    with pytest.raises(ValueError, match="teacher class 7"):
        trainer(max_steps=1).fit(bad, loader(x, y))


def test_argument_validation() -> None:
    student = make_student()
    with pytest.raises(ValueError, match="temperature"):
        DistillationModule(student, make_teacher(), temperature=0)
    with pytest.raises(ValueError, match="hint_layers"):
        DistillationModule(student, make_teacher(), hint_weight=1.0)
    with pytest.raises(ValueError, match="share parameters"):
        DistillationModule(student, student)
    with pytest.raises(FileNotFoundError, match="not a file"):
        DistillationModule(student, "no/such/teacher.ckpt")
    with pytest.raises(ValueError, match="hint_weight=0.0"):
        DistillationModule(student, make_teacher(), hint_weight=0.0)  # None means "no hint", not 0
    assert DistillationModule(student, make_teacher()).hparams.hint_weight is None
    with pytest.raises(ValueError, match="cannot serve the hint"):
        DistillationModule(
            student, make_teacher(), hint_layers=["1", "4"], hint_weight=1.0, cache_teacher_outputs=True
        )


# ---------------------------------------------------------------------------- checkpoints


def test_teacher_from_checkpoint_path(tmp_path: Path) -> None:
    teacher_module = TinyTeacherModule()
    path = tmp_path / "teacher.ckpt"
    saver = trainer(max_steps=0)
    saver.strategy.connect(teacher_module)
    saver.save_checkpoint(path)
    with pytest.raises(ValueError, match="teacher_class"):
        DistillationModule(make_student(), str(path))
    module = DistillationModule(
        make_student(), str(path), teacher_class=f"{__name__}.TinyTeacherModule", optimizer=sgd
    )
    assert isinstance(module.teacher, TinyTeacherModule)
    for key, value in teacher_module.state_dict().items():
        assert torch.equal(module.teacher.state_dict()[key], value)
    assert not module.teacher.training
    assert module.hparams.teacher == str(path)  # a path teacher is rebuilt from hparams
    x, y = tensors(16)
    trainer(max_steps=2).fit(module, loader(x, y))


def test_checkpoint_excludes_teacher_and_resume_works(tmp_path: Path) -> None:
    x, y = tensors(32)
    teacher = make_teacher()
    teacher_state = copy.deepcopy(teacher.state_dict())
    module = DistillationModule(make_student(), teacher, optimizer=sgd)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer(max_epochs=1, enable_checkpointing=True, callbacks=[checkpoint]).fit(module, loader(x, y))
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)  # our checkpoints are plain data
    assert saved["state_dict"] and not any(k.startswith("teacher.") for k in saved["state_dict"])
    assert "teacher" not in saved["hyper_parameters"] and "student" not in saved["hyper_parameters"]

    # resume with a freshly built module: the teacher comes from the new module, training continues
    resumed = DistillationModule(make_student(seed=9), make_teacher(), optimizer=sgd)
    resume_trainer = trainer(max_epochs=2)
    resume_trainer.fit(resumed, loader(x, y), ckpt_path=tmp_path / "last.ckpt")
    assert resume_trainer.current_epoch == 2 and resume_trainer.global_step == 8
    for key, value in teacher_state.items():
        assert torch.equal(resumed.teacher.state_dict()[key], value)

    loaded = DistillationModule.load_from_checkpoint(
        tmp_path / "last.ckpt", student=make_student(seed=5), teacher=make_teacher()
    )
    for key, value in module.student.state_dict().items():
        assert torch.equal(loaded.student.state_dict()[key], value)
    assert not loaded.teacher.training

    kept = DistillationModule(make_student(), make_teacher(), save_teacher=True, optimizer=sgd)
    trainer(max_steps=1, enable_checkpointing=True, default_root_dir=tmp_path / "kept").fit(
        kept, loader(x, y)
    )
    [kept_path] = (tmp_path / "kept").rglob("*.ckpt")
    assert any(k.startswith("teacher.") for k in torch.load(kept_path, weights_only=True)["state_dict"])


# --------------------------------------------------------------------------------- cache


class IndexedDataset(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, noise: float = 0.0) -> None:
        self.x, self.y, self.noise = x, y, noise

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        x = self.x[index]
        if self.noise:
            x = x + self.noise * torch.randn_like(x)  # an "augmentation"
        return x, self.y[index], index


def test_teacher_output_cache_runs_teacher_once_and_changes_nothing() -> None:
    x, y = tensors(32)
    results = {}
    for cache in (False, True):
        pl.seed_everything(0, verbose=False)
        module = DistillationModule(
            make_student(), make_teacher(), cache_teacher_outputs=cache, optimizer=sgd
        )
        trainer(max_epochs=3).fit(module, DataLoader(IndexedDataset(x, y), batch_size=8, shuffle=True))
        results[cache] = (module.teacher_forward_samples, copy.deepcopy(module.student.state_dict()))
    assert results[False][0] == 3 * 32
    assert results[True][0] == 32 + 2 * 8  # one pass + one verification batch per later epoch
    for key, value in results[False][1].items():
        assert torch.allclose(results[True][1][key], value, atol=1e-6), key

    module = DistillationModule(make_student(), make_teacher(), cache_teacher_outputs=True, optimizer=sgd)
    with pytest.raises(ValueError, match="sample index"):
        trainer(max_steps=1).fit(module, loader(x, y))
    augmented = DataLoader(IndexedDataset(x, y, noise=0.5), batch_size=8, shuffle=True)
    with pytest.raises(RuntimeError, match="augmented"):
        trainer(max_epochs=2).fit(module, augmented)


# ------------------------------------------------------------------------ students, hints


def test_transfer_classifier_student_with_hint_loss() -> None:
    torch.manual_seed(0)
    student = TransferClassifier(make_tiny_backbone(in_channels=1, width=6), num_classes=NUM_CLASSES)
    teacher = make_teacher()
    module = DistillationModule(
        student,
        teacher,
        hint_layers=["backbone.model.top.0", "0"],  # a 6-channel student map → a 4-channel teacher map
        hint_weight=1.0,
        optimizer=sgd,
    )
    assert (module.hint.student_width, module.hint.teacher_width) == (6, 4)
    groups = module.param_groups()
    assert {g["name"] for g in groups} >= {"head", "backbone.stem", "hint"}
    projection_before = module.hint.projection.weight.detach().clone()
    x, y = tensors(16)
    trainer(max_steps=3).fit(module, loader(x, y))
    assert not torch.equal(projection_before, module.hint.projection.weight)
    assert not module.teacher.training
    with pytest.raises(ValueError, match="no sub-module"):
        DistillationModule(make_student(), make_teacher(), hint_layers=["nope", "0"], hint_weight=1.0)


def test_teacher_follows_student_precision() -> None:
    x, y = tensors(16)
    module = DistillationModule(make_student(), make_teacher(), optimizer=sgd)
    trainer(max_steps=2, precision="bf16-true").fit(module, loader(x, y))
    assert next(module.teacher.parameters()).dtype == torch.bfloat16
    module = DistillationModule(make_student(), make_teacher(), optimizer=sgd)
    trainer(max_steps=2, precision="bf16-mixed").fit(module, loader(x, y))


# --------------------------------------------------------------------------------- DDP


def test_ddp_spawn_has_no_unused_parameter_error() -> None:
    x, y = tensors(32)
    teacher = make_teacher()
    before = copy.deepcopy(teacher.state_dict())
    student = make_student()
    student_before = copy.deepcopy(student.state_dict())
    module = DistillationModule(student, teacher, optimizer=sgd)
    ddp = trainer(strategy="ddp_spawn", devices=2, max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    ddp.fit(module, loader(x, y), loader(x, y))  # raises if a teacher parameter expected a gradient
    assert not torch.equal(module.student.state_dict()["1.weight"], student_before["1.weight"])  # trained
    for key, value in before.items():
        assert torch.equal(module.teacher.state_dict()[key], value), key


# --------------------------------------------------------------------------------- CLI


def test_cli_builds_module_with_checkpoint_teacher(tmp_path: Path) -> None:
    from lt_transfer.cli import TransferCLI

    teacher_module = TinyTeacherModule(num_classes=10)
    path = tmp_path / "teacher.ckpt"
    saver = trainer(max_steps=0)
    saver.strategy.connect(teacher_module)
    saver.save_checkpoint(path)
    cli = TransferCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        auto_configure_optimizers=False,
        args=[
            "--model=lt_transfer.DistillationModule",
            "--model.student=torchvision.models.MobileNetV2",
            "--model.student.num_classes=10",
            "--model.student.width_mult=0.25",
            f"--model.teacher={path}",
            f"--model.teacher_class={__name__}.TinyTeacherModule",
            "--model.alpha=0.1",
            "--data=lt_transfer.DigitsDataModule",
            "--data.dataset=sklearn_digits",
            "--trainer.logger=false",
        ],
    )
    module = cli.model
    assert isinstance(module, DistillationModule) and isinstance(module.teacher, TinyTeacherModule)
    # the teacher keeps its own hyper-parameters, not the CLI's config of the outer module
    assert dict(module.teacher.hparams) == {"num_classes": 10}
    assert module.hparams.student["class_path"].endswith("MobileNetV2")
    assert module.hparams.num_classes == 10 and not module.teacher.training


class IndexedDictDataset(IndexedDataset):
    def __getitem__(self, index: int) -> dict[str, Any]:
        x, y, index = super().__getitem__(index)
        return {"image": x, "label": y, "index": index}


def test_teacher_cache_with_image_dict_batches_and_partly_cached_batches() -> None:
    x, y = tensors(16)
    module = DistillationModule(make_student(), make_teacher(), cache_teacher_outputs=True, optimizer=sgd)
    data = DataLoader(IndexedDictDataset(x, y), batch_size=8, shuffle=True)
    trainer(max_epochs=2).fit(module, data)
    assert module.teacher_forward_samples == 16 + 8
    # a batch with some cached and some new samples runs the teacher on the new ones only
    cache = module._teacher_cache
    cache.reset()
    teacher = module.teacher_logits
    module.teacher_forward_samples = 0
    seen = torch.tensor([0, 1, 2, 3, 7])
    first = cache.lookup(x[seen], seen, teacher, epoch=0)
    mixed = cache.lookup(x[2:8], torch.arange(2, 8), teacher, epoch=0)  # 4, 5, 6 are new
    assert module.teacher_forward_samples == 5 + 3
    torch.testing.assert_close(mixed[[0, 1, 5]], first[[2, 3, 4]].float())
    torch.testing.assert_close(mixed, teacher(x[2:8]).float())


def test_teacher_cache_runs_the_teacher_on_the_new_rows_of_a_tokenizer_dict() -> None:
    from lt_transfer.modules._teacher_cache import TeacherOutputCache

    rows: list[int] = []

    def teacher(x: dict[str, torch.Tensor]) -> torch.Tensor:
        rows.append(len(x["input_ids"]))
        return (x["input_ids"] * x["attention_mask"]).float().sum(-1, keepdim=True).repeat(1, 2)

    x = {"input_ids": torch.arange(12).view(4, 3), "attention_mask": torch.ones(4, 3, dtype=torch.long)}
    cache = TeacherOutputCache()
    cache.lookup({k: v[[0, 3]] for k, v in x.items()}, torch.tensor([0, 3]), teacher, epoch=0)
    torch.testing.assert_close(cache.lookup(x, torch.arange(4), teacher, epoch=0), teacher(x))
    assert rows == [2, 2, 4]  # the first two, then rows 1 and 2 only (then the reference call)


# ------------------------------------------------------------ losses: kd, dkd, at (issue 21)


def make_conv_student(num_classes: int = NUM_CLASSES, seed: int = 1, stride: int = 1) -> nn.Sequential:
    """A CNN student whose layers "0"/"1" output (N, 6, H, W) maps (8×8 inputs: 8×8, or 4×4 with stride 2)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1, stride=stride),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, num_classes),
    )


AT_PAIRS = [["1", "2"]]  # student ReLU (N, 6, 8, 8) ↔ teacher ReLU (N, 4, 8, 8)


def test_loss_choice_and_loss_specific_arguments() -> None:
    student, teacher = make_conv_student(), make_teacher()
    module = DistillationModule(student, teacher, loss="dkd")
    hp = module.hparams
    assert (hp.loss, hp.temperature, hp.dkd_alpha, hp.dkd_beta, hp.at_layers, hp.teaching) == (
        "dkd", None, None, None, None, None,
    )
    with pytest.raises(ValueError, match=r"loss='kd'\) does not use dkd_beta=8.0 \(dkd only\)"):
        DistillationModule(student, teacher, dkd_beta=8.0)
    with pytest.raises(ValueError, match=r"loss='at'\) does not use temperature=2.0 \(kd/dkd only\)"):
        DistillationModule(student, teacher, loss="at", at_layers=AT_PAIRS, temperature=2.0)
    with pytest.raises(ValueError, match="does not use at_beta"):
        DistillationModule(student, teacher, loss="dkd", at_beta=10.0)
    with pytest.raises(ValueError, match=r"loss='at'\) needs at_layers"):
        DistillationModule(student, teacher, loss="at")
    with pytest.raises(ValueError, match=r"at_layers=\['1', '2'\]\) must be a non-empty list of"):
        DistillationModule(student, teacher, loss="at", at_layers=["1", "2"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"loss='hint'\) must be one of \['kd', 'dkd', 'at'\]"):
        DistillationModule(student, teacher, loss="hint")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dkd_beta=-1"):
        DistillationModule(student, teacher, loss="dkd", dkd_beta=-1.0)
    with pytest.raises(ValueError, match="dkd_warmup_epochs=1.5"):
        DistillationModule(student, teacher, loss="dkd", dkd_warmup_epochs=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"teaching=None\) does not use mix='cutmix'"):
        DistillationModule(student, teacher, mix="cutmix")
    with pytest.raises(ValueError, match="mix_alpha=0"):
        DistillationModule(student, teacher, teaching="function_matching", mix_alpha=0)
    with pytest.raises(ValueError, match="teaching='fixed'"):
        DistillationModule(student, teacher, teaching="fixed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="the student has no sub-module 'nope'"):
        DistillationModule(student, teacher, loss="at", at_layers=[["nope", "0"]])
    with pytest.raises(ValueError, match="cannot serve the teacher's attention maps"):
        DistillationModule(student, teacher, loss="at", at_layers=AT_PAIRS, cache_teacher_outputs=True)


def test_kd_step_is_hintons_mix() -> None:
    """loss="kd" (the default) trains on exactly distillation_loss, labelled or not."""
    from lt_transfer.losses import distillation_loss

    x, y = tensors(8)
    y[:3] = -1
    module = DistillationModule(make_student(), make_teacher(), alpha=0.3, temperature=2.0)
    with torch.no_grad():
        expected = distillation_loss(module(x), module.teacher(x), y, alpha=0.3, temperature=2.0)
        torch.testing.assert_close(module.training_step((x, y), 0), expected)
        unlabelled = distillation_loss(module(x), module.teacher(x), None, alpha=0.3, temperature=2.0)
        torch.testing.assert_close(module.training_step(x, 0), unlabelled)


def test_dkd_step_warm_up_and_fit() -> None:
    from lt_transfer.losses import dkd_loss

    x, y = tensors(8)
    y[:3] = -1
    module = DistillationModule(
        make_student(), make_teacher(), loss="dkd", alpha=0.4, dkd_beta=2.0, dkd_warmup_epochs=4,
        optimizer=sgd,
    )
    with torch.no_grad():
        student, teacher = module(x), module.teacher(x)
        labelled = y != -1
        hard = F.cross_entropy(student[labelled], y[labelled])
        dkd = dkd_loss(student, teacher, y, alpha=1.0, beta=2.0, temperature=4.0)  # -1: teacher's top class
        warm = 1 / 4  # epoch 0 of a 4-epoch warm-up
        torch.testing.assert_close(module.training_step((x, y), 0), 0.4 * hard + 0.6 * warm * dkd)
        no_labels = dkd_loss(student, teacher, None, alpha=1.0, beta=2.0)
        torch.testing.assert_close(module.training_step(x, 0), 0.6 * warm * no_labels)
    x, y = tensors(32)
    before = copy.deepcopy(module.student.state_dict())
    trainer(max_epochs=2).fit(module, loader(x, y))
    assert not torch.equal(before["1.weight"], module.student.state_dict()["1.weight"])


def test_dkd_needs_two_classes() -> None:
    with pytest.raises(ValueError, match=r"loss='dkd', num_classes=1\): DKD needs at least 2 classes"):
        DistillationModule(make_student(), make_teacher(), loss="dkd", num_classes=1)
    module = DistillationModule(make_student(num_classes=1), make_teacher(num_classes=1), loss="dkd")
    x, y = tensors(8)
    with pytest.raises(ValueError, match=r"loss='dkd'\): the student outputs 1 logit\(s\)"):
        trainer(max_steps=1).fit(module, loader(x, torch.zeros_like(y)))


def test_dkd_class_mismatch_needs_class_mapping() -> None:
    x, y = tensors(16)
    module = DistillationModule(make_student(), make_teacher(num_classes=5), loss="dkd", optimizer=sgd)
    with pytest.raises(ValueError, match="class_mapping"):
        trainer(max_steps=1).fit(module, loader(x, y))
    mapped = DistillationModule(
        make_student(), make_teacher(num_classes=5), loss="dkd", class_mapping=[4, 0, 2], optimizer=sgd
    )
    trainer(max_steps=2).fit(mapped, loader(x, y))


def test_attention_transfer_step_and_fit() -> None:
    from lt_transfer.losses import attention_transfer_loss

    x, y = tensors(8)
    module = DistillationModule(
        make_conv_student(), make_teacher(), loss="at", at_layers=AT_PAIRS, alpha=0.2, optimizer=sgd
    )
    with torch.no_grad():
        student_maps = module.student[:2](x)
        teacher_maps = module.teacher[:3](x)
        hard = F.cross_entropy(module(x), y)
        expected = 0.2 * hard + 0.8 * attention_transfer_loss(student_maps, teacher_maps, beta=1000.0)
        torch.testing.assert_close(module.training_step((x, y), 0), expected)
    x, y = tensors(32)
    before = copy.deepcopy(module.student.state_dict())
    teacher_before = copy.deepcopy(module.teacher.state_dict())
    trainer(max_epochs=2).fit(module, loader(x, y))
    assert not torch.equal(before["0.weight"], module.student.state_dict()["0.weight"])
    for key, value in teacher_before.items():
        assert torch.equal(module.teacher.state_dict()[key], value), key


def test_attention_transfer_between_layers_without_spatial_maps_is_an_error() -> None:
    x, y = tensors(8)
    # a Linear layer is refused at once
    with pytest.raises(ValueError, match="'4' is a Linear, whose output has no spatial map"):
        DistillationModule(make_conv_student(), make_teacher(), loss="at", at_layers=[["4", "0"]])
    # an activation after pooling + flatten outputs vectors: refused at the first step, naming the pair
    module = DistillationModule(make_student(), make_teacher(), loss="at", at_layers=[["2", "0"]])
    shapes = r"\['2', '0'\].*output \(8, 16\) and \(8, 4, 8, 8\).*\(N, C, H, W\)"
    with pytest.raises(ValueError, match=shapes):
        trainer(max_steps=1).fit(module, loader(x, y))
    # different spatial sizes: an error naming at_interpolate, which resizes the student's map
    strided = DistillationModule(
        make_conv_student(stride=2), make_teacher(), loss="at", at_layers=AT_PAIRS, optimizer=sgd
    )
    with pytest.raises(ValueError, match="at_interpolate=True"):
        trainer(max_steps=1).fit(strided, loader(x, y))
    resized = DistillationModule(
        make_conv_student(stride=2), make_teacher(), loss="at", at_layers=AT_PAIRS, at_interpolate=True,
        optimizer=sgd,
    )
    trainer(max_steps=2).fit(resized, loader(x, y))


def test_attention_transfer_with_hint_and_label_free_batches() -> None:
    x, _ = tensors(16)
    module = DistillationModule(
        make_conv_student(),
        make_teacher(),
        loss="at",
        at_layers=[["0", "0"], ["1", "2"]],
        hint_layers=["0", "0"],
        hint_weight=0.5,
        optimizer=sgd,
    )
    trainer(max_steps=2).fit(module, DataLoader(x, batch_size=8))
    assert module.hint is not None and (module.hint.student_width, module.hint.teacher_width) == (6, 4)


# ------------------------------------------------------------------- consistent teaching


class Recorder(nn.Module):
    """Records every input it sees (to compare what the student and the teacher were fed)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.net(x)


def test_consistent_teaching_refuses_the_cache() -> None:
    student, teacher = make_student(), make_teacher()
    for teaching in ("consistent", "function_matching"):
        with pytest.raises(ValueError, match=rf"cache_teacher_outputs=True, teaching='{teaching}'\)"):
            DistillationModule(student, teacher, teaching=teaching, cache_teacher_outputs=True)
    assert DistillationModule(student, teacher).teaching_mode == "consistent"
    assert DistillationModule(student, teacher, cache_teacher_outputs=True).teaching_mode == "cached"


def digits(augment: str) -> Any:
    from lt_transfer import DigitsDataModule

    return DigitsDataModule(
        "sklearn_digits", image_size=8, channels=1, normalize=False, augment=augment, batch_size=16,
        labels_per_class=3,
    )


def test_augmented_datamodule_is_taught_consistently_and_the_cache_refuses_it() -> None:
    cached = DistillationModule(
        make_student(10), make_teacher(10), cache_teacher_outputs=True, optimizer=sgd
    )
    refused = r"augmented \(DigitsDataModule\(augment='light'\)\).*cache_teacher_outputs=False"
    with pytest.raises(ValueError, match=refused):
        trainer(max_steps=1).fit(cached, datamodule=digits("light"))
    assert cached.teacher_forward_samples == 0  # refused before any batch
    # without the cache the teacher sees each augmented view the student sees, every epoch
    student, teacher = Recorder(make_student(10)), Recorder(make_teacher(10))
    module = DistillationModule(student, teacher, optimizer=sgd)
    trainer(max_epochs=2, limit_val_batches=0).fit(module, datamodule=digits("light"))
    assert module.teaching_mode == "consistent"
    assert module.teacher_forward_samples == 2 * 30
    assert len(student.inputs) == len(teacher.inputs) == 4
    for seen_by_student, seen_by_teacher in zip(student.inputs, teacher.inputs, strict=True):
        assert torch.equal(seen_by_student, seen_by_teacher)
    # un-augmented data: the cache is allowed
    cached = DistillationModule(make_student(10), make_teacher(10), cache_teacher_outputs=True, optimizer=sgd)
    with pytest.raises(ValueError, match="sample index"):  # DigitsDataModule batches carry no index
        trainer(max_steps=1).fit(cached, datamodule=digits("none"))


def test_function_matching_feeds_the_same_mixed_view_to_both() -> None:
    from lt_transfer.losses import kd_loss
    from lt_transfer.modules._teaching import mix_views, mixed_cross_entropy, step_seed

    x, y = tensors(16)
    y[::4] = -1
    for mix in ("mixup", "cutmix"):
        student, teacher = Recorder(make_student()), Recorder(make_teacher())
        module = DistillationModule(
            student, teacher, teaching="function_matching", mix=mix, alpha=0.3, optimizer=sgd
        )
        assert module.teaching_mode == "function_matching"
        with torch.no_grad():
            value = module.training_step((x[:8], y[:8]), 5)
            views = mix_views(x[:8], mix, 1.0, step_seed(module._mix_seed, 0, 5, 0))
            assert torch.equal(student.inputs[-1], views.x) and torch.equal(teacher.inputs[-1], views.x)
            assert not torch.equal(views.x, x[:8])
            logits = module(views.x)
            hard, rows = mixed_cross_entropy(logits, y[:8], views, -1)
            assert rows > 0
            torch.testing.assert_close(value, 0.3 * hard + 0.7 * kd_loss(logits, module.teacher(views.x)))
        trainer(max_epochs=2).fit(module, loader(x, y))
        fitted = [(s, t) for s, t in zip(student.inputs[-4:], teacher.inputs[-4:], strict=True)]
        assert all(torch.equal(s, t) for s, t in fitted)
        assert not any(torch.equal(s, raw) for (s, _), raw in zip(fitted, x.split(8) * 2, strict=True))


def test_function_matching_views_and_errors() -> None:
    from lt_transfer.modules._teaching import MixedViews, mix_views, mixed_cross_entropy

    x = torch.randn(6, 1, 8, 8)
    cut = mix_views(x, "cutmix", 1.0, seed=3)
    pasted = (cut.x != x).any(1)  # (N, H, W): where the partner's box was pasted
    assert 0 < cut.lam < 1
    assert torch.equal(cut.x[pasted.unsqueeze(1)], x[cut.partner][pasted.unsqueeze(1)])
    assert mix_views(x, "mixup", 0.5, seed=3).lam == mix_views(x, "mixup", 0.5, seed=3).lam
    with pytest.raises(ValueError, match="mix='cutmix'\\) pastes boxes into \\(N, C, H, W\\)"):
        mix_views(torch.randn(4, 5), "cutmix", 1.0, seed=0)
    with pytest.raises(TypeError, match="floating-point"):
        mix_views(torch.ones(4, 5, dtype=torch.long), "mixup", 1.0, seed=0)
    # an identity mix is plain cross-entropy; no labelled part: zero rows
    logits, y = torch.randn(4, 3), torch.tensor([0, 2, 1, -1])
    identity = MixedViews(torch.zeros(4, 3), torch.arange(4), 0.3)
    loss, rows = mixed_cross_entropy(logits, y, identity, -1)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, ignore_index=-1))
    assert rows == 3
    assert mixed_cross_entropy(logits, torch.full((4,), -1), identity, -1)[1] == 0
    # a tokenizer batch cannot be mixed: a clear error at the first step
    module = DistillationModule(make_student(), make_teacher(), teaching="function_matching")
    with pytest.raises(TypeError, match="teaching='consistent'"):
        module.training_step({"input_ids": torch.ones(2, 4, dtype=torch.long)}, 0)


# ---------------------------------------------------------------- resume and DDP (new losses)

NEW_LOSS_OPTIONS = [
    pytest.param({"loss": "dkd", "dkd_warmup_epochs": 2}, id="dkd"),
    pytest.param({"loss": "at", "at_layers": AT_PAIRS}, id="at"),
    pytest.param(
        {"loss": "dkd", "teaching": "function_matching", "mix": "cutmix"}, id="dkd-function-matching"
    ),
]


@pytest.mark.parametrize("options", NEW_LOSS_OPTIONS)
def test_resumed_run_equals_uninterrupted_run(tmp_path: Path, options: dict[str, Any]) -> None:
    x, y = tensors(32)
    y[::3] = -1

    def build(seed: int) -> DistillationModule:
        student, teacher = make_conv_student(), make_teacher()
        torch.manual_seed(seed)  # the seed of the mixed views: a resumed run takes the checkpoint's
        return DistillationModule(student, teacher, optimizer=sgd, **options)

    straight = build(0)
    trainer(max_epochs=2).fit(straight, loader(x, y))
    first = build(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer(max_epochs=1, enable_checkpointing=True, callbacks=[checkpoint]).fit(first, loader(x, y))
    resumed = build(123)
    trainer(max_epochs=2).fit(resumed, loader(x, y), ckpt_path=tmp_path / "last.ckpt")
    assert resumed._mix_seed == straight._mix_seed
    for key, value in straight.student.state_dict().items():
        torch.testing.assert_close(resumed.student.state_dict()[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("options", [NEW_LOSS_OPTIONS[1], NEW_LOSS_OPTIONS[2]])
def test_ddp_spawn_with_the_new_losses(options: dict[str, Any]) -> None:
    x, y = tensors(32)
    teacher = make_teacher()
    before = copy.deepcopy(teacher.state_dict())
    student = make_conv_student()
    student_before = copy.deepcopy(student.state_dict())
    module = DistillationModule(student, teacher, optimizer=sgd, **options)
    ddp = trainer(strategy="ddp_spawn", devices=2, max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    ddp.fit(module, loader(x, y), loader(x, y))
    assert not torch.equal(module.student.state_dict()["0.weight"], student_before["0.weight"])
    for key, value in before.items():
        assert torch.equal(module.teacher.state_dict()[key], value), key
