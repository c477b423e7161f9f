"""Tests for lt_transfer.freezing: freeze/unfreeze by path, regex and layer group."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from lt_transfer import Backbone, TransferClassifier
from lt_transfer.freezing import freeze, resolve_layer_groups, unfreeze


def _net() -> nn.Module:
    net = nn.Module()
    net.encoder = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 4))
    net.head = nn.Linear(4, 1)
    return net


def _trainable(module: nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters() if p.requires_grad]


def test_freeze_by_path_sets_eval_and_no_grad() -> None:
    net = _net()
    assert freeze(net, "encoder.1") == ["encoder.1.weight", "encoder.1.bias"]
    assert not net.encoder[1].training and net.encoder[0].training
    assert "encoder.1.weight" not in _trainable(net)
    before = net.encoder[1].running_mean.clone()
    net.encoder(torch.randn(8, 2))
    assert torch.equal(net.encoder[1].running_mean, before)


def test_freeze_frozen_mode_train_keeps_train_mode() -> None:
    net = _net()
    freeze(net, "encoder", frozen_mode="train")
    assert net.encoder[1].training
    assert _trainable(net) == ["head.weight", "head.bias"]


def test_freeze_by_regex_and_compiled_pattern() -> None:
    net = _net()
    assert freeze(net, pattern=r"\.bias$") == [
        "encoder.0.bias",
        "encoder.1.bias",
        "encoder.3.bias",
        "head.bias",
    ]
    assert unfreeze(net, pattern=re.compile("^head")) == ["head.weight", "head.bias"]
    assert _trainable(net) == [
        "encoder.0.weight",
        "encoder.1.weight",
        "encoder.3.weight",
        "head.weight",
        "head.bias",
    ]


def test_freeze_by_group_index_on_plain_module_and_backbone() -> None:
    net = _net()
    freeze(net)
    assert unfreeze(net, groups=[-1, -2], backbone="encoder") == [
        "encoder.3.weight",
        "encoder.3.bias",
        "encoder.1.weight",
        "encoder.1.bias",
    ]
    model = TransferClassifier(Backbone(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 4)), 4), 2)
    freeze(model, groups=0)
    assert [g.name for g in model.frozen_layer_groups()] == ["0"]


def test_parameters_compared_by_identity() -> None:
    # two groups share one parameter object: it belongs to the first group only
    shared = nn.Linear(2, 2)
    net = nn.Module()
    net.encoder = nn.Sequential(shared, nn.Linear(2, 2))
    prefix, groups = resolve_layer_groups(net, "encoder")
    ids = [id(p) for g in groups for p in g.parameters()]
    assert prefix == "encoder" and len(ids) == len(set(ids)) == 4


def test_errors_name_the_problem() -> None:
    net = _net()
    with pytest.raises(ValueError, match="has no such sub-module. It has: .*encoder"):
        freeze(net, "decoder")
    with pytest.raises(ValueError, match="matches no parameter name"):
        freeze(net, pattern="nothing")
    with pytest.raises(ValueError, match="index 5 is out of range; there are 3 layer groups"):
        freeze(net, groups=5, backbone="encoder")
    with pytest.raises(ValueError, match="only one of path, pattern and groups"):
        freeze(net, "encoder", pattern="x")
    with pytest.raises(ValueError, match="backbone='backbone'.*module.backbone"):
        resolve_layer_groups(net)


def test_frozen_mode_must_be_eval_or_train() -> None:
    with pytest.raises(ValueError, match="frozen_mode='keep'.*'eval'.*'train'"):
        freeze(_net(), "encoder", frozen_mode="keep")  # type: ignore[arg-type]
