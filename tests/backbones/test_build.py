"""Tests for lt_transfer/backbones/build.py: spec strings to their source, plain modules split by head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lt_transfer.backbones import build_backbone
from tests.backbones.partition import assert_groups_partition


@pytest.mark.parametrize("spec", ["resnet18", "pytorch/resnet18", "torchvision/"])
def test_bad_spec_string(spec: str) -> None:
    with pytest.raises(ValueError, match="build_backbone\\(name="):
        build_backbone(spec)


def test_spec_string_arguments_that_do_not_apply() -> None:
    with pytest.raises(ValueError, match="only apply to nn.Module inputs"):
        build_backbone("torchvision/resnet18", head="fc")
    with pytest.raises(ValueError, match="only apply to nn.Module inputs"):
        build_backbone("torchvision/resnet18", pretrained=True)
    with pytest.raises(TypeError, match="must be a string or nn.Module"):
        build_backbone(3)  # type: ignore[arg-type]


def test_torchvision_spec_goes_to_the_torchvision_builder_with_its_kwargs() -> None:
    backbone = build_backbone("torchvision/vit_b_16", image_size=32)
    assert backbone.name == "torchvision/vit_b_16" and backbone.num_features == 768


def test_plain_module_with_head() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3))
    backbone = build_backbone(net, head="4")
    assert backbone.num_features == 8
    assert backbone(torch.randn(5, 1, 4, 4)).shape == (5, 8)
    assert [g.name for g in backbone.layer_groups()] == ["1"]
    assert not any(isinstance(m, nn.Dropout) for m in backbone.modules()), "dropout before head removed"
    assert_groups_partition(backbone)
    assert not backbone.pretrained
    assert build_backbone(nn.Sequential(nn.Linear(4, 2)), num_features=2, pretrained=True).pretrained


def test_plain_module_named_head_attribute() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
            self.scale = nn.Parameter(torch.ones(6))
            self.fc = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.body(x) * self.scale)

    backbone = build_backbone(Net(), head="fc")
    assert backbone(torch.randn(3, 4)).shape == (3, 6)
    assert [g.name for g in backbone.layer_groups()] == ["params", "body"]
    assert_groups_partition(backbone)


def test_plain_module_errors() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="without a split"):
        build_backbone(net)
    with pytest.raises(ValueError, match="has no such sub-module. Its children are \\['0', '1'\\]"):
        build_backbone(net, head="classifier")
    with pytest.raises(ValueError, match="weights and model kwargs only apply"):
        build_backbone(net, weights="DEFAULT", head="1")
    with pytest.raises(ValueError, match="disagrees with the head '1', whose in_features is 4"):
        build_backbone(net, head="1", num_features=5)
