"""Benchmark: which label-free validator picks good checkpoints without target labels (issue 14, part 3)?

Usage:

    .venv/bin/python scripts/bench_selection.py              # the full sweep (docs/benchmarks.md)
    .venv/bin/python scripts/bench_selection.py --smoke      # a few minutes, end to end, not for the docs
    .venv/bin/python scripts/bench_selection.py --redraw     # table and PNG again from the cached scores

**The sweep.** On each shift (default: MNIST → MNIST-M-style and MNIST → sklearn digits), every
method (``--methods``) × trade-off (``--trade-offs``) × seed (``--seeds``) is trained for
``--steps`` SGD steps (the data, network and optimizer of ``bench_domain_adaptation.py``), and
every ``--every`` steps the run is a *checkpoint*: 4 methods × 2 trade-offs × 3 seeds × 4
checkpoints = 96 per shift by default. At each checkpoint, during the Trainer's validation,
:class:`~lt_transfer.TargetValidation` computes every validator (``--validators``; default all:
``snd``, ``bnm``, ``im``, ``entropy``, ``dev``, ``silhouette`` and the baseline ``source_acc``) on the
unlabelled target validation split (and the labelled source validation split for ``dev`` and
``source_acc``), exactly as a user's run logs them; then the target **test** accuracy is measured:
the ground truth that judges the validators and never chooses anything.

**What is reported**, per shift and validator (``mode`` as documented in
``TargetValidation``): the Spearman correlation between the score and the target test accuracy
over all checkpoints, signed so that > 0 means "a better score goes with a higher accuracy"
(negated for ``mode="min"`` validators); the **regret**, accuracy of the oracle-best checkpoint
minus that of the checkpoint the validator picks (:func:`lt_transfer.metrics.selection_regret`; ties
share their mean accuracy), over all checkpoints of the shift ("pooled") and as the mean over
seeds of the regret within each seed's sweep ("per seed"); and in a second table the regret of
choosing a checkpoint *within* one run (what ``ModelCheckpoint(monitor=...)`` does), averaged over
runs. Baselines: ``source_acc`` (source validation accuracy) and ``last`` (the last checkpoint:
the score is the step, so the pooled pick is a random run's final checkpoint). Reference, not
label-free: ``target_val_acc``, accuracy on the labelled target validation split that a real
user does not have.

**Outputs**: the markdown tables (stdout), a PNG scatter (validator score vs target test accuracy,
one panel per validator, both shifts; the pooled pick of each circled) at ``--png``, and every
checkpoint's scores in the JSON ``--scores``, written after each run: an interrupted sweep
resumes where it stopped (runs already in the file are skipped when the training options match),
and ``--redraw`` remakes tables and PNG from it without training. The torch thread count is
printed (``--threads``; times depend on it).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from _digit_shifts import (
    TRAINED,
    accuracy,
    add_network_arguments,
    add_shift_arguments,
    build_model,
    datamodule,
    print_header,
    shift_name,
    trainer,
)
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import TensorDataset
from typing_extensions import override

from lt_transfer import TargetValidation
from lt_transfer.callbacks.target_validation import DEFAULT_VALIDATOR, VALIDATOR_MODES
from lt_transfer.metrics import selected_checkpoints, selection_regret, spearman_correlation

ROOT = Path(__file__).resolve().parents[1]
VALIDATORS = tuple(VALIDATOR_MODES)
#: The selection baselines that are not validators of TargetValidation, and the labelled reference.
LAST, REFERENCE = "last", "target_val_acc"
NEEDS = {
    "snd": "target logits",
    "bnm": "target logits",
    "im": "target logits",
    "entropy": "target logits",
    "dev": "source val + target features",
    "silhouette": "target logits + features",
    "source_acc": "source val labels (baseline)",
    LAST: "nothing (baseline)",
    REFERENCE: "target val labels (reference)",
}
#: Options that change the scores; a cache is resumed only when they match.
TRAINING_OPTIONS = (
    "steps", "every", "batch_size", "lr", "source_samples", "target_samples", "source_val_samples",
    "target_val_samples", "test_samples", "no_batch_norm", "flat_features", "head_hidden", "joint_bn",
    "disc_hidden", "disc_depth", "trade_off_on", "validators",
)  # fmt: skip
#: ``--smoke``: both shifts, 2 methods × 1 trade-off × 2 seeds × 3 checkpoints of a 60-step run.
SMOKE: dict[str, Any] = dict(
    methods=["dann", "mmd"], trade_offs=[1.0], seeds=[0, 1], steps=60, every=20, source_samples=1000,
    target_samples=1000, source_val_samples=200, target_val_samples=200, test_samples=500,
    scores="lightning_logs/selection_smoke.json", png="lightning_logs/selection_scatter_smoke.png",
)  # fmt: skip
FULL_OUTPUTS = {"scores": "docs/selection_scores.json", "png": "docs/images/selection_scatter.png"}
MIN_CHECKPOINTS = 60  # per shift, the size


# --------------------------------------------------------------------------------------------- sweep
class CheckpointRecorder(Callback):
    """After each validation: the logged validators, the labelled target val accuracy, the test accuracy."""

    def __init__(self, validators: list[str], test_set: TensorDataset, args: argparse.Namespace) -> None:
        self.validators = validators
        self.test_set = test_set
        self.args = args
        self.rows: list[dict[str, Any]] = []

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        self.rows.append(
            {
                "step": trainer.global_step,
                "scores": {v: float(metrics[f"val/target/{v}"]) for v in self.validators},
                REFERENCE: 100.0 * float(metrics["val/target/acc"]),
                "target_test_acc": accuracy(pl_module, self.test_set, self.args),
            }
        )


def train_run(
    args: argparse.Namespace, data: Any, method: str, trade_off: float, seed: int
) -> list[dict[str, Any]]:
    """One run with a checkpoint every ``--every`` steps: one row per checkpoint."""
    pl.seed_everything(seed, verbose=False)
    model = build_model(args, method, trade_off)
    recorder = CheckpointRecorder(list(args.validators), data.test_sets[1], args)
    trainer(
        args,
        max_steps=args.steps,
        max_epochs=-1,
        val_check_interval=args.every,
        check_val_every_n_epoch=None,
        limit_val_batches=1.0,
        num_sanity_val_steps=0,
        callbacks=[TargetValidation(list(args.validators)), recorder],
    ).fit(model, data)
    return recorder.rows


def run_key(shift: str, method: str, trade_off: float, seed: int) -> str:
    return f"{shift}|{method}|{trade_off:g}|{seed}"


def load_cache(path: Path, config: dict[str, Any], fresh: bool) -> dict[str, Any]:
    """The cached sweep to resume, or a new one; a cache of other training options is refused."""
    if fresh or not path.exists():
        return {"config": config, "runs": {}}
    cache = json.loads(path.read_text())
    if cache.get("config") != config:
        changed = sorted(k for k in config if cache.get("config", {}).get(k) != config[k])
        raise SystemExit(
            f"--scores {path}: the cached checkpoints were trained with other options ({changed}); pass "
            "--fresh to start over, another --scores path, or the cached options."
        )
    return cache


def save_cache(path: Path, cache: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(cache, indent=1))
    partial.replace(path)


def sweep(args: argparse.Namespace, cache: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """Train every run of the sweep that the cache does not hold; return the sweep's checkpoints."""
    runs = cache["runs"]
    wanted: list[str] = []
    for seed in args.seeds:  # seed-major: an interrupted sweep has whole seeds
        for shift in args.shift:
            name = shift_name(shift)
            keys = {
                (m, t): run_key(name, m, t, seed)
                for m in args.methods
                for t in (args.trade_offs if m != "source_only" else args.trade_offs[:1])
            }
            wanted += keys.values()
            if all(k in runs for k in keys.values()):
                continue
            data = datamodule(
                args, *shift, seed, val_samples=args.source_val_samples, test_samples=args.test_samples
            )
            for (method, trade_off), key in keys.items():
                if key in runs:
                    continue
                start, cpu = time.perf_counter(), time.process_time()
                rows = train_run(args, data, method, trade_off, seed)
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                info = {"shift": name, "method": method, "trade_off": trade_off, "seed": seed}
                runs[key] = {**info, "wall_s": wall, "cpu_s": cpu, "checkpoints": rows}
                save_cache(path, cache)
                accs = " ".join(f"{r['target_test_acc']:.1f}" for r in rows)
                print(
                    f"{name} {method:<13} trade-off {trade_off:<4g} seed {seed}: target test acc at steps "
                    f"{[r['step'] for r in rows]}: {accs} ({wall:.0f} s wall, {cpu:.0f} s CPU)",
                    flush=True,
                )
    return checkpoints(runs[k] for k in wanted)


def checkpoints(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten runs into checkpoint rows carrying their run's shift, method, trade-off and seed."""
    rows = []
    for run in runs:
        info = {k: run[k] for k in ("shift", "method", "trade_off", "seed")}
        rows += [{**info, **row} for row in run["checkpoints"]]
    return rows


# ------------------------------------------------------------------------------------------ analysis
def candidates(rows: list[dict[str, Any]]) -> list[str]:
    """Validators present in the rows (in VALIDATOR_MODES order), then ``last`` and the reference."""
    present = set(rows[0]["scores"]) if rows else set()
    return [v for v in VALIDATORS if v in present] + [LAST, REFERENCE]


def mode(name: str) -> str:
    return VALIDATOR_MODES.get(name, "max")


def score(row: dict[str, Any], name: str) -> float:
    if name == LAST:
        return float(row["step"])
    if name == REFERENCE:
        return float(row[REFERENCE])
    return float(row["scores"][name])


def mean_regret(rows: list[dict[str, Any]], name: str, key: Callable[[dict[str, Any]], Any]) -> float:
    """The mean over groups (rows with one ``key``) of the regret within each group."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    regrets = [regret(group, name) for group in groups.values()]
    finite = [r for r in regrets if math.isfinite(r)]
    return statistics.mean(finite) if finite else math.nan


def regret(rows: list[dict[str, Any]], name: str) -> float:
    return selection_regret([score(r, name) for r in rows], [r["target_test_acc"] for r in rows], mode(name))


def correlation(rows: list[dict[str, Any]], name: str) -> float:
    rho = spearman_correlation([score(r, name) for r in rows], [r["target_test_acc"] for r in rows])
    return -rho if mode(name) == "min" else rho


def analyse(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{shift: {candidate: {rho, pooled, per_seed, per_run}}}."""
    result: dict[str, dict[str, dict[str, float]]] = {}
    for shift in dict.fromkeys(r["shift"] for r in rows):
        mine = [r for r in rows if r["shift"] == shift]
        result[shift] = {
            name: {
                "rho": correlation(mine, name),
                "pooled": regret(mine, name),
                "per_seed": mean_regret(mine, name, lambda r: r["seed"]),
                "per_run": mean_regret(mine, name, lambda r: (r["method"], r["trade_off"], r["seed"])),
            }
            for name in candidates(mine)
        }
    return result


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def print_tables(rows: list[dict[str, Any]], stats: dict[str, dict[str, dict[str, float]]]) -> None:
    shifts = list(stats)
    print()
    for shift in shifts:
        mine = [r for r in rows if r["shift"] == shift]
        accs = [r["target_test_acc"] for r in mine]
        runs = {(r["method"], r["trade_off"], r["seed"]) for r in mine}
        note = "" if len(mine) >= MIN_CHECKPOINTS else f" (fewer than the issue's {MIN_CHECKPOINTS})"
        print(
            f"# {shift}: {len(mine)} checkpoints{note} of {len(runs)} runs; target test accuracy: "
            f"oracle-best {max(accs):.2f} %, mean {statistics.mean(accs):.2f} %, worst {min(accs):.2f} %"
        )
    print()
    print(
        "Spearman ρ (signed: > 0 = a better score goes with a higher target test accuracy) and regret "
        "(points of target test accuracy below the oracle-best checkpoint; pooled = one pick among all "
        "checkpoints of the shift, per seed = mean over seeds of the pick within each seed's sweep):"
    )
    print()
    head = " | ".join(f"ρ {s} | regret pooled | regret per seed" for s in shifts)
    print(f"| validator | mode | needs | {head} |")
    print("|---|---|---|" + "---|" * (3 * len(shifts)))
    for name in candidates(rows):
        cells = " | ".join(
            " | ".join(fmt(stats[s][name][column]) for column in ("rho", "pooled", "per_seed"))
            for s in shifts
        )
        print(f"| `{name}` | {mode(name)} | {NEEDS.get(name, '')} | {cells} |")
    print()
    print("Choosing the checkpoint within one run (ModelCheckpoint on the validator), mean regret over runs:")
    print()
    print("| validator | " + " | ".join(f"regret within a run, {s}" for s in shifts) + " |")
    print("|---|" + "---|" * len(shifts))
    for name in candidates(rows):
        print(f"| `{name}` | " + " | ".join(fmt(stats[s][name]["per_run"]) for s in shifts) + " |")
    print()
    print_target_check(stats)


def print_target_check(stats: dict[str, dict[str, dict[str, float]]]) -> None:
    """The issue's targets: the best label-free validator's pooled regret <= 2 on every shift and below
    source_acc's."""
    shifts = list(stats)
    label_free = [v for v in VALIDATORS if v != "source_acc" and all(v in stats[s] for s in shifts)]
    if not label_free or not shifts:
        return

    def worst(name: str, column: str) -> float:
        values = [stats[s][name][column] for s in shifts]
        return max(values) if all(math.isfinite(v) for v in values) else math.inf

    def rank(name: str) -> tuple[float, float, float]:  # ties: the per-seed regret, then the Spearman ρ
        return worst(name, "pooled"), worst(name, "per_seed"), -min(stats[s][name]["rho"] for s in shifts)

    best = min(label_free, key=rank)
    pooled = {s: stats[s][best]["pooled"] for s in shifts}
    baseline = {s: stats[s].get("source_acc", {}).get("pooled", math.nan) for s in shifts}
    within = all(v <= 2.0 for v in pooled.values())
    beats = all(pooled[s] < baseline[s] for s in shifts)
    print(
        f"Best label-free validator (lowest worst-shift pooled regret; ties: per-seed regret, ρ): `{best}` "
        f"(regret {', '.join(f'{s} {fmt(v)}' for s, v in pooled.items())}; source_acc "
        f"{', '.join(f'{s} {fmt(v)}' for s, v in baseline.items())}). Targets: regret <= 2 on every shift: "
        f"{'yes' if within else 'no'}; below source_acc's on every shift: {'yes' if beats else 'no'}. "
        f"DEFAULT_VALIDATOR is now {DEFAULT_VALIDATOR!r}."
    )


def draw(rows: list[dict[str, Any]], stats: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    """Validator score vs target test accuracy, one panel per validator (and the reference), both shifts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [n for n in candidates(rows) if n != LAST]
    columns = 4
    lines = math.ceil(len(names) / columns)
    figure = Figure(figsize=(4.0 * columns, 3.4 * lines), dpi=110)
    FigureCanvasAgg(figure)
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    shifts = list(stats)
    for index, name in enumerate(names):
        axes = figure.add_subplot(lines, columns, index + 1)
        for number, shift in enumerate(shifts):
            mine = [r for r in rows if r["shift"] == shift]
            x = [score(r, name) for r in mine]
            y = [r["target_test_acc"] for r in mine]
            color = colors[number % len(colors)]
            rho = fmt(stats[shift][name]["rho"])
            axes.scatter(x, y, s=12, alpha=0.6, color=color, label=f"{shift} (ρ {rho})")
            for i in selected_checkpoints(x, mode(name)):  # type: ignore[arg-type]
                axes.scatter([x[i]], [y[i]], s=90, facecolors="none", edgecolors="black", linewidths=1.2)
        title = "target val acc (labelled, reference)" if name == REFERENCE else name
        axes.set_title(f"{title}  [{mode(name)}]", fontsize=10)
        axes.set_xlabel("score", fontsize=8)
        axes.set_ylabel("target test acc (%)", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.legend(fontsize=7, loc="best")
    figure.suptitle(
        "Label-free validators: score vs target test accuracy per checkpoint (circled: the pooled pick)",
        fontsize=11,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    print(f"scatter: {path}", flush=True)


# ------------------------------------------------------------------------------------------------ cli
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_shift_arguments(parser)
    trained = [m for m in TRAINED if m != "source_only"] + ["source_only"]
    parser.add_argument(
        "--methods", nargs="+", default=["dann", "mmd", "mcc", "self_training"], choices=trained
    )
    parser.add_argument(
        "--trade-offs",
        nargs="+",
        type=float,
        default=[0.1, 1.0],
        help="target-term weights (source_only: one run)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per run")
    parser.add_argument("--every", type=int, default=150, help="a checkpoint every this many steps")
    parser.add_argument("--validators", nargs="+", default=list(VALIDATORS), choices=list(VALIDATORS))
    parser.add_argument("--batch-size", type=int, default=32, help="per domain")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--source-samples", type=int, default=10000)
    parser.add_argument("--target-samples", type=int, default=10000)
    parser.add_argument("--source-val-samples", type=int, default=1000, help="labelled (dev, source_acc)")
    parser.add_argument("--target-val-samples", type=int, default=1000, help="what the validators see")
    parser.add_argument("--test-samples", type=int, default=None, help="target test subset (default: all)")
    add_network_arguments(parser)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--smoke", action="store_true", help=f"a few minutes, end to end: {SMOKE}")
    parser.add_argument(
        "--scores", default=None, help=f"checkpoint-score JSON (default {FULL_OUTPUTS['scores']})"
    )
    parser.add_argument("--png", default=None, help=f"scatter PNG (default {FULL_OUTPUTS['png']})")
    parser.add_argument("--redraw", action="store_true", help="no training: tables and PNG from --scores")
    parser.add_argument("--fresh", action="store_true", help="ignore (and overwrite) the cached scores")
    args = parser.parse_args(argv)
    parser.set_defaults(**(SMOKE if args.smoke else FULL_OUTPUTS))
    args = parser.parse_args(argv)  # explicit flags still win over the preset
    if args.steps < 1 or args.every < 1 or args.steps % args.every:
        parser.error(f"--steps {args.steps} --every {args.every}: both >= 1, and --every must divide --steps")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-Trainer device lines
    for message in (".*LeafSpec.*", ".*on_before_batch_transfer.*"):  # once per run, not about results
        warnings.filterwarnings("ignore", message=message)
    print_header(args)
    scores, png = ROOT / args.scores, ROOT / args.png
    start = time.perf_counter()
    if args.redraw:
        if not scores.exists():
            raise SystemExit(f"--redraw: no cached scores at {scores}; run the sweep first.")
        cache = json.loads(scores.read_text())
        print(f"# cached sweep: {cache['config']}")
        rows = checkpoints(cache["runs"].values())
    else:
        config = {k: getattr(args, k) for k in TRAINING_OPTIONS}
        rows = sweep(args, load_cache(scores, config, args.fresh), scores)
        print(f"scores: {scores}")
    if not rows:
        raise SystemExit("no checkpoints to analyse")
    stats = analyse(rows)
    print_tables(rows, stats)
    draw(rows, stats, png)
    print(f"total wall time {time.perf_counter() - start:.0f} s, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
