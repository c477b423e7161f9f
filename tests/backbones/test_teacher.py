"""Tests for lt_transfer/backbones/teacher.py: load_teacher from a module, a spec or a checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torchvision import models as tvm

from lt_transfer.backbones import load_teacher
from lt_transfer.resources import MOBILENET_V2_IMAGENET, resolve_package_uri


class CheckpointTeacher(pl.LightningModule):
    """A LightningModule teacher written to a checkpoint by the tests."""

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(4, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def save_checkpoint(module: pl.LightningModule, path: Path, class_path: str | None = None) -> Path:
    hyper_parameters = dict(module.hparams)
    if class_path is not None:
        hyper_parameters["_class_path"] = class_path  # what LightningCLI records
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": hyper_parameters,
        "pytorch-lightning_version": pl.__version__,
    }
    torch.save(checkpoint, path)
    return path


def test_module_is_returned_as_is_and_rejects_weights() -> None:
    net = nn.Linear(2, 2)
    assert load_teacher(net) is net
    with pytest.raises(ValueError, match="teacher_weights and teacher_class only apply"):
        load_teacher(net, weights="DEFAULT")
    with pytest.raises(TypeError, match="must be an nn.Module, a checkpoint path"):
        load_teacher(3)  # type: ignore[arg-type]


def test_torchvision_spec_is_the_whole_classifier() -> None:
    teacher = load_teacher("torchvision/mobilenet_v2", weights=MOBILENET_V2_IMAGENET)
    state = torch.load(resolve_package_uri(MOBILENET_V2_IMAGENET), map_location="cpu", weights_only=True)
    assert torch.equal(teacher.classifier[1].weight, state["classifier.1.weight"])
    assert isinstance(load_teacher("torchvision/resnet18"), tvm.ResNet)


def test_torchvision_spec_errors_name_the_distillation_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Module\\(teacher='torchvision/resnet19'\\).*'resnet18'"):
        load_teacher("torchvision/resnet19")
    with pytest.raises(ValueError, match="DistillationModule\\(teacher_weights='IMAGENET22K'\\)"):
        load_teacher("torchvision/resnet18", weights="IMAGENET22K")
    with pytest.raises(FileNotFoundError, match="DistillationModule\\(teacher_weights=.*\\): no such file"):
        load_teacher("torchvision/resnet18", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="teacher_class=...\\) does not apply"):
        load_teacher("torchvision/resnet18", teacher_class="x.Y")


def test_checkpoint_teacher_loads_with_its_class(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = CheckpointTeacher(width=5)
    class_path = f"{CheckpointTeacher.__module__}.CheckpointTeacher"
    recorded = save_checkpoint(original, tmp_path / "cli.ckpt", class_path=class_path)
    plain = save_checkpoint(original, tmp_path / "plain.ckpt")
    for teacher in (load_teacher(str(recorded)), load_teacher(str(plain), teacher_class=class_path)):
        assert isinstance(teacher, CheckpointTeacher) and teacher.net.out_features == 5
        assert torch.equal(teacher.net.weight, original.net.weight)


def test_checkpoint_teacher_errors(tmp_path: Path) -> None:
    plain = save_checkpoint(CheckpointTeacher(), tmp_path / "plain.ckpt")
    with pytest.raises(FileNotFoundError, match="not a file and not a 'torchvision/<model>' or"):
        load_teacher(str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match="teacher_weights=...\\) does not apply to a checkpoint"):
        load_teacher(str(plain), weights="DEFAULT")
    with pytest.raises(ValueError, match="does not record its LightningModule class.*teacher_class="):
        load_teacher(str(plain))
    with pytest.raises(ValueError, match="cannot be imported"):
        load_teacher(str(plain), teacher_class="CheckpointTeacher")
    with pytest.raises(ValueError, match="cannot be imported"):
        load_teacher(str(plain), teacher_class="no_such_module_xyz.Teacher")
    with pytest.raises(ValueError, match="is not a LightningModule class"):
        load_teacher(str(plain), teacher_class="torch.nn.Linear")
