"""Tests for lt_transfer/backbones/torchvision.py: every supported family, head removal, weights, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models as tvm

from lt_transfer.backbones import (
    build_backbone,
    build_torchvision_backbone,
    load_torchvision_classifier,
    remove_head,
)
from lt_transfer.resources import MOBILENET_V2_IMAGENET, resolve_package_uri
from tests.backbones.partition import assert_groups_partition

FAMILIES = [
    ("resnet18", {}, 512, 5),
    ("mobilenet_v2", {}, 1280, 19),
    ("mobilenet_v3_small", {}, 1024, 14),
    ("efficientnet_b0", {}, 1280, 9),
    ("convnext_tiny", {}, 768, 9),
    ("densenet121", {}, 1024, 5),
    ("vit_b_16", {"image_size": 32}, 768, 14),
    ("regnet_y_400mf", {}, 440, 5),
]


@pytest.mark.parametrize(("name", "kwargs", "width", "num_groups"), FAMILIES)
def test_torchvision_family(name: str, kwargs: dict, width: int, num_groups: int) -> None:
    backbone = build_backbone(f"torchvision/{name}", **kwargs).eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, width)
    assert backbone.num_features == width
    assert len(backbone.layer_groups()) == num_groups
    assert_groups_partition(backbone)
    # the classification head is gone: no 1000-way Linear remains
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in backbone.modules())


def test_groups_are_ordered_input_to_output() -> None:
    backbone = build_backbone("torchvision/resnet18")
    assert [g.name for g in backbone.layer_groups()] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    stem = backbone.layer_groups()[0]
    assert [n for n, _ in stem.named_parameters] == [
        "model.conv1.weight",
        "model.bn1.weight",
        "model.bn1.bias",
    ]


def test_unsupported_family_error_lists_families_and_explicit_split() -> None:
    with pytest.raises(ValueError, match="Supported families.*ResNet.*build_backbone\\(model, head="):
        build_backbone("torchvision/squeezenet1_0")


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="torchvision has no model 'resnet19'"):
        build_backbone("torchvision/resnet19")


def test_unknown_model_lists_real_close_matches_not_the_first_names() -> None:
    """Bug: the "similar names" were the first 8 model names alphabetically (alexnet, convnext_base ...)."""
    with pytest.raises(ValueError) as info:
        build_backbone("torchvision/resnet19")
    message = str(info.value)
    assert "Similar names: ['resnet18'" in message
    assert "alexnet" not in message
    with pytest.raises(ValueError, match="Similar names: \\['mobilenet_v2'"):
        build_backbone("torchvision/mobilenetv2")
    with pytest.raises(ValueError) as info:
        build_backbone("torchvision/not_a_model")
    assert "No similar names" in str(info.value)
    assert "alexnet" not in str(info.value) and "list_models()" in str(info.value)


def test_unknown_weights_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        build_backbone("torchvision/resnet18", weights="IMAGENET22K")


def test_missing_weights_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="weights="):
        build_backbone("torchvision/resnet18", weights=str(tmp_path / "nope.pth"))


def test_local_weights_roundtrip(tmp_path) -> None:
    torch.manual_seed(0)
    reference = tvm.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("torchvision/resnet18", weights=str(path))
    loaded = backbone.model.state_dict()
    for key, value in reference.state_dict().items():
        if key.startswith("fc."):
            assert key not in loaded
        else:
            assert torch.equal(loaded[key], value), key


def test_headless_state_dict_loads(tmp_path) -> None:
    source = build_backbone("torchvision/resnet18")
    path = tmp_path / "features.pth"
    torch.save(source.model.state_dict(), path)
    backbone = build_backbone("torchvision/resnet18", weights=str(path))
    assert torch.equal(backbone.model.conv1.weight, source.model.conv1.weight)


def test_weights_of_other_architecture_rejected(tmp_path) -> None:
    path = tmp_path / "mobilenet.pth"
    torch.save(tvm.mobilenet_v2().state_dict(), path)
    with pytest.raises(ValueError, match="does not match the architecture 'torchvision/resnet18'"):
        build_backbone("torchvision/resnet18", weights=str(path))


def test_weights_with_wrong_shapes_rejected(tmp_path) -> None:
    path = tmp_path / "resnet34.pth"
    state = tvm.resnet18().state_dict()
    state["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    torch.save(state, path)
    with pytest.raises(ValueError, match="shape mismatch"):
        build_backbone("torchvision/resnet18", weights=str(path))


def test_shipped_mobilenet_v2_imagenet_weights_load_all_keys() -> None:
    path = resolve_package_uri(MOBILENET_V2_IMAGENET)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = tvm.mobilenet_v2()
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    backbone = build_backbone("torchvision/mobilenet_v2", weights=MOBILENET_V2_IMAGENET)
    assert torch.equal(backbone.model.features[0][0].weight, state["features.0.0.weight"])


def test_default_weights_use_torch_hub_cache(tmp_path, monkeypatch) -> None:
    """A weights enum name runs torchvision's real loading path; the file comes from the hub cache.

    The shipped file is ``IMAGENET1K_V1`` (``DEFAULT`` is V2 for MobileNetV2, not shipped).
    """
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "mobilenet_v2-b0353104.pth").symlink_to(resolve_package_uri(MOBILENET_V2_IMAGENET))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    backbone = build_backbone("torchvision/mobilenet_v2", weights="IMAGENET1K_V1")
    state = torch.load(checkpoints / "mobilenet_v2-b0353104.pth", weights_only=True)
    assert torch.equal(backbone.model.features[18][0].weight, state["features.18.0.weight"])


def test_builder_is_what_build_backbone_calls() -> None:
    backbone = build_torchvision_backbone("resnet18")
    assert backbone.name == "torchvision/resnet18" and not backbone.pretrained
    assert backbone.num_features == build_backbone("torchvision/resnet18").num_features


def test_remove_head_named_and_indexed() -> None:
    net = tvm.resnet18()
    assert remove_head(net, "fc") == 512 and isinstance(net.fc, nn.Identity)
    seq = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.Linear(3, 2))
    assert remove_head(seq, "2") == 3
    assert [type(m) for m in seq] == [nn.Linear, nn.Identity, nn.Identity]
    with pytest.raises(TypeError, match="Expected a Linear classification head at '0'"):
        remove_head(nn.Sequential(nn.ReLU()), "0")


def test_whole_classifier_keeps_its_head_and_loads_shipped_weights() -> None:
    model = load_torchvision_classifier("torchvision/mobilenet_v2", MOBILENET_V2_IMAGENET)
    state = torch.load(resolve_package_uri(MOBILENET_V2_IMAGENET), map_location="cpu", weights_only=True)
    assert model.classifier[-1].out_features == 1000
    assert torch.equal(model.classifier[-1].weight, state["classifier.1.weight"])
    assert isinstance(load_torchvision_classifier("squeezenet1_0"), tvm.SqueezeNet)  # any family


def test_whole_classifier_errors_name_the_caller_and_argument(tmp_path) -> None:
    with pytest.raises(ValueError, match="load_torchvision_classifier\\(name='resnet19'\\).*'resnet18'"):
        load_torchvision_classifier("resnet19")
    with pytest.raises(ValueError, match="Teacher\\(spec='torchvision/resnet19'\\)"):
        load_torchvision_classifier("torchvision/resnet19", caller="Teacher", name_argument="spec")
    with pytest.raises(ValueError, match="load_torchvision_classifier\\(weights='IMAGENET22K'\\)"):
        load_torchvision_classifier("resnet18", "IMAGENET22K")
    with pytest.raises(FileNotFoundError, match="T\\(w=.*nope.pth'\\): no such file"):
        load_torchvision_classifier("resnet18", str(tmp_path / "nope.pth"), caller="T", weights_argument="w")
