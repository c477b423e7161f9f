"""Tests for lt_transfer/backbones/preprocessing.py and the builders that set ``backbone.preprocessing``."""

from __future__ import annotations

import pytest

from lt_transfer.backbones import Preprocessing, build_backbone, resolve_preprocessing
from lt_transfer.backbones.preprocessing import with_weights_normalization
from lt_transfer.resources import EFFICIENTNET_LITE2_IMAGENET, MOBILENET_V2_IMAGENET, resolve_package_uri


def test_torchvision_weights_names_use_their_own_transforms() -> None:
    # no download: the transform is data of the weights enum
    resnet = resolve_preprocessing("torchvision/resnet50", "IMAGENET1K_V2")
    assert (resnet.image_size, resnet.resize_size, resnet.interpolation) == (224, 232, "bilinear")
    vit = resolve_preprocessing("torchvision/vit_b_16", "IMAGENET1K_SWAG_E2E_V1")
    assert (vit.image_size, vit.resize_size, vit.interpolation) == (384, 384, "bicubic")


def test_torchvision_without_weights_name_uses_imagenet_defaults() -> None:
    assert resolve_preprocessing("torchvision/resnet18") == Preprocessing.imagenet()
    built = build_backbone("torchvision/mobilenet_v2", weights=MOBILENET_V2_IMAGENET)
    assert built.preprocessing == Preprocessing.imagenet()
    assert build_backbone("torchvision/vit_b_16", image_size=32).preprocessing.image_size == 32


def test_text_backbones_have_none_and_bad_specs_raise() -> None:
    assert resolve_preprocessing("hf/some-model") is None
    with pytest.raises(ValueError, match="resolve_preprocessing\\(name='resnet18'\\): expected"):
        resolve_preprocessing("resnet18")
    with pytest.raises(ValueError, match="unknown source 'keras'"):
        resolve_preprocessing("keras/resnet18")


def test_validation_and_helpers() -> None:
    with pytest.raises(ValueError, match="resize_size >= image_size"):
        Preprocessing(image_size=224, resize_size=200)
    with pytest.raises(ValueError, match="one value per channel"):
        Preprocessing(mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="interpolation='lanczos'"):
        Preprocessing(interpolation="lanczos")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="std=\\(0.0, 1.0, 1.0\\)\\) must be positive"):
        Preprocessing(std=(0.0, 1.0, 1.0))
    grey = Preprocessing.imagenet().with_channels(1)
    assert grey.channels == 1 and grey.with_channels(3).mean == (0.449,) * 3
    assert Preprocessing(mean=[0.5, 0.5, 0.5], std=[1, 1, 1]).mean == (0.5, 0.5, 0.5)  # lists from YAML
    lite2 = with_weights_normalization(
        Preprocessing.imagenet(), resolve_package_uri(EFFICIENTNET_LITE2_IMAGENET)
    )
    assert lite2.mean == (0.5, 0.5, 0.5)
