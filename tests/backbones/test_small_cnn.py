"""Tests for lt_transfer/backbones/small_cnn.py: the compact from-scratch student CNN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lt_transfer
from lt_transfer import DistillationModule, TransferClassifier
from lt_transfer.backbones import SmallCNNBackbone
from tests.backbones.partition import assert_groups_partition


def test_shapes_groups_and_flag() -> None:
    backbone = SmallCNNBackbone()
    assert backbone(torch.zeros(2, 3, 64, 64)).shape == (2, 64)
    assert backbone(torch.zeros(2, 3, 8, 8)).shape == (2, 64)  # the smallest side: 2 * 2 ** 2
    assert [g.name for g in backbone.layer_groups()] == ["block1", "block2", "block3"]
    assert backbone.pretrained is False and backbone.name == "small_cnn"
    assert_groups_partition(backbone)
    # the input pooling halves the resolution the blocks see; block1 pools once more
    assert backbone.model[:2](torch.zeros(1, 3, 64, 64)).shape == (1, 16, 16, 16)
    assert not any(isinstance(m, nn.AvgPool2d) for m in SmallCNNBackbone(input_pool=1).modules())


def test_options() -> None:
    grey = SmallCNNBackbone(in_channels=1, widths=[4], input_pool=1, batch_norm=False)
    assert grey.num_features == 4 and grey(torch.zeros(2, 1, 5, 5)).shape == (2, 4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in grey.modules())
    assert all(m.bias is not None for m in grey.modules() if isinstance(m, nn.Conv2d))
    assert all(m.bias is None for m in SmallCNNBackbone().modules() if isinstance(m, nn.Conv2d))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="in_channels=0"):
        SmallCNNBackbone(in_channels=0)
    with pytest.raises(ValueError, match=r"widths=\[\]"):
        SmallCNNBackbone(widths=[])
    with pytest.raises(ValueError, match=r"widths=\[8, 0\]"):
        SmallCNNBackbone(widths=[8, 0])
    with pytest.raises(ValueError, match="input_pool=0"):
        SmallCNNBackbone(input_pool=0)
    with pytest.raises(TypeError, match="batch_norm='no'"):
        SmallCNNBackbone(batch_norm="no")  # type: ignore[arg-type]


def test_student_of_attention_transfer() -> None:
    """Its blocks output spatial maps: they pair with a teacher's conv layers in attention transfer."""
    student = TransferClassifier(SmallCNNBackbone(widths=(8, 16)), num_classes=3)
    teacher = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    module = DistillationModule(
        student, teacher, loss="at", at_layers=[["backbone.model.block1", "0"]], at_interpolate=True
    )
    assert module(torch.zeros(2, 3, 16, 16)).shape == (2, 3)


def test_public_import_paths_name_the_same_class() -> None:
    assert lt_transfer.SmallCNNBackbone is SmallCNNBackbone
    assert SmallCNNBackbone.__module__ == "lt_transfer.backbones.small_cnn"
