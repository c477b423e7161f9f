"""Shared test helpers: tiny models and data that run in seconds on 2 CPU cores, and the seeded
random state every test starts from."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer.backbones import Backbone


def make_tiny_backbone(in_channels: int = 3, width: int = 8) -> Backbone:
    """A 3-group CNN with BatchNorm: stem, block, pool → (N, width)."""
    model = nn.Sequential()
    model.add_module(
        "stem", nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
    )
    model.add_module(
        "block", nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
    )
    model.add_module("top", nn.Sequential(nn.Conv2d(width, width, 1), nn.BatchNorm2d(width), nn.ReLU()))
    model.add_module("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    return Backbone(model, num_features=width, name="tiny")


def make_loader(
    n: int = 32, num_classes: int = 3, size: int = 8, batch_size: int = 8, seed: int = 0
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=generator)
    y = torch.randint(0, num_classes, (n,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


@pytest.fixture(autouse=True)
def _seeded_random_state() -> None:
    """Every test starts from the same global random state (torch, NumPy, ``random``).

    A test that draws from a global generator without seeding it first (``torch.randn(4, 3)``)
    would otherwise see whatever state the tests before it left, so its data, and whether it
    passes, would depend on which tests ran before it. Processes a test spawns (``ddp_spawn``,
    ``mp.spawn``) start unseeded: their workers seed themselves or build data with an explicit
    ``torch.Generator``.
    """
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def tiny_backbone() -> Backbone:
    torch.manual_seed(0)
    return make_tiny_backbone()
