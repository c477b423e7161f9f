"""Domain-shift report and negative-transfer monitoring on the offline digit shifts.

For each target domain (MNIST → MNIST-M-style, MNIST → scikit-learn digits) it trains a
LeNet three times on a small subset and reports, per run, the target *validation* accuracy
(never the test split), the proxy A-distance between source and target features at the
start and end of training (``DomainShiftReport``), and what ``NegativeTransferMonitor``
says against the source-only run's logged ``val/target/acc`` (read back from its
``metrics.csv``):

* ``source_only``: the baseline (no adaptation);
* ``dann``: domain-adversarial training — does adaptation help or hurt here?
* ``permuted`` (control): source-only on a source whose labels are permuted (``y -> (y+1) % 10``)
  relative to the target: transfer that must hurt, which the monitor must flag.

Usage::

    python scripts/domain_shift_report.py                       # both shifts, defaults below
    python scripts/domain_shift_report.py --targets mnist_m --epochs 2 --samples 1000

PNGs, ``domain_report.json`` and CSV logs go under ``--out`` (default ``lightning_logs/domain_report``).
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import TensorDataset

from lt_transfer import (
    DomainAdaptationDataModule,
    DomainAdaptationModule,
    DomainShiftReport,
    NegativeTransferMonitor,
)


def build_data(target: str, args: argparse.Namespace, permute: bool) -> DomainAdaptationDataModule:
    dm = DomainAdaptationDataModule(
        "mnist",
        target,
        source_samples=args.samples,
        target_samples=args.samples,
        val_samples=args.val_samples,
        target_val_samples=args.val_samples,
        test_samples=args.val_samples,
        batch_size=64,
        seed=args.seed,
    )
    dm.setup("fit")
    if permute:  # the source task's labels are a permutation of the target's
        x, y = dm.train_source.tensors
        dm.train_source = TensorDataset(x, (y + 1) % 10)
        vx, vy = dm.val_sets[0].tensors
        dm.val_sets[0] = TensorDataset(vx, (vy + 1) % 10)
    return dm


def run(target: str, name: str, args: argparse.Namespace, baseline_log: Path | None) -> dict:
    pl.seed_everything(args.seed, verbose=False)
    method = "dann" if name == "dann" else "source_only"
    model = DomainAdaptationModule("lenet", num_classes=10, method=method)
    data = build_data(target, args, permute=name == "permuted")
    out = Path(args.out) / target / name
    report = DomainShiftReport(
        backbone="backbone",
        source="source",
        target="target",
        max_samples=args.report_samples,
        methods=args.methods,
        dirpath=str(out),
        dpi=args.dpi,
        seed=args.seed,
    )
    callbacks: list[pl.Callback] = [report]
    monitor = None
    if baseline_log is not None:
        monitor = NegativeTransferMonitor(
            "val/target/acc", baseline=str(baseline_log), action="log", patience=1
        )
        callbacks.append(monitor)
    logger = CSVLogger(Path(args.out) / target, name=name, version=0)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    start = time.perf_counter()
    trainer.fit(model, data)
    return {
        "target": target,
        "run": name,
        "acc": float(trainer.callback_metrics["val/target/acc"]),
        "pad_start": report.results[0].pad,
        "pad_end": report.results[-1].pad,
        "monitor": monitor,
        "log": Path(logger.log_dir),
        "seconds": time.perf_counter() - start,
        "png": report.results[-1].png,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", nargs="+", default=["mnist_m", "sklearn_digits"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2000, help="training samples per domain")
    parser.add_argument("--val-samples", type=int, default=500, help="labelled validation samples per domain")
    parser.add_argument("--report-samples", type=int, default=400, help="samples per domain in the report")
    parser.add_argument("--methods", nargs="+", default=["pca", "tsne"], choices=["pca", "tsne"])
    parser.add_argument("--dpi", type=int, default=70)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="lightning_logs/domain_report")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    started = time.perf_counter()
    rows = []
    for target in args.targets:
        baseline = run(target, "source_only", args, None)
        rows.append(baseline)
        rows.append(run(target, "dann", args, baseline["log"]))
        rows.append(run(target, "permuted", args, baseline["log"]))

    print(
        f"\n# domain_shift_report.py — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"LeNet, {args.samples} training samples per domain, {args.epochs} epochs, seed {args.seed}; "
        "accuracy on "
        f"{args.val_samples} labelled target *validation* samples; PAD on {args.report_samples} validation "
        "samples per domain (linear classifier, half held out). Monitor baseline: best val/target/acc "
        "of the source_only run, read from its metrics.csv.\n"
    )
    print("| shift | run | target val acc | PAD start | PAD end | monitor gap per epoch | flagged | time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        monitor = r["monitor"]
        if monitor is None:
            gaps, flagged = "(baseline)", "—"
        else:
            gaps = ", ".join(f"{h['gap']:+.3f}" for h in monitor.history)
            flagged = "yes" if monitor.flagged else "no"
        print(
            f"| mnist → {r['target']} | {r['run']} | {r['acc']:.3f} | {r['pad_start']:.2f} | "
            f"{r['pad_end']:.2f} | {gaps} | {flagged} | {r['seconds']:.0f} s |"
        )
    print(
        f"\ntotal wall time {time.perf_counter() - started:.0f} s; pictures: "
        + ", ".join(r["png"] for r in rows)
    )


if __name__ == "__main__":
    main()
