"""Backbone adapter: every supported torchvision family, plain modules, weights loading, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models as tvm

from lt_transfer.backbones import Backbone, build_backbone
from lt_transfer.resources import MOBILENET_V2_IMAGENET, resolve_package_uri

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


def assert_groups_partition(backbone: Backbone) -> None:
    grouped = [id(p) for group in backbone.layer_groups() for p in group.parameters()]
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups"
    assert set(grouped) == {id(p) for p in backbone.parameters()}, "a parameter is in no group"


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


@pytest.mark.parametrize("spec", ["resnet18", "pytorch/resnet18", "torchvision/"])
def test_bad_spec_string(spec: str) -> None:
    with pytest.raises(ValueError, match="build_backbone\\(name="):
        build_backbone(spec)


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


def test_plain_module_with_head() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3))
    backbone = build_backbone(net, head="4")
    assert backbone.num_features == 8
    assert backbone(torch.randn(5, 1, 4, 4)).shape == (5, 8)
    assert [g.name for g in backbone.layer_groups()] == ["1"]
    assert not any(isinstance(m, nn.Dropout) for m in backbone.modules()), "dropout before head removed"
    assert_groups_partition(backbone)


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


def test_explicit_groups_must_partition() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with pytest.raises(ValueError, match="parameter '1.weight' is in no layer group"):
        Backbone(net, 4, groups=[("first", ["0"])])
    with pytest.raises(ValueError, match="in several layer groups"):
        Backbone(net, 4, groups=[("a", ["0", "1"]), ("b", ["1"])])
    with pytest.raises(ValueError, match="num_features"):
        Backbone(net, 0)
