"""A folder of images to a fine-tuned model and a CSV of predictions, with the README's three commands."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tests.image_folders import write_photos

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "image_folder_finetune.yaml"
FAST = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--data.image_size=32",
    "--data.batch_size=8",
    "--data.num_workers=0",
]


def lt_transfer(subcommand: str, *overrides: str, cwd: Path) -> str:
    command = [sys.executable, "-m", "lt_transfer.cli", subcommand, "--config", str(RECIPE)]
    command += [*FAST, *overrides]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_fit_test_predict_from_a_folder(tmp_path: Path) -> None:
    write_photos(tmp_path / "photos")
    write_photos(tmp_path / "new_photos" / "unsorted", per_class=2)
    lt_transfer("fit", "--data.root=photos", cwd=tmp_path)
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    tested = lt_transfer("test", "--data.root=photos", f"--ckpt_path={checkpoint}", cwd=tmp_path)
    assert "test/acc" in tested
    predict = ["--data.root=photos", "--data.predict_root=new_photos", f"--ckpt_path={checkpoint}"]
    lt_transfer("predict", *predict, cwd=tmp_path)
    with open(tmp_path / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    assert {row["prediction"] for row in rows} <= {"digit_0", "digit_1", "digit_7"}
    assert all(Path(row["path"]).name.split(".")[-1] in ("png", "jpg") for row in rows)
    assert all(0.0 <= float(row["probability"]) <= 1.0 for row in rows)
