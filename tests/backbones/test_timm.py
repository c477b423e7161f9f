"""Tests for lt_transfer/backbones/timm.py: timm backbones, their groups, weights, preprocessing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer.backbones import (
    build_backbone,
    load_teacher,
    load_timm_classifier,
    map_efficientnet_pytorch_keys,
    read_state_dict,
    resolve_preprocessing,
)
from lt_transfer.resources import (
    EFFICIENTNET_LITE0_IMAGENET,
    EFFICIENTNET_LITE1_IMAGENET,
    resolve_package_uri,
)
from tests.backbones.partition import assert_groups_partition

# The four models at sizes that run in seconds (ViT at 32 px: 4 patches).
TIMM_MODELS = {
    "timm/resnet18": {},
    "timm/efficientnet_b0": {},
    "timm/vit_tiny_patch16_224": {"img_size": 32},
    "timm/convnext_atto": {},
}


@pytest.mark.parametrize("spec", list(TIMM_MODELS))
def test_groups_cover_every_parameter_once_and_progressive_unfreezing_runs(spec: str, tmp_path: Path) -> None:
    from lt_transfer import ProgressiveUnfreezing, TransferClassifier

    torch.manual_seed(0)
    backbone = build_backbone(spec, **TIMM_MODELS[spec])
    assert_groups_partition(backbone)
    groups = backbone.layer_groups()
    assert groups[0].name == "stem" and len(groups) >= 5
    assert all(group.modules for group in groups[1:]), "frozen groups need modules to put in eval mode"
    assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, backbone.num_features)
    assert not backbone.pretrained

    model = TransferClassifier(backbone, num_classes=2, optimizer=lambda p: torch.optim.SGD(p, lr=0.01))
    callback = ProgressiveUnfreezing(unfreeze_at_epoch=[1, 2])
    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 2, (8,)))
    trainer = pl.Trainer(
        max_epochs=3,
        callbacks=[callback],
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=4))
    assert all(p.requires_grad for p in backbone.parameters())
    in_optimizer = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in model.parameters()}


def test_group_names_and_fine_grouping() -> None:
    assert [g.name for g in build_backbone("timm/resnet18").layer_groups()] == [
        "stem",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]
    convnext = build_backbone("timm/convnext_atto")
    assert [g.name for g in convnext.layer_groups()][-2:] == ["stages.3", "head"]  # head.norm: its own group
    fine = build_backbone("timm/resnet18", fine_groups=True)
    assert len(fine.layer_groups()) == 9
    assert_groups_partition(fine)


def test_efficientnet_lite0_with_shipped_weights_classifies_photos() -> None:
    """The real check that the EfficientNet-PyTorch key mapping is right: ImageNet classes of photos."""
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from torchvision.models import MobileNet_V2_Weights

    from lt_transfer.data import eval_transform

    categories = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    backbone = build_backbone("timm/efficientnet_lite0", weights=EFFICIENTNET_LITE0_IMAGENET).eval()
    assert backbone.pretrained and backbone.preprocessing.mean == (0.5, 0.5, 0.5)
    state = read_state_dict(resolve_package_uri(EFFICIENTNET_LITE0_IMAGENET))
    head = torch.nn.Linear(1280, 1000)
    head.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    transform = eval_transform(backbone.preprocessing)
    china, flower = (transform(Image.fromarray(np.asarray(image))) for image in load_sample_images().images)
    with torch.no_grad():
        probabilities = head(backbone(torch.stack([china, flower]))).softmax(-1)
    top5 = [[categories[i] for i in row] for row in probabilities.topk(5).indices.tolist()]
    assert top5[0][0] in {"palace", "church", "bell cote", "monastery", "pagoda", "castle"}, top5[0]
    assert "daisy" in top5[1], top5[1]

    classifier = load_teacher("timm/efficientnet_lite0", weights=EFFICIENTNET_LITE0_IMAGENET).eval()
    with torch.no_grad():
        assert torch.allclose(classifier(china[None]).softmax(-1), probabilities[:1], atol=1e-5)


def test_efficientnet_pytorch_mapping_is_checked_strictly() -> None:
    lite0 = timm.create_model("efficientnet_lite0")
    state = read_state_dict(resolve_package_uri(EFFICIENTNET_LITE0_IMAGENET))
    reordered = dict(state)
    first, second = "_blocks.0._bn1.weight", "_blocks.0._bn1.bias"  # same shape: only the names tell
    reordered[first], reordered[second] = state[second], state[first]
    reordered = {k: reordered[k] for k in [second, first] + [k for k in state if k not in (first, second)]}
    with pytest.raises(ValueError, match="does not map onto 'lite0': entry 0 '_blocks.0._bn1.bias'"):
        map_efficientnet_pytorch_keys(reordered, lite0.state_dict(), source="f", architecture="lite0")
    with pytest.raises(
        ValueError, match="does not map onto 'timm/efficientnet_lite0'.*shape|EfficientNet-PyTorch"
    ):
        build_backbone("timm/efficientnet_lite0", weights=EFFICIENTNET_LITE1_IMAGENET)
    with pytest.raises(ValueError, match="entries but 'timm/efficientnet_b0' has"):
        build_backbone("timm/efficientnet_b0", weights=EFFICIENTNET_LITE0_IMAGENET)


def test_own_timm_file_loads_with_any_classifier_width(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = timm.create_model("resnet18", num_classes=7)
    path = tmp_path / "resnet18_7.pth"
    torch.save(source.state_dict(), path)
    backbone = build_backbone("timm/resnet18", weights=str(path)).eval()
    source.reset_classifier(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(backbone(x), source.eval()(x))
    assert backbone.pretrained
    full = load_timm_classifier("resnet18", str(path), num_classes=7)
    assert full.fc.out_features == 7

    torch.save(timm.create_model("resnet34").state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(ValueError, match="does not match the architecture 'timm/resnet18'"):
        build_backbone("timm/resnet18", weights=str(tmp_path / "resnet34.pth"))


def test_bad_names_and_weights_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="timm has no model 'resnet181'. Similar names: \\['resnet18"):
        build_backbone("timm/resnet181")
    with pytest.raises(ValueError, match="weights come from a file here.*pass the file's path"):
        build_backbone("timm/resnet18", weights="DEFAULT")
    with pytest.raises(FileNotFoundError, match="no such file"):
        build_backbone("timm/resnet18", weights="missing/resnet18.pth")
    with pytest.raises(ValueError, match="pretrained only apply to nn.Module inputs"):
        build_backbone("timm/resnet18", pretrained=True)
    with pytest.raises(ValueError, match="pretrained= does not apply; pass weights="):
        load_timm_classifier("resnet18", pretrained=True)


def test_missing_timm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'lt_transfer\[timm\]'"):
        build_backbone("timm/resnet18")


def test_import_lt_transfer_does_not_import_timm() -> None:
    code = (
        "import sys, lt_transfer, lt_transfer.data, lt_transfer.backbones\nassert 'timm' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_preprocessing_from_timm_data_config() -> None:
    vit = resolve_preprocessing("timm/vit_tiny_patch16_224")
    assert (vit.image_size, vit.resize_size, vit.mean, vit.interpolation) == (
        224,
        248,
        (0.5, 0.5, 0.5),
        "bicubic",
    )
    assert resolve_preprocessing("timm/resnet18").resize_size == 235  # crop_pct 0.95
    small = build_backbone("timm/vit_tiny_patch16_224", img_size=32).preprocessing
    assert small.image_size == 32
    lite = resolve_preprocessing("timm/efficientnet_lite0", EFFICIENTNET_LITE0_IMAGENET)
    assert (
        lite == build_backbone("timm/efficientnet_lite0", weights=EFFICIENTNET_LITE0_IMAGENET).preprocessing
    )
    assert lite.mean == lite.std == (0.5, 0.5, 0.5)
    assert resolve_preprocessing("timm/resnet18", in_chans=1).channels == 1
