"""Benchmark: source-only vs DANN vs MMD vs CORAL vs train-on-target, on two digit shifts.

Usage (the command in docs/benchmarks.md):

    .venv/bin/python scripts/bench_domain_adaptation.py --seeds 0 1 2

Every method gets the same network (LeNetBackbone), data, optimizer, batch size and number
of optimizer steps (SGD, momentum 0.9, lr 0.01 annealed as in the DANN paper, batch 32 per
domain). Hyper-parameters are fixed a priori from the papers (trade-off 1, the DANN
coefficient schedule with gamma = 10 for every alignment method) and were *not* tuned on
any split; the labelled target validation split (1,000 MNIST-M-style / 359 sklearn-digits
images, disjoint from the test set) is reported as the split to tune on. The target test
set is only used for the report. "Gap closed" = (method - source-only) / (oracle -
source-only), from the means. The oracle trains source-only on labelled target training
data (MNIST-M-style: 10,000 images; sklearn digits: its 1,078 training images).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone

import lightning.pytorch as pl
import torch

from lt_transfer.backbones import LeNetBackbone
from lt_transfer.data.domain_adaptation import DomainAdaptationDataModule
from lt_transfer.modules.domain_adaptation import DomainAdaptationModule

SHIFTS = {"mnist_to_mnistm": ("mnist", "mnist_m"), "mnist_to_digits": ("mnist", "sklearn_digits")}
METHODS = ("source_only", "dann", "mmd", "coral", "oracle")


@torch.no_grad()
def accuracy(model: DomainAdaptationModule, dataset: torch.utils.data.TensorDataset) -> float:
    model.eval()
    x, y = dataset.tensors
    correct = sum(
        int((model(x[i : i + 1000]).argmax(-1) == y[i : i + 1000]).sum()) for i in range(0, len(y), 1000)
    )
    return 100.0 * correct / len(y)


def run_one(shift: str, method: str, seed: int, args: argparse.Namespace, trade_off: float) -> dict:
    source, target = SHIFTS[shift]
    if method == "oracle":  # labelled target training data, target evaluation
        source = target
    dm = DomainAdaptationDataModule(
        source,
        target,
        source_samples=args.source_samples,
        target_samples=args.target_samples,
        val_samples=200,
        num_workers=0,
        target_val_samples=args.target_val_samples,
        batch_size=args.batch_size,
        seed=seed,
    )
    dm.setup("fit")
    pl.seed_everything(seed, verbose=False)
    dann_kwargs = {}
    if method == "dann":
        dann_kwargs = dict(
            discriminator_hidden=args.disc_hidden,
            discriminator_depth=args.disc_depth,
            trade_off_on=args.trade_off_on,
        )
    model = DomainAdaptationModule(
        LeNetBackbone(num_features=None if args.flat_features else 128, batch_norm=not args.no_batch_norm),
        head_hidden=tuple(args.head_hidden),
        joint_forward=not args.separate_bn,
        **dann_kwargs,
        method="source_only" if method == "oracle" else method,
        trade_off=trade_off if method in ("dann", "mmd", "coral") else None,  # source_only has no term
        optimizer=lambda params: torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=5e-4),
        lr_annealing=True,
    )
    trainer = pl.Trainer(
        max_steps=args.steps,
        max_epochs=-1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.fit(model, dm)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "val": accuracy(model, dm.val_sets[1]),
        "test": accuracy(model, dm.test_sets[1]),
        "wall": wall,
        "cpu": cpu,
    }


def print_table(args: argparse.Namespace, summary: dict[tuple[str, str], list[dict]]) -> None:
    print()
    print(
        "| shift | method | target test acc, % (mean ± sd) | seeds | gap closed | target val acc, % "
        "| wall s/run | CPU s/run |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for shift in args.shifts:
        means = {m: statistics.mean(r["test"] for r in summary[(shift, m)]) for m in args.methods}
        for method in args.methods:
            runs = summary[(shift, method)]
            tests = [r["test"] for r in runs]
            sd = statistics.stdev(tests) if len(tests) > 1 else 0.0
            gap = "—"
            if {"source_only", "oracle"} <= set(means) and method not in ("source_only", "oracle"):
                denom = means["oracle"] - means["source_only"]
                gap = f"{(means[method] - means['source_only']) / denom:.2f}" if denom > 0 else "n/a"
            val = statistics.mean(r["val"] for r in runs)
            wall = statistics.mean(r["wall"] for r in runs)
            cpu = statistics.mean(r["cpu"] for r in runs)
            print(
                f"| {shift} | {method} | {means[method]:.2f} ± {sd:.2f} | {len(tests)} | {gap} | {val:.2f} "
                f"| {wall:.0f} | {cpu:.0f} |"
            )
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shifts", nargs="+", default=list(SHIFTS), choices=list(SHIFTS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps per run (all methods)")
    parser.add_argument("--batch-size", type=int, default=32, help="per domain")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--trade-off", type=float, default=1.0, help="alignment weight of every method")
    parser.add_argument(
        "--method-trade-off",
        nargs="+",
        default=[],
        metavar="METHOD=VALUE",
        help="per-method override, e.g. dann=0.3 (choose it on the target val column, never on test)",
    )
    parser.add_argument("--source-samples", type=int, default=10000)
    parser.add_argument("--target-samples", type=int, default=10000)
    parser.add_argument("--target-val-samples", type=int, default=1000)
    net = parser.add_argument_group("network (same for every method; defaults = the original benchmark)")
    net.add_argument(
        "--no-batch-norm", action="store_true", help="LeNetBackbone(batch_norm=False), as the paper"
    )
    net.add_argument(
        "--flat-features", action="store_true", help="no FC layer: 768 flattened conv features, as the paper"
    )
    net.add_argument(
        "--head-hidden", nargs="*", type=int, default=[], help="label predictor (paper: 100 100)"
    )
    net.add_argument("--separate-bn", action="store_true", help="joint_forward=False (per-domain BN batches)")
    net.add_argument("--disc-hidden", type=int, default=256, help="DANN discriminator width (paper: 100)")
    net.add_argument("--disc-depth", type=int, default=2, help="DANN discriminator hidden layers (paper: 1)")
    net.add_argument("--trade-off-on", choices=["loss", "reversal"], default="loss", help="DANN trade_off_on")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"# args: {vars(args)}", flush=True)
    trade_offs = {m: args.trade_off for m in METHODS}
    for item in args.method_trade_off:
        method, _, value = item.partition("=")
        if method not in ("dann", "mmd", "coral") or not value:
            parser.error(f"--method-trade-off {item!r}: expected dann=, mmd= or coral=<value>")
        trade_offs[method] = float(value)
    print(f"# trade-offs: { {m: trade_offs[m] for m in ('dann', 'mmd', 'coral')} }", flush=True)
    summary: dict[tuple[str, str], list[dict]] = {}
    for seed in args.seeds:  # seed-major, so an interrupted run still has complete seeds
        for shift in args.shifts:
            for method in args.methods:
                result = run_one(shift, method, seed, args, trade_offs[method])
                summary.setdefault((shift, method), []).append(result)
                print(
                    f"{shift} {method:<11} seed={seed}: target val {result['val']:.2f} "
                    f"test {result['test']:.2f} ({result['wall']:.0f} s wall, {result['cpu']:.0f} s CPU)",
                    flush=True,
                )
        print_table(args, summary)


if __name__ == "__main__":
    main()
