"""Time-series backbones: shapes, layer groups, weights files and checkpoints, bad input."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lt_transfer import TransferClassifier
from lt_transfer.backbones import (
    FCNBackbone,
    InceptionTimeBackbone,
    ResNet1DBackbone,
    architecture_only,
    build_backbone,
)

TINY = {
    "fcn": {"filters": (4, 8, 4)},
    "resnet1d": {"filters": (4, 8, 8)},
    "inception": {"depth": 6, "filters": 2, "bottleneck": 2, "kernel_sizes": (9, 5, 3)},
}


@pytest.mark.parametrize("name", ["fcn", "resnet1d", "inception"])
@pytest.mark.parametrize("length", [7, 24, 61])
def test_any_length_pools_to_features(name: str, length: int) -> None:
    backbone = build_backbone(f"ts/{name}", in_channels=3, **TINY[name])
    features = backbone(torch.randn(2, 3, length))
    assert features.shape == (2, backbone.num_features)
    assert backbone.in_channels == 3 and not backbone.pretrained


def test_paper_sizes_and_groups() -> None:
    fcn, resnet, inception = (build_backbone(f"ts/{n}") for n in ("fcn", "resnet1d", "inception"))
    assert (fcn.num_features, resnet.num_features, inception.num_features) == (128, 128, 128)
    assert [g.name for g in fcn.layer_groups()] == ["block1", "block2", "block3"]
    assert [g.name for g in resnet.layer_groups()] == ["block1", "block2", "block3"]
    assert [g.name for g in inception.layer_groups()] == [f"inception{i}" for i in range(1, 7)]
    # kernels 8, 5, 3 with 128/256/128 filters (Wang et al. 2017)
    convs = [m for m in fcn.modules() if isinstance(m, nn.Conv1d)]
    assert [(c.kernel_size[0], c.out_channels) for c in convs] == [(8, 128), (5, 256), (3, 128)]
    # the shortcut of every third Inception module sits in that module's group
    group3 = {name for name, _ in inception.layer_groups()[2].named_parameters}
    assert any(name.startswith("model.shortcut1.") for name in group3)


@pytest.mark.parametrize("name", ["fcn", "resnet1d", "inception"])
def test_every_parameter_in_exactly_one_group(name: str) -> None:
    backbone = build_backbone(f"ts/{name}", in_channels=2, **TINY[name])
    grouped = [id(p) for g in backbone.layer_groups() for p in g.parameters()]
    assert sorted(grouped) == sorted(id(p) for p in backbone.parameters())
    assert all(g.modules for g in backbone.layer_groups())


def test_even_kernels_keep_the_length() -> None:
    backbone = FCNBackbone(filters=(2, 2, 2), kernel_sizes=(8, 4, 2))
    block = backbone.model.block1
    assert block(torch.randn(1, 1, 13)).shape == (1, 2, 13)


def test_wrong_input_shape_is_a_clear_error() -> None:
    backbone = FCNBackbone(in_channels=2, filters=(2, 2, 2))
    with pytest.raises(ValueError, match=r"expects series of shape \(N, 2, length\), got \(4, 30\)"):
        backbone(torch.zeros(4, 30))
    with pytest.raises(ValueError, match=r"got \(4, 1, 30\)"):
        backbone(torch.zeros(4, 1, 30))


def test_bad_arguments_and_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"FCNBackbone\(filters=\(4, 8\)\) must have 3 entries"):
        FCNBackbone(filters=(4, 8))
    with pytest.raises(ValueError, match=r"in_channels=0"):
        ResNet1DBackbone(in_channels=0)
    with pytest.raises(ValueError, match=r"bottleneck=-1"):
        InceptionTimeBackbone(bottleneck=-1)
    with pytest.raises(ValueError, match=r"unknown time-series backbone; choose one of \['ts/fcn'"):
        build_backbone("ts/transformer")
    with pytest.raises(TypeError, match=r"ts/fcn.*unexpected keyword argument 'depth'"):
        build_backbone("ts/fcn", depth=3)


@pytest.mark.parametrize("kind", ["network", "backbone", "checkpoint"])
def test_weights_from_a_file_or_a_checkpoint(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    source = TransferClassifier(FCNBackbone(filters=(4, 8, 4)), num_classes=3)
    path = tmp_path / f"{kind}.pt"
    if kind == "network":
        torch.save(source.backbone.model.state_dict(), path)
    elif kind == "backbone":
        torch.save(source.backbone.state_dict(), path)
    else:
        path = tmp_path / "model.ckpt"
        trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.strategy.connect(source)
        trainer.save_checkpoint(path)
    loaded = build_backbone("ts/fcn", weights=str(path), filters=(4, 8, 4))
    assert loaded.pretrained
    pairs = zip(loaded.model.state_dict().values(), source.backbone.model.state_dict().values(), strict=True)
    for mine, theirs in pairs:
        assert torch.equal(mine, theirs)


def test_weights_that_do_not_fit_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save(FCNBackbone(filters=(4, 8, 4)).model.state_dict(), path)
    with pytest.raises(ValueError, match=r"other\.pt.*does not match the architecture 'ts/fcn'.*shape"):
        FCNBackbone(filters=(4, 8, 8), weights=str(path))
    with pytest.raises(ValueError, match=r"missing keys"):
        ResNet1DBackbone(filters=(4, 8, 4), weights=str(path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        FCNBackbone(weights=str(tmp_path / "absent.pt"))


def test_architecture_only_reads_no_file() -> None:
    with architecture_only():
        backbone = build_backbone("ts/resnet1d", weights="/no/such/file.pt")
    assert backbone.pretrained


def test_classifier_checkpoint_of_a_spec_backbone_loads_without_the_weights_file(tmp_path: Path) -> None:
    weights = tmp_path / "fcn.pt"
    torch.save(FCNBackbone().state_dict(), weights)
    model = TransferClassifier("ts/fcn", num_classes=2, weights=str(weights))
    assert model.backbone.pretrained and model.backbone_lr_scale == 0.1
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    weights.unlink()
    loaded = TransferClassifier.load_from_checkpoint(tmp_path / "c.ckpt")
    assert torch.equal(loaded.backbone.model.block1[0].weight, model.backbone.model.block1[0].weight)
    assert loaded(torch.zeros(2, 1, 16)).shape == (2, 2)
