"""Tests for lt_transfer/backbones/lenet.py: the DANN paper's digit network as a Backbone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lt_transfer
from lt_transfer.backbones import LeNetBackbone
from tests.backbones.partition import assert_groups_partition


def test_default_network_shapes_groups_and_flag() -> None:
    backbone = LeNetBackbone()
    assert backbone(torch.zeros(2, 3, 28, 28)).shape == (2, 128)
    assert backbone(torch.zeros(1, 3, 16, 16)).shape == (1, 128)  # the smallest input side
    assert [g.name for g in backbone.layer_groups()] == ["conv1", "conv2", "fc"]
    assert backbone.pretrained is False and backbone.name == "lenet"
    assert_groups_partition(backbone)


def test_paper_options() -> None:
    flat = LeNetBackbone(in_channels=1, num_features=None, batch_norm=False)
    assert flat.num_features == 768 and flat(torch.zeros(2, 1, 28, 28)).shape == (2, 768)
    assert [g.name for g in flat.layer_groups()] == ["conv1", "conv2"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in flat.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in LeNetBackbone().modules())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="in_channels=0"):
        LeNetBackbone(in_channels=0)
    with pytest.raises(ValueError, match="num_features=0"):
        LeNetBackbone(num_features=0)
    with pytest.raises(TypeError, match="batch_norm='no'"):
        LeNetBackbone(batch_norm="no")  # type: ignore[arg-type]


def test_public_import_paths_name_the_same_class() -> None:
    assert lt_transfer.LeNetBackbone is LeNetBackbone
    assert LeNetBackbone.__module__ == "lt_transfer.backbones.lenet"
