"""Parameter groups: lr scales as data, no-decay by identity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lt_transfer.optim import apply_lr_scales, layerwise_lr_scales, no_decay_parameter_ids, param_groups_for


def test_no_decay_by_identity_not_value() -> None:
    # two BatchNorms with identical fresh values and a Linear with an all-ones weight
    net = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 3), nn.BatchNorm1d(3), nn.LayerNorm(3))
    nn.init.ones_(net[1].weight)
    ids = no_decay_parameter_ids(net)
    names = [n for n, p in net.named_parameters() if id(p) in ids]
    assert names == ["0.weight", "0.bias", "1.bias", "2.weight", "2.bias", "3.weight", "3.bias"]


def test_layerwise_scales() -> None:
    assert layerwise_lr_scales(4, 0.5, 0.5) == [0.0625, 0.125, 0.25, 0.5]
    assert layerwise_lr_scales(2, 0.1, 1.0) == [0.1, 0.1]
    with pytest.raises(ValueError, match="layer_decay=1.5"):
        layerwise_lr_scales(2, 0.1, 1.5)
    with pytest.raises(ValueError, match="backbone_lr_scale=-1"):
        layerwise_lr_scales(2, -1, 1.0)


def test_param_groups_skip_frozen_and_empty() -> None:
    net = nn.Linear(2, 2)
    net.bias.requires_grad_(False)
    groups = param_groups_for("x", net.named_parameters(), 0.5, no_decay_parameter_ids(net))
    assert [g["name"] for g in groups] == ["x"]
    assert groups[0]["params"][0] is net.weight


def test_apply_lr_scales_is_idempotent() -> None:
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a], "lr_scale": 0.25}, {"params": [b]}], lr=0.4)
    apply_lr_scales(opt)
    apply_lr_scales(opt)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.4]
