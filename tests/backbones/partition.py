"""Shared assertion for the backbone tests: the layer groups partition the parameters."""

from __future__ import annotations

from lt_transfer.backbones import Backbone


def assert_groups_partition(backbone: Backbone) -> None:
    """Every parameter of ``backbone`` is in exactly one layer group (compared by identity)."""
    grouped = [id(p) for group in backbone.layer_groups() for p in group.parameters()]
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups"
    assert set(grouped) == {id(p) for p in backbone.parameters()}, "a parameter is in no group"
