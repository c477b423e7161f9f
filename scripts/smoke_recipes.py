"""Smoke-test every recipe: ``lt-transfer fit --config <recipe> --trainer.fast_dev_run=true``.

Each recipe of ``configs/`` runs in its own subprocess (one training batch, one validation
batch, no logs or checkpoints: Lightning's ``fast_dev_run``) in a temporary working folder, and
the script prints a table of recipe, wall seconds and pass/fail, then the tail of the output
of each failure. The exit status is 1 when a recipe fails.

    python scripts/smoke_recipes.py                      # every configs/*.yaml
    python scripts/smoke_recipes.py configs/linear_probe_cached.yaml --threads 2

``--threads`` sets the torch threads of each run (``OMP_NUM_THREADS``; default: 2, the
development machine's cores) and is printed with the table, since times depend on it.

A recipe that needs a file only a previous run makes gets a stand-in here, listed under the
table: ``mnist_distillation.yaml`` and ``distill_for_deployment.yaml`` distil a teacher
checkpoint that the user trains first (README, "Knowledge distillation" and "Distillation for
deployment"); the smoke run uses an untrained torchvision MobileNetV2 of the same family with
its first ten classes as the ten digits. ``image_folder_finetune.yaml`` trains on a folder of
the user's photos: the smoke run writes ``photos/`` with two classes of blank 32 px PNG files.
``shot_mnist_to_mnistm.yaml`` adapts a source model the user trains first: the smoke run saves an
untrained ``DomainAdaptationModule("lenet", method="source_only")`` checkpoint. Stand-ins are
prepared before the clock starts.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Extra arguments a recipe needs to run on its own, with the reason (printed under the table).
_TEACHER_STAND_IN = (
    [
        "--model.init_args.teacher=torchvision/mobilenet_v2",
        "--model.init_args.class_mapping=[0,1,2,3,4,5,6,7,8,9]",
    ],
    "teacher: an untrained torchvision/mobilenet_v2 stands in for the teacher checkpoint",
)
STAND_INS: dict[str, tuple[list[str], str]] = {
    "mnist_distillation.yaml": _TEACHER_STAND_IN,
    "distill_for_deployment.yaml": _TEACHER_STAND_IN,
    "image_folder_finetune.yaml": (
        ["--data.root=photos"],
        "data: `photos/` with two classes of 10 blank 32 px PNG files stands in for the user's photos",
    ),
    "shot_mnist_to_mnistm.yaml": (
        ["--model.init_args.source_model=source.ckpt"],
        "source_model: an untrained LeNet `DomainAdaptationModule(method='source_only')` checkpoint",
    ),
}


def prepare(recipe: str, folder: Path) -> None:
    """Write the files a recipe's stand-in arguments name into the run's ``folder``."""
    if recipe == "image_folder_finetune.yaml":
        from lt_transfer.data.image_files import write_class_folders

        write_class_folders(folder / "photos", per_class=10, size=(32, 32))
    elif recipe == "shot_mnist_to_mnistm.yaml":
        import lightning.pytorch as pl

        from lt_transfer import DomainAdaptationModule

        module = DomainAdaptationModule("lenet", method="source_only")
        trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
        trainer.strategy.connect(module)
        trainer.save_checkpoint(folder / "source.ckpt")


@dataclass
class Result:
    """One recipe's smoke run."""

    recipe: str
    seconds: float
    cpu_seconds: float
    passed: bool
    output: str


def smoke(recipe: Path, threads: int, timeout: float) -> Result:
    """Run ``recipe`` with ``fast_dev_run`` in a fresh temporary folder."""
    extra, _ = STAND_INS.get(recipe.name, ([], ""))
    command = [
        sys.executable,
        "-m",
        "lt_transfer.cli",
        "fit",
        "--config",
        str(recipe.resolve()),
        "--trainer.fast_dev_run=true",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="smoke_") as folder:
        prepare(recipe.name, Path(folder))
        start, cpu_start = time.perf_counter(), _children_cpu_seconds()
        try:
            done = subprocess.run(
                command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout
            )
            passed, output = done.returncode == 0, done.stdout + done.stderr
        except subprocess.TimeoutExpired as error:
            passed, output = (
                False,
                f"timed out after {timeout:.0f} s\n{error.stdout or ''}{error.stderr or ''}",
            )
    wall, cpu = time.perf_counter() - start, _children_cpu_seconds() - cpu_start
    return Result(recipe.name, wall, cpu, passed, output)


def _children_cpu_seconds() -> float:
    """User + system CPU seconds of the finished child processes (the run's own cost: on a busy
    machine the wall time also counts the waiting; with 1 thread the CPU time is what the wall
    time would be alone)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def table(results: list[Result], threads: int) -> str:
    """The results as a Markdown table (recipe, wall seconds, pass/fail)."""
    lines = [
        f"fast_dev_run of every recipe ({threads} torch threads per run)",
        "",
        "| recipe | wall time | CPU time | result |",
        "|---|---:|---:|---|",
    ]
    lines += [
        f"| `{r.recipe}` | {r.seconds:.1f} s | {r.cpu_seconds:.1f} s | {'pass' if r.passed else 'FAIL'} |"
        for r in results
    ]
    notes = [f"- `{r.recipe}`: {STAND_INS[r.recipe][1]}" for r in results if r.recipe in STAND_INS]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", type=Path, help="recipes (default: every configs/*.yaml)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run (OMP_NUM_THREADS)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a run counts as failed")
    args = parser.parse_args(argv)
    recipes = args.recipes or sorted((ROOT / "configs").glob("*.yaml"))
    results = []
    for recipe in recipes:
        result = smoke(recipe, args.threads, args.timeout)
        verdict = "pass" if result.passed else "FAIL"
        print(f"{result.recipe}: {verdict} in {result.seconds:.1f} s ({result.cpu_seconds:.1f} s CPU)")
        results.append(result)
    print()
    print(table(results, args.threads))
    for result in results:
        if not result.passed:
            print(f"\n--- {result.recipe}: last lines of its output ---\n{result.output[-3000:]}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
