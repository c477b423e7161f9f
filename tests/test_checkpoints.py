"""Checkpoint files: safe reading, clear errors for broken files, atomic writes."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lt_transfer.checkpoints import CheckpointError, UnsafeCheckpointError, read_checkpoint


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 2)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def save(path: Path, module: pl.LightningModule | None = None) -> Path:
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module or Tiny())
    trainer.save_checkpoint(path)
    return path


class Payload:
    """Unpickling this object would run code (creates a marker file)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A Lightning-shaped checkpoint whose pickle would run code when loaded unsafely."""
    torch.save({"state_dict": {}, "hyper_parameters": {"evil": Payload(str(marker))}}, path)
    return path


def test_good_checkpoint_reads_weights_only(tmp_path: Path) -> None:
    checkpoint = read_checkpoint(save(tmp_path / "good.ckpt"), where="test")
    assert set(checkpoint["state_dict"]) == {"net.weight", "net.bias"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (os.urandom(3000), "not a readable checkpoint"),
        (b"hello world\n" * 20, "not a readable checkpoint"),
    ],
    ids=["empty", "random-bytes", "text"],
)
def test_broken_files_name_the_file_and_the_problem(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as error:
        read_checkpoint(path, where="test")
    assert str(path) in str(error.value) and "weights_only=False" not in str(error.value)


def test_truncated_checkpoint_says_corrupt_or_truncated(tmp_path: Path) -> None:
    good = save(tmp_path / "good.ckpt").read_bytes()
    for cut in (len(good) // 2, len(good) - 30):
        path = tmp_path / f"cut{cut}.ckpt"
        path.write_bytes(good[:cut])
        with pytest.raises(CheckpointError, match="corrupt or truncated|not a readable checkpoint"):
            read_checkpoint(path, where="test")


def corrupt_pickle(good: Path, path: Path, start: int = 10) -> Path:
    """A copy of ``good`` that is still a valid zip archive with 40 bytes of its pickle overwritten."""
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as out:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = data[:start] + b"\x7f" * 40 + data[start + 40 :]
            out.writestr(item, data)
    return path


def test_a_corrupt_pickle_inside_a_valid_zip_says_corrupt_not_unsafe(tmp_path: Path) -> None:
    """Torch reports a bad opcode as a failed weights-only load; trusting the file would not help."""
    good = save(tmp_path / "good.ckpt")
    for start in (2, 10, 100, 200):  # a bad opcode, a broken string, ...: each says corrupt
        path = corrupt_pickle(good, tmp_path / f"corrupt{start}.ckpt", start)
        assert zipfile.is_zipfile(path)
        with pytest.raises(CheckpointError, match="not a readable checkpoint: it is corrupt") as error:
            read_checkpoint(path, where="test")
        assert not isinstance(error.value, UnsafeCheckpointError)
        assert "weights_only=False" not in str(error.value) and "\x1b" not in str(error.value)


def test_a_state_dict_is_the_wrong_kind_of_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save(Tiny().state_dict(), path)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint.*weights="):
        read_checkpoint(path, where="test")
    assert read_checkpoint(path, where="test", lightning=False)["net.weight"].shape == (2, 4)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        read_checkpoint(tmp_path / "nope.ckpt", where="test")


def test_code_in_a_pickle_is_refused_by_default_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(UnsafeCheckpointError, match="trust_checkpoint=True"):
        read_checkpoint(path, where="test")
    assert not marker.exists()
    with pytest.warns(UserWarning, match="trust_checkpoint=True.*arbitrary code"):
        read_checkpoint(path, where="test", trust_checkpoint=True)
    assert marker.exists()  # the opt-in really unpickles (that is what it is for)


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning writes checkpoints inside an fsspec transaction (temporary file + move)."""
    from fsspec.implementations.local import LocalFileOpener

    path = save(tmp_path / "last.ckpt")
    before = path.read_bytes()
    module = Tiny()
    with torch.no_grad():
        module.net.weight.add_(1.0)

    def crash(self: LocalFileOpener, data: bytes) -> int:
        self.f.write(data[: len(data) // 2])  # half of the new file is on disk when the save dies
        raise OSError("disk full")

    monkeypatch.setattr(LocalFileOpener, "write", crash)
    with pytest.raises(OSError, match="disk full"):
        save(path, module)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert set(read_checkpoint(path, where="test")["state_dict"]) == {"net.weight", "net.bias"}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
