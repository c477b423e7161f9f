"""Candidates: parsing, which ones give source logits, and that their features/logits are the model's."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer import DomainAdaptationModule
from lt_transfer.backbones import Backbone, load_torchvision_classifier
from lt_transfer.checkpoints import CheckpointError
from lt_transfer.ranking import Candidate, as_candidate, load_candidate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("torchvision/resnet18", ("torchvision/resnet18", "torchvision/resnet18", None)),
        ("rn=torchvision/resnet18@DEFAULT", ("rn", "torchvision/resnet18", "DEFAULT")),
        (
            "mnv2=torchvision/mobilenet_v2@pkg://fdet/weights/m.pth",
            ("mnv2", "torchvision/mobilenet_v2", "pkg://fdet/weights/m.pth"),
        ),
        ("runs/lr=0.1/last.ckpt", ("runs/lr=0.1/last.ckpt", "runs/lr=0.1/last.ckpt", None)),
        ("a=runs/x.ckpt", ("a", "runs/x.ckpt", None)),
    ],
)
def test_parse(text, expected):
    candidate = Candidate.parse(text)
    assert (candidate.name, candidate.model, candidate.weights) == expected


def test_parse_and_as_candidate_errors():
    with pytest.raises(ValueError, match=r"expected '\[name=\]model\[@weights\]'"):
        Candidate.parse("name=@DEFAULT")
    with pytest.raises(TypeError, match="must be a Candidate"):
        as_candidate(3)


def test_spec_without_weights_has_no_source_head():
    loaded = load_candidate(Candidate("r", "torchvision/resnet18"))
    assert not loaded.has_source_logits and isinstance(loaded.feature_module, Backbone)


def test_spec_with_weights_gives_the_classifier_logits(tmp_path: Path):
    torch.manual_seed(0)
    full = load_torchvision_classifier("resnet18")
    weights = tmp_path / "resnet18.pth"
    torch.save(full.state_dict(), weights)
    loaded = load_candidate(Candidate("r", "torchvision/resnet18", str(weights)))
    assert loaded.has_source_logits
    loaded.net.eval(), full.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        features, logits = loaded.features_and_logits(x)
        expected = full(x)
        full.fc = nn.Identity()
        expected_features = full(x)
    assert features.shape == (3, 512) and logits.shape == (3, 1000)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(features, expected_features)


def _lenet_checkpoint(tmp_path: Path, record_class: bool = False) -> tuple[Path, DomainAdaptationModule]:
    torch.manual_seed(0)
    model = DomainAdaptationModule("lenet", num_classes=4, method="source_only")
    x, y = torch.randn(8, 3, 28, 28), torch.arange(8) % 4
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    trainer = pl.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(model, {"source": loader, "target": loader})
    if record_class:  # what LightningCLI records
        model.hparams["_class_path"] = "lt_transfer.DomainAdaptationModule"
    path = tmp_path / "lenet.ckpt"
    trainer.save_checkpoint(path)
    return path, model.eval()


def test_checkpoint_of_our_module_gives_backbone_features_and_source_logits(tmp_path: Path):
    path, model = _lenet_checkpoint(tmp_path)
    loaded = load_candidate(Candidate.parse(f"lenet={path}"))  # class found from the hyper-parameters
    assert type(loaded.net) is DomainAdaptationModule and loaded.has_source_logits
    loaded.net.eval()
    x = torch.randn(5, 3, 28, 28)
    with torch.no_grad():
        features, logits = loaded.features_and_logits(x)
        torch.testing.assert_close(logits, model(x))
        torch.testing.assert_close(features, model.backbone(x))


def test_checkpoint_class_from_cli_record_or_argument(tmp_path: Path):
    path, _ = _lenet_checkpoint(tmp_path, record_class=True)
    assert type(load_candidate(Candidate("a", str(path))).net) is DomainAdaptationModule
    explicit = Candidate("b", str(path), module_class="lt_transfer.DomainAdaptationModule")
    assert type(load_candidate(explicit).net) is DomainAdaptationModule
    with pytest.raises(ValueError, match="is not a LightningModule class"):
        load_candidate(Candidate("c", str(path), module_class="torch.nn.Linear"))
    with pytest.raises(ValueError, match=r"no sub-module 'encoder'"):
        load_candidate(Candidate("d", str(path), backbone="encoder"))


def test_checkpoint_errors(tmp_path: Path):
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_candidate(Candidate("a", str(tmp_path / "missing.ckpt")))
    bare = tmp_path / "bare.ckpt"
    torch.save({"weight": torch.zeros(2)}, bare)
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        load_candidate(Candidate("b", str(bare)))
    unknown = tmp_path / "unknown.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"hidden": 3}}, unknown)
    with pytest.raises(ValueError, match="pass module_class="):
        load_candidate(Candidate("c", str(unknown)))
    with pytest.raises(ValueError, match="module_class only applies to a checkpoint"):
        load_candidate(Candidate("d", "torchvision/resnet18", module_class="x.Y"))


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(6, 3))

    def forward(self, x):
        return self.head(self.backbone(x) - 1.0)


def test_modules_backbone_classifier_or_plain():
    torch.manual_seed(0)
    x = torch.randn(7, 4)
    classifier = Classifier()
    loaded = load_candidate(as_candidate(classifier))
    features, logits = loaded.features_and_logits(x)
    assert loaded.has_source_logits
    torch.testing.assert_close(features, classifier.backbone(x))  # captured before the head's in-place ops
    torch.testing.assert_close(logits, classifier(x))
    backbone = Backbone(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4)
    assert not load_candidate(as_candidate(backbone)).has_source_logits
    plain = nn.Conv2d(3, 5, 3)  # (N, 5, H, W) output: average-pooled to features
    features, logits = load_candidate(as_candidate(plain)).features_and_logits(torch.randn(2, 3, 8, 8))
    assert features.shape == (2, 5) and logits is None
    with pytest.raises(ValueError, match="weights and module_class only apply"):
        load_candidate(Candidate("m", plain, weights="DEFAULT"))
