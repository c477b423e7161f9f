"""Tests for lt_transfer/backbones/base.py: Backbone, LayerGroup and the group-prefix matching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lt_transfer.backbones import Backbone, LayerGroup, matches_prefix
from tests.backbones.partition import assert_groups_partition


def test_prefix_matching_is_by_dotted_component() -> None:
    assert matches_prefix("layer1", ["layer1"])
    assert matches_prefix("layer1.0.weight", ["stem", "layer1"])
    assert not matches_prefix("layer10.weight", ["layer1"])
    assert not matches_prefix("layer1.weight", [])


def test_default_groups_are_the_children_with_parameters_and_direct_parameters_first() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))
            self.body = nn.Linear(2, 3)
            self.act = nn.ReLU()  # no parameters: no group
            self.top = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.top(self.act(self.body(x) * self.scale))

    backbone = Backbone(Net(), num_features=3)
    groups = backbone.layer_groups()
    assert [g.name for g in groups] == ["params", "body", "top"]
    assert all(isinstance(g, LayerGroup) for g in groups)
    assert [n for n, _ in groups[1].named_parameters] == ["model.body.weight", "model.body.bias"]
    assert groups[1].modules == (backbone.model.body,)
    assert groups[2].num_parameters() == 12
    assert_groups_partition(backbone)
    assert backbone(torch.zeros(4, 2)).shape == (4, 3)


def test_groups_reference_the_live_parameters() -> None:
    backbone = Backbone(nn.Sequential(nn.Linear(2, 2)), num_features=2)
    backbone.model[0].weight = nn.Parameter(torch.zeros(2, 2))
    (group,) = backbone.layer_groups()
    assert any(p is backbone.model[0].weight for p in group.parameters())


def test_pretrained_flag_and_repr() -> None:
    net = nn.Sequential(nn.Linear(2, 2))
    assert Backbone(net, 2).pretrained is False
    backbone = Backbone(net, 2, name="mine", pretrained=True)
    assert backbone.pretrained is True
    assert "name='mine'" in repr(backbone) and "pretrained=True" in repr(backbone)


def test_explicit_groups_must_partition() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with pytest.raises(ValueError, match="parameter '1.weight' is in no layer group"):
        Backbone(net, 4, groups=[("first", ["0"])])
    with pytest.raises(ValueError, match="in several layer groups"):
        Backbone(net, 4, groups=[("a", ["0", "1"]), ("b", ["1"])])
    with pytest.raises(ValueError, match="match no parameter"):
        Backbone(net, 4, groups=[("a", ["0"]), ("b", ["1"]), ("c", ["2"])])
    with pytest.raises(ValueError, match="no layer groups"):
        Backbone(nn.ReLU(), 4)
    with pytest.raises(ValueError, match="num_features"):
        Backbone(net, 0)
    with pytest.raises(TypeError, match="must be an nn.Module"):
        Backbone("net", 4)  # type: ignore[arg-type]


def test_one_big_sequential_is_split_into_its_children() -> None:
    from torchvision.models import mobilenet_v2

    from lt_transfer.backbones import build_backbone

    features = mobilenet_v2().features
    wrapped = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    backbone = Backbone(wrapped, num_features=1280)
    names = [g.name for g in backbone.layer_groups()]
    assert names == [f"0.{i}" for i in range(19)]
    assert backbone.layer_groups()[3].modules == (features[3],)
    assert_groups_partition(backbone)
    built = build_backbone(
        nn.Sequential(mobilenet_v2().features, nn.AdaptiveAvgPool2d(1), nn.Flatten()), num_features=1280
    )
    assert [g.name for g in built.layer_groups()] == names
    # nested one-child Sequentials are followed; a single non-Sequential child stays one group
    nested = Backbone(nn.Sequential(nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))), 2)
    assert [g.name for g in nested.layer_groups()] == ["0.0.0", "0.0.1"]
    assert [g.name for g in Backbone(nn.Sequential(nn.Sequential(nn.Linear(2, 2))), 2).layer_groups()] == [
        "0"
    ]
    # several children at the top level: unchanged
    two = Backbone(nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), nn.Linear(2, 2)), 2)
    assert [g.name for g in two.layer_groups()] == ["0", "1"]


def test_preprocessing_attribute() -> None:
    from lt_transfer.backbones import Preprocessing

    net = nn.Sequential(nn.Linear(2, 2))
    assert Backbone(net, 2).preprocessing is None
    assert Backbone(net, 2, preprocessing=Preprocessing.imagenet()).preprocessing.image_size == 224
    with pytest.raises(TypeError, match="must be a Preprocessing or None, got dict"):
        Backbone(net, 2, preprocessing={"image_size": 224})  # type: ignore[arg-type]
