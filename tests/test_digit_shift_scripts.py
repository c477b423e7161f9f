"""The digit-shift benchmarks' own pieces (scripts/_digit_shifts.py): self-training's strong target view."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer.batches import split_batch


def _digit_shifts() -> ModuleType:
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    if str(scripts) not in sys.path:  # as when a script runs: its folder first on the path (for _common)
        sys.path.insert(0, str(scripts))
    path = scripts / "_digit_shifts.py"
    spec = importlib.util.spec_from_file_location("_digit_shifts", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_digit_shifts", module)
    spec.loader.exec_module(module)
    return module


def test_strong_digit_augmentation_changes_the_image_and_keeps_its_shape() -> None:
    shifts = _digit_shifts()
    x = torch.randn(3, 28, 28)
    torch.manual_seed(0)
    strong = shifts.strong_digit_augmentation(x)
    assert strong.shape == x.shape and strong.dtype == x.dtype
    assert not torch.allclose(strong, x)
    assert (strong == 0).sum() >= 3 * 14 * 14  # the Cutout square
    torch.manual_seed(0)
    assert torch.equal(shifts.strong_digit_augmentation(x), strong)  # seeded: reproducible


def test_strong_view_batches_carry_the_plain_image_and_a_strong_view() -> None:
    shifts = _digit_shifts()
    images = torch.randn(6, 3, 28, 28)
    batch = next(iter(DataLoader(shifts.StrongView(TensorDataset(images)), batch_size=4)))
    target = split_batch(batch)
    assert torch.equal(target.x, images[:4])  # the weak view is the image itself
    assert target.strong is not None and target.strong.shape == (4, 3, 28, 28)
    assert target.y is None  # no labels: the target stays unlabelled
