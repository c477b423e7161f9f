"""Tests for lt_transfer/backbones/weights.py: one resolver, the same rules for backbones and teachers."""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models as tvm

import lt_transfer.backbones.torchvision as torchvision_source
import lt_transfer.backbones.weights as weights_source
from lt_transfer import DistillationModule
from lt_transfer.backbones import (
    build_backbone,
    check_state_dict,
    load_teacher,
    read_state_dict,
    resolve_weights,
)
from lt_transfer.resources import MOBILENET_V2_IMAGENET, resolve_package_uri

MODEL = "mobilenet_v3_small"  # the smallest supported family: keeps the tests fast


@pytest.fixture(scope="module")
def saved_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return tvm.get_model(MODEL).state_dict()


def assert_backbone_and_teacher_hold(path: Path, state: dict[str, torch.Tensor]) -> None:
    """The file loads into a backbone (head removed) and a teacher (head kept) with the same tensors."""
    backbone = build_backbone(f"torchvision/{MODEL}", weights=str(path))
    teacher = load_teacher(f"torchvision/{MODEL}", weights=str(path))
    assert backbone.pretrained
    backbone_state = backbone.model.state_dict()
    teacher_state = teacher.state_dict()
    assert set(teacher_state) == set(state)
    assert set(backbone_state) == {k for k in state if not k.startswith("classifier.3.")}
    for key, value in state.items():
        assert torch.equal(teacher_state[key], value), key
        if key in backbone_state:
            assert torch.equal(backbone_state[key], value), key


def test_a_saved_state_dict_loads_into_backbone_and_teacher_the_same_way(
    saved_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = tmp_path / "weights.pth"
    torch.save(saved_state, path)
    assert_backbone_and_teacher_hold(path, saved_state)


def test_a_state_dict_wrapper_is_unwrapped(saved_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = tmp_path / "wrapped.ckpt"
    torch.save({"state_dict": saved_state, "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    assert set(read_state_dict(path)) == set(saved_state)
    assert_backbone_and_teacher_hold(path, saved_state)


def test_a_safetensors_file_loads(saved_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "weights.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in saved_state.items()}, str(path))
    assert_backbone_and_teacher_hold(path, saved_state)


def test_safetensors_without_the_package_names_the_fix(
    saved_state: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install safetensors"):
        read_state_dict(path, "build_backbone(weights=...)")


def test_a_mismatched_file_names_the_file_and_the_architecture(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(tvm.resnet18().state_dict(), path)
    file = re.escape(repr(str(path)))
    architecture = f"does not match the architecture 'torchvision/{MODEL}"
    with pytest.raises(ValueError, match=f"build_backbone\\(weights={file}\\) {architecture}'"):
        build_backbone(f"torchvision/{MODEL}", weights=str(path))
    with pytest.raises(ValueError, match=f"Module\\(teacher_weights={file}\\) {architecture} with its"):
        load_teacher(f"torchvision/{MODEL}", weights=str(path))


def test_head_may_be_left_out_for_a_backbone_but_not_for_a_teacher(
    saved_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = tmp_path / "headless.pth"
    torch.save({k: v for k, v in saved_state.items() if not k.startswith("classifier.3.")}, path)
    build_backbone(f"torchvision/{MODEL}", weights=str(path))
    with pytest.raises(ValueError, match="2 missing keys \\(e.g. \\['classifier.3.weight', 'classifier.3.b"):
        load_teacher(f"torchvision/{MODEL}", weights=str(path))


def test_shape_mismatch_and_files_that_are_no_state_dict(
    saved_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    wrong = dict(saved_state)
    wrong["features.0.0.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    for load in (build_backbone, load_teacher):
        with pytest.raises(ValueError, match="shape mismatch in 1 tensors.*features.0.0.weight"):
            load(f"torchvision/{MODEL}", weights=str(tmp_path / "wrong.pth"))
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth holds a list, not a state dict"):
        build_backbone(f"torchvision/{MODEL}", weights=str(tmp_path / "list.pth"))
    (tmp_path / "garbage.pt").write_bytes(b"\x00 not a torch file")
    with pytest.raises(ValueError, match="could not read a state dict from .*garbage.pt"):
        load_teacher(f"torchvision/{MODEL}", weights=str(tmp_path / "garbage.pt"))


def test_pickled_objects_are_not_loaded(tmp_path: Path) -> None:
    """``weights_only=True``: a file holding arbitrary objects is refused, not unpickled."""
    torch.save({"state_dict": {}, "model": nn.Linear(2, 2)}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="torch.load\\(weights_only=True\\)\\) refuses .*GLOBAL") as error:
        read_state_dict(tmp_path / "pickled.pth")
    assert "weights_only=False" not in str(error.value) and "\x1b" not in str(error.value)


def test_corrupt_weight_files_say_corrupt_without_torchs_advice(tmp_path: Path) -> None:
    """A zip whose pickle is damaged, and a file that is no torch file: no 're-run with
    weights_only=False' advice (wrong for a corrupt file), no terminal codes, one line."""
    torch.save({"weight": torch.ones(2)}, tmp_path / "good.pth")
    with zipfile.ZipFile(tmp_path / "good.pth") as source, zipfile.ZipFile(tmp_path / "bad.pth", "w") as out:
        for item in source.infolist():
            data = source.read(item.filename)
            damaged = data[:10] + b"\x7f" * 40 + data[50:]
            out.writestr(item, damaged if item.filename.endswith("data.pkl") else data)
    (tmp_path / "junk.pth").write_bytes(b"hello world" * 10)
    cases = (("bad.pth", "corrupt or not a torch file .Unsupported operand 127"), ("junk.pth", "corrupt"))
    for name, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            read_state_dict(tmp_path / name)
        text = str(error.value)
        assert "weights_only=False" not in text and "\x1b" not in text and "\n" not in text


def test_the_teacher_and_the_backbone_use_the_same_resolver(
    saved_state: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert torchvision_source.resolve_weights is weights_source.resolve_weights
    path = tmp_path / "weights.pth"
    torch.save(saved_state, path)
    calls: list[tuple[str | None, str, str]] = []
    real = weights_source.resolve_weights

    def spy(weights: str | None, **kwargs: str) -> weights_source.ResolvedWeights:
        calls.append((weights, kwargs["caller"], kwargs["argument"]))
        return real(weights, **kwargs)

    monkeypatch.setattr(torchvision_source, "resolve_weights", spy)
    build_backbone(f"torchvision/{MODEL}", weights=str(path))
    load_teacher(f"torchvision/{MODEL}", weights=str(path))
    DistillationModule(nn.Linear(4, 1000), f"torchvision/{MODEL}", str(path))
    assert calls == [
        (str(path), "build_backbone", "weights"),
        (str(path), "DistillationModule", "teacher_weights"),
        (str(path), "DistillationModule", "teacher_weights"),
    ]


def test_resolve_weights_rules(tmp_path: Path) -> None:
    assert resolve_weights(None).pretrained is False
    v1 = tvm.ResNet18_Weights.IMAGENET1K_V1
    assert resolve_weights("IMAGENET1K_V1", torchvision_model="resnet18").enum == v1
    assert resolve_weights("ResNet18_Weights.IMAGENET1K_V1", torchvision_model="resnet18").enum == v1
    shipped = resolve_weights(MOBILENET_V2_IMAGENET, torchvision_model="mobilenet_v2")
    assert shipped.file == resolve_package_uri(MOBILENET_V2_IMAGENET) and shipped.enum is None
    assert str(shipped.file) in shipped.describe() and MOBILENET_V2_IMAGENET in shipped.describe()
    local = tmp_path / "DEFAULT"  # an existing file wins over the weights name
    torch.save({}, local)
    assert resolve_weights(str(local), torchvision_model="resnet18").file == local
    assert resolve_weights(local).file == local  # path objects too
    # a value that looks like a file is a file: a typo is "no such file", not "no such weights"
    for value in ("missing.pth", "folder/weights", "missing.safetensors"):
        with pytest.raises(FileNotFoundError, match=f"build_backbone\\(weights='{value}'\\): no such file"):
            resolve_weights(value, torchvision_model="resnet18")
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_weights("DEFAULT")  # without a torchvision model every value is a file
    with pytest.raises(FileNotFoundError, match="f\\(w='pkg://no_such_package_xyz/w.pt'\\): .*not installed"):
        resolve_weights("pkg://no_such_package_xyz/w.pt", caller="f", argument="w")
    with pytest.raises(ValueError, match="no such weights. Choose one of \\['IMAGENET1K_V1', 'DEFAULT'\\]"):
        resolve_weights("IMAGENET22K", torchvision_model="resnet18")
    with pytest.raises(TypeError, match="got int"):
        resolve_weights(3)  # type: ignore[arg-type]


def test_check_state_dict_reports_unexpected_keys() -> None:
    net = nn.Linear(2, 2)
    state = {**net.state_dict(), "extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="1 unexpected keys \\(e.g. \\['extra.weight'\\]\\)"):
        check_state_dict(net, state, source="w='x.pt'", architecture="linear")
    assert check_state_dict(net, net.state_dict(), source="w", architecture="linear") == []
