"""The `lt-transfer` command: recipes run, configs round-trip, --help stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "mnist_mobilenet_finetune.yaml"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lt_transfer.cli", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_fit_recipe_fast_dev_run(tmp_path: Path) -> None:
    result = run_cli("fit", "--config", str(RECIPE), "--trainer.fast_dev_run=true", cwd=tmp_path)
    assert "`Trainer.fit` stopped" in result.stderr + result.stdout


def test_print_config_round_trips(tmp_path: Path) -> None:
    first = run_cli("fit", "--config", str(RECIPE), "--print_config", cwd=tmp_path).stdout
    saved = tmp_path / "printed.yaml"
    saved.write_text(first)
    second = run_cli("fit", "--config", str(saved), "--print_config", cwd=tmp_path).stdout
    assert yaml.safe_load(first) == yaml.safe_load(second)
    config = yaml.safe_load(first)
    assert config["model"]["class_path"] == "lt_transfer.TransferClassifier"
    # linked: data.num_classes sets model.init_args.num_classes when both are instantiated
    assert "num_classes" not in config["model"]["init_args"]
    assert config["model"]["init_args"]["optimizer"]["class_path"] == "torch.optim.AdamW"


def test_help_imports_no_transformers_and_builds_no_model(tmp_path: Path) -> None:
    """`lt-transfer --help` builds no model and imports no transformers module of its own.

    torchmetrics (imported by lightning itself) already imports ``transformers`` whenever it is
    installed (torchmetrics/functional/text/bert.py), so the check is against the modules that
    ``import lightning.pytorch`` alone loads.
    """
    code = (
        "import sys\n"
        "from torch import nn\n"
        "built = []\n"
        "original = nn.Module.__init__\n"
        "def spy(self, *a, **k):\n"
        "    built.append(type(self).__name__)\n"
        "    original(self, *a, **k)\n"
        "nn.Module.__init__ = spy\n"
        "import lightning.pytorch\n"
        "baseline = set(sys.modules)\n"
        "from lt_transfer.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "added = [m for m in set(sys.modules) - baseline if m.split('.')[0] in ('transformers', 'peft')]\n"
        "assert not added, added\n"
        "assert 'lt_transfer.backbones.hf' not in sys.modules\n"
        "assert not built, built\n"
        "print('OK')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("OK")


NESTED_RECIPE = """
trainer: {accelerator: cpu, fast_dev_run: true, logger: false}
model:
  class_path: lt_transfer.DistillationModule
  init_args:
    teacher: torchvision/mobilenet_v3_small
    class_mapping: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    student:
      class_path: lt_transfer.TransferClassifier
      init_args: {backbone: torchvision/mobilenet_v3_small, finetune: partial, trainable_groups: 2}
data:
  class_path: lt_transfer.DigitsDataModule
  init_args: {dataset: sklearn_digits, image_size: 32, batch_size: 8}
"""


def test_nested_lightning_module_gets_its_own_hyperparameters(tmp_path: Path) -> None:
    """LightningCLI would hand the outer model's config to a nested TransferClassifier student."""
    recipe = tmp_path / "nested.yaml"
    recipe.write_text(NESTED_RECIPE)
    result = run_cli("fit", "--config", str(recipe), cwd=tmp_path)
    assert "`Trainer.fit` stopped" in result.stderr + result.stdout


CKPT_RECIPE = """
trainer:
  accelerator: cpu
  max_steps: 2
  limit_val_batches: 1
  limit_test_batches: 1
  logger: false
  enable_progress_bar: false
  default_root_dir: {root}
model:
  class_path: lt_transfer.TransferClassifier
  init_args: {{backbone: torchvision/mobilenet_v3_small, weights: {weights}, finetune: frozen}}
data:
  class_path: lt_transfer.DigitsDataModule
  init_args: {{dataset: sklearn_digits, image_size: 32, batch_size: 8, labels_per_class: 2}}
"""


def test_ckpt_path_needs_no_pretrained_file_and_names_a_broken_file(tmp_path: Path) -> None:
    import torch
    from torchvision.models import mobilenet_v3_small

    weights = tmp_path / "mnv3.pth"
    torch.save(mobilenet_v3_small().state_dict(), weights)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(CKPT_RECIPE.format(root=tmp_path / "run", weights=weights))
    run_cli("fit", "--config", str(recipe), cwd=tmp_path)
    [checkpoint] = (tmp_path / "run").rglob("*.ckpt")
    weights.unlink()  # the checkpoint holds every weight: the recipe's file is not needed any more
    tested = run_cli("test", "--config", str(recipe), "--ckpt_path", str(checkpoint), cwd=tmp_path)
    assert "test/acc" in tested.stdout + tested.stderr

    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(checkpoint.read_bytes()[:100])
    command = [sys.executable, "-m", "lt_transfer.cli", "test", "--config", str(recipe)]
    command += ["--ckpt_path", str(broken)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "broken.ckpt" in result.stderr and "not a readable checkpoint" in result.stderr
