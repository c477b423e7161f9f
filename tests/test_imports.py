"""`import lt_transfer` loads neither our Hugging Face code nor any transformers/peft module of its own."""

from __future__ import annotations

import subprocess
import sys


def test_import_lt_transfer_adds_no_transformers_or_peft_modules() -> None:
    # torchmetrics (imported by lightning) already imports `transformers` when it is installed,
    # so the baseline is what `import lightning.pytorch` loads by itself.
    code = (
        "import sys\n"
        "import lightning.pytorch\n"
        "baseline = set(sys.modules)\n"
        "import lt_transfer, lt_transfer.data, lt_transfer.modules\n"
        "added = sorted(m for m in set(sys.modules) - baseline\n"
        "               if m.split('.')[0] in ('transformers', 'peft'))\n"
        "assert not added, added\n"
        "for name in ('lt_transfer.backbones.hf', 'lt_transfer.lora', 'peft'):\n"
        "    assert name not in sys.modules, name\n"
        "print('OK')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("OK")


def test_documented_names_are_importable_from_the_package() -> None:
    import lt_transfer

    documented = ["TweetShiftDataModule", "FeatureCacheMemoryError"]
    documented += ["ImageFolderDataModule", "PredictionWriter"]
    for name in documented:
        assert name in lt_transfer.__all__ and getattr(lt_transfer, name) is not None, name
    missing = [name for name in lt_transfer.__all__ if not hasattr(lt_transfer, name)]
    assert not missing, missing
