"""Checkpoints of every module load safely and on their own: no pretrained file, no network."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v3_small

from lt_transfer import DistillationModule, DomainAdaptationModule, TextClassifier, TransferClassifier
from lt_transfer.backbones import Backbone, architecture_only
from lt_transfer.checkpoints import CheckpointError, UnsafeCheckpointError
from tests.conftest import make_loader, make_tiny_backbone
from tests.hf_tiny import save_tiny_bert


def save(module: pl.LightningModule, path: Path) -> Path:
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted in a test that must work offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def assert_same_outputs(a: nn.Module, b: nn.Module, x: object) -> None:
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def torchvision_weights(tmp_path: Path) -> Path:
    path = tmp_path / "mnv3.pth"
    torch.manual_seed(1)
    torch.save(mobilenet_v3_small().state_dict(), path)
    return path


def test_checkpoints_of_every_module_are_plain_data(tmp_path: Path) -> None:
    text_folder = save_tiny_bert(tmp_path / "bert")
    modules = {
        "classifier": TransferClassifier(make_tiny_backbone(), num_classes=3),
        "domain": DomainAdaptationModule("lenet", num_classes=10, method="dann"),
        "text": TextClassifier(f"hf/{text_folder}", num_classes=2),
        "distillation": DistillationModule(nn.Linear(4, 3), nn.Linear(4, 3), alpha=0.3),
    }
    for name, module in modules.items():
        checkpoint = torch.load(save(module, tmp_path / f"{name}.ckpt"), weights_only=True)
        assert checkpoint["state_dict"], name


def test_transfer_classifier_loads_after_its_weight_file_is_deleted(
    tmp_path: Path, no_network: None
) -> None:
    weights = torchvision_weights(tmp_path)
    model = TransferClassifier("torchvision/mobilenet_v3_small", num_classes=4, weights=str(weights))
    path = save(model, tmp_path / "model.ckpt")
    weights.unlink()
    loaded = TransferClassifier.load_from_checkpoint(path)
    assert loaded.backbone.pretrained and loaded.backbone_lr_scale == model.backbone_lr_scale
    assert_same_outputs(model, loaded, torch.randn(2, 3, 32, 32))


def test_default_weights_are_never_downloaded_on_load(tmp_path: Path, no_network: None) -> None:
    with architecture_only():  # stands for a model trained with weights="DEFAULT" elsewhere
        model = TransferClassifier("torchvision/mobilenet_v3_small", num_classes=4, weights="DEFAULT")
    loaded = TransferClassifier.load_from_checkpoint(save(model, tmp_path / "model.ckpt"))
    assert loaded.hparams.weights == "DEFAULT"
    assert_same_outputs(model, loaded, torch.randn(2, 3, 32, 32))


def test_domain_adaptation_module_loads_without_its_weight_file(
    tmp_path: Path, no_network: None
) -> None:
    weights = torchvision_weights(tmp_path)
    model = DomainAdaptationModule(
        "torchvision/mobilenet_v3_small", num_classes=4, weights=str(weights), method="coral"
    )
    path = save(model, tmp_path / "model.ckpt")
    weights.unlink()
    assert_same_outputs(model, DomainAdaptationModule.load_from_checkpoint(path), torch.randn(2, 3, 32, 32))


def test_text_classifier_loads_after_its_model_folder_is_deleted(
    tmp_path: Path, no_network: None
) -> None:
    folder = save_tiny_bert(tmp_path / "bert")
    model = TextClassifier(f"hf/{folder}", num_classes=2)
    batch = model.backbone.tokenizer()(["great flight", "lost bag"], padding=True, return_tensors="pt")
    path = save(model, tmp_path / "text.ckpt")
    shutil.rmtree(folder)
    loaded = TextClassifier.load_from_checkpoint(path)
    assert_same_outputs(model, loaded, dict(batch))


def test_custom_backbone_round_trips_or_names_the_argument(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TransferClassifier(make_tiny_backbone(), num_classes=3)
    path = save(model, tmp_path / "custom.ckpt")
    with pytest.raises(CheckpointError, match=r"\['backbone'\].*pass backbone=\.\.\."):
        TransferClassifier.load_from_checkpoint(path)
    loaded = TransferClassifier.load_from_checkpoint(path, backbone=make_tiny_backbone())
    assert_same_outputs(model, loaded, torch.randn(2, 3, 8, 8))


def test_distillation_student_needs_its_modules_back(tmp_path: Path) -> None:
    student, teacher = nn.Linear(4, 3), nn.Linear(4, 3)
    path = save(DistillationModule(student, teacher, alpha=0.3), tmp_path / "kd.ckpt")
    with pytest.raises(CheckpointError, match=r"\['student', 'teacher'\]"):
        DistillationModule.load_from_checkpoint(path)
    loaded = DistillationModule.load_from_checkpoint(
        path, student=nn.Linear(4, 3), teacher=nn.Linear(4, 3)
    )
    assert torch.equal(loaded.student.weight, student.weight)


def test_class_names_of_the_training_data_come_back(tmp_path: Path) -> None:
    class Data(pl.LightningDataModule):
        class_names = ["cat", "dog", "eel"]

        def train_dataloader(self) -> torch.utils.data.DataLoader:
            return make_loader(n=8, num_classes=3, batch_size=4)

    model = TransferClassifier(make_tiny_backbone(), num_classes=3)
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, Data())
    [path] = tmp_path.rglob("*.ckpt")
    loaded = TransferClassifier.load_from_checkpoint(path, backbone=make_tiny_backbone())
    assert loaded.class_names == ["cat", "dog", "eel"]


def test_unsafe_pickles_are_refused_by_modules_and_teachers(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"num_classes": 3, "evil": Payload()}}, path)
    with pytest.raises(UnsafeCheckpointError, match="trust_checkpoint=True"):
        TransferClassifier.load_from_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError, match="trust_checkpoint=True"):
        DistillationModule(nn.Linear(4, 3), str(path), teacher_class="lt_transfer.TransferClassifier")
    assert not marker.exists()


def test_corrupt_checkpoint_is_named_by_load_from_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "cut.ckpt"
    good = save(TransferClassifier(make_tiny_backbone(), num_classes=3), tmp_path / "a.ckpt")
    path.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="cut.ckpt"):
        TransferClassifier.load_from_checkpoint(path)


def test_hugging_face_remote_code_is_never_run(tmp_path: Path) -> None:
    from lt_transfer.backbones import build_backbone, load_tokenizer

    folder = save_tiny_bert(tmp_path / "bert")
    with pytest.raises(ValueError, match="never runs code"):
        build_backbone(f"hf/{folder}", trust_remote_code=True)
    with pytest.raises(ValueError, match="never runs code"):
        load_tokenizer(str(folder), trust_remote_code=True)


def test_from_pretrained_is_called_without_remote_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    seen: list[object] = []
    original = transformers.AutoModel.from_pretrained.__func__

    def spy(cls: type, *args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("trust_remote_code"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", classmethod(spy))
    from lt_transfer.backbones import build_backbone

    build_backbone(f"hf/{save_tiny_bert(tmp_path / 'bert')}")
    assert seen == [False]


def test_custom_backbone_objects_are_named_for_domain_adaptation(tmp_path: Path) -> None:
    backbone = Backbone(nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), 4)
    model = DomainAdaptationModule(backbone, num_classes=2)
    path = save(model, tmp_path / "da.ckpt")
    with pytest.raises(CheckpointError, match="backbone="):
        DomainAdaptationModule.load_from_checkpoint(path)
