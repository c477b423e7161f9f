"""configs/distill_for_deployment.yaml: a fine-tuned teacher checkpoint distilled into a small student."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest

from lt_transfer import DistillationModule, SmallCNNBackbone, TransferClassifier

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "distill_for_deployment.yaml"
FAST = ["--data.init_args.dataset=sklearn_digits", "--data.init_args.image_size=32", "--trainer.logger=false"]


def teacher_checkpoint(folder: Path) -> Path:
    """A MobileNetV2 TransferClassifier checkpoint, as `lt-transfer fit` of the teacher recipe writes one."""
    teacher = TransferClassifier("torchvision/mobilenet_v2", num_classes=10)
    saver = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    saver.strategy.connect(teacher)
    path = folder / "teacher.ckpt"
    saver.save_checkpoint(path)
    return path


def lt_transfer(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lt_transfer.cli", "fit", "--config", str(RECIPE), *FAST, *overrides]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_recipe_distils_the_checkpoint_teacher(tmp_path: Path) -> None:
    path = teacher_checkpoint(tmp_path)
    result = lt_transfer(f"--model.init_args.teacher={path}", "--trainer.fast_dev_run=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "`Trainer.fit` stopped" in result.stderr + result.stdout
    # an argument of another loss is refused with a message naming it
    failed = lt_transfer(
        f"--model.init_args.teacher={path}", "--model.init_args.dkd_beta=2.0", "--trainer.fast_dev_run=true",
        cwd=tmp_path,
    )
    assert failed.returncode != 0 and "does not use dkd_beta=2.0 (dkd only)" in failed.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        ["--model.init_args.loss=dkd", "--model.init_args.dkd_beta=2.0"],
        ["--model.init_args.teaching=function_matching", "--model.init_args.mix=cutmix"],
        [
            "--model.init_args.loss=at",
            "--model.init_args.temperature=null",
            "--model.init_args.at_layers=[[backbone.model.block2, backbone.model.features.3]]",
            "--model.init_args.at_interpolate=true",
        ],
    ],
)
def test_recipe_chooses_the_loss_and_teaching_from_yaml(tmp_path: Path, overrides: list[str]) -> None:
    from lt_transfer.cli import TransferCLI

    path = teacher_checkpoint(tmp_path)
    cli = TransferCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        auto_configure_optimizers=False,
        args=["--config", str(RECIPE), *FAST, f"--model.init_args.teacher={path}", *overrides],
    )
    module = cli.model
    assert isinstance(module, DistillationModule)
    assert isinstance(module.student.backbone, SmallCNNBackbone)
    for override in overrides:
        key, _, value = override.removeprefix("--model.init_args.").partition("=")
        if key in ("loss", "teaching", "mix"):
            assert module.hparams[key] == value
    assert module.teaching_mode in ("consistent", "function_matching")
