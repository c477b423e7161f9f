"""Benchmark: every domain-adaptation method of lt_transfer against source-only and a train-on-target oracle.

Usage (the commands in docs/benchmarks.md):

    .venv/bin/python scripts/bench_domain_adaptation.py --seeds 0 1 2
    .venv/bin/python scripts/bench_domain_adaptation.py --shift mnist_m:mnist --methods source_only cdan

Methods (``--methods``): ``source_only``; the methods of ``DomainAdaptationModule`` trained on
labelled source + unlabelled target: ``dann``, ``mmd``, ``coral``, ``cdan`` (CDAN+E), ``mcc``,
``dann_mcc`` (DANN + an MCC term of weight 1) and ``self_training``; on the trained source-only
model: ``shot`` (``SourceFreeAdaptationModule(beta=0.3)``, the paper's SHOT, another ``--steps``
steps on unlabelled target batches only) and ``shot_im`` (the same with ``beta=0``, the module's
default: information maximisation alone, the SHOT paper's "SHOT-IM" ablation), ``tent`` and
``adabn`` (test-time callbacks, during prediction of the target splits); ``oracle``: source-only
training on *labelled target* training data.

``self_training`` is FixMatch-style: its target batches carry a strongly augmented view
(``_digit_shifts.strong_digit_augmentation``: affine, intensity flip, per-channel scale and
offset, Cutout; fixed a priori) that is trained on the confident pseudo-labels of the plain
image; ``--no-strong-view`` trains on the plain image alone (which only confirms the model's own
confident predictions).

Every method of a shift gets the same network (LeNetBackbone unless the network flags say
otherwise), data, optimizer (SGD, momentum 0.9, weight decay 5e-4, lr annealed as in the DANN
paper), batch size and number of optimizer steps. Each method runs with its defaults
(``DomainAdaptationModule``'s ``METHOD_DEFAULTS``, trade-off 1, the DANN coefficient schedule with
gamma = 10; SHOT beta 0.3, SHOT-IM beta 0; TENT Adam lr 1e-3, one step per batch of
``--tta-batch-size``), fixed a priori from the papers and *not* tuned on any split; the same
defaults run on every shift. The labelled target validation split (disjoint from the test set) is
reported as the split to tune on; the target test set is only used for the report. "Gap closed" =
(method − source-only) / (oracle − source-only), from the means. ``--shift SOURCE:TARGET`` takes
any pair of the DataModule's domains (``mnist``, ``mnist_m``, ``sklearn_digits``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
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
    sgd,
    shift_name,
    trainer,
)

from lt_transfer import TENT, AdaBN, SourceFreeAdaptationModule
from lt_transfer.data.domain_adaptation import DomainAdaptationDataModule
from lt_transfer.losses import dann_lr_factor
from lt_transfer.modules.domain_adaptation import DomainAdaptationModule

ON_SOURCE_MODEL = ("shot", "shot_im", "tent", "adabn")
#: SHOT's pseudo-label weight beta per benchmark row: the paper's SHOT, and its ablation SHOT-IM
#: (information maximisation alone, the paper's Table 2/3 "SHOT-IM"; SourceFreeAdaptationModule's default).
SHOT_BETA = {"shot": 0.3, "shot_im": 0.0}
METHODS = (*TRAINED, *ON_SOURCE_MODEL, "oracle")


class _Annealing:
    """The DANN paper's lr factor over ``total`` steps (SHOT uses the same schedule)."""

    def __init__(self, total: int) -> None:
        self.total = total

    def __call__(self, step: int) -> float:
        return dann_lr_factor(min(step / self.total, 1.0))


def train_shot(
    args: argparse.Namespace, source_model: DomainAdaptationModule, data: Any, beta: float
) -> torch.nn.Module:
    shot = SourceFreeAdaptationModule(
        copy.deepcopy(source_model),  # SHOT adapts its source model in place
        beta=beta,
        optimizer=sgd(args),
        scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, _Annealing(args.steps)),
        scheduler_interval="step",
    )
    trainer(args, max_steps=args.steps, max_epochs=-1).fit(shot, data)
    return shot


def run_method(
    args: argparse.Namespace,
    data: dict[str, DomainAdaptationDataModule],
    method: str,
    trade_off: float,
    source_model: DomainAdaptationModule | None,
) -> tuple[torch.nn.Module, dict[str, float]]:
    """Train (or adapt) one method and score it on the target val and test splits.

    ``data``: the shift's data module (``"shift"``), its source-free twin (``"source_free"``), its
    twin with strong target views for self-training (``"self_training"``) and the oracle's
    (``"oracle"``: target → target).
    """
    val, test = data["shift"].val_sets[1], data["shift"].test_sets[1]
    start, cpu_start = time.perf_counter(), time.process_time()
    if method in ON_SOURCE_MODEL:
        assert source_model is not None
        if method in SHOT_BETA:
            model = train_shot(args, source_model, data["source_free"], SHOT_BETA[method])
            scores = {"val": accuracy(model, val, args), "test": accuracy(model, test, args)}
        else:
            model = source_model
            make = TENT if method == "tent" else AdaBN
            scores = {"val": accuracy(model, val, args, make()), "test": accuracy(model, test, args, make())}
    else:
        model = build_model(args, method, trade_off)
        train_data = data.get(method, data["shift"])  # the oracle's, self-training's own, or the shift's
        trainer(args, max_steps=args.steps, max_epochs=-1).fit(model, train_data)
        scores = {"val": accuracy(model, val, args), "test": accuracy(model, test, args)}
    scores.update(wall=time.perf_counter() - start, cpu=time.process_time() - cpu_start)
    return model, scores


def run_shift(
    args: argparse.Namespace, shift: tuple[str, str], seed: int, trade_offs: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Every requested method on one shift and seed: {method: {val, test, wall, cpu}}."""
    methods = list(args.methods)
    if any(m in ON_SOURCE_MODEL for m in methods) and "source_only" not in methods:
        methods.insert(0, "source_only")  # the model SHOT, TENT and AdaBN start from
    source, target = shift
    data = {"shift": datamodule(args, source, target, seed)}
    if "self_training" in methods and not args.no_strong_view:
        data["self_training"] = datamodule(args, source, target, seed, strong_view=True)
    if "oracle" in methods:
        data["oracle"] = datamodule(args, target, target, seed)
    if any(m in SHOT_BETA for m in methods):
        data["source_free"] = datamodule(args, source, target, seed, source_free=True)
    results: dict[str, dict[str, float]] = {}
    source_model: DomainAdaptationModule | None = None
    for method in sorted(methods, key=lambda m: m != "source_only"):
        pl.seed_everything(seed, verbose=False)
        trade_off = trade_offs.get(method, args.trade_off)
        model, results[method] = run_method(args, data, method, trade_off, source_model)
        if method == "source_only":
            assert isinstance(model, DomainAdaptationModule)
            source_model = model
        scores = results[method]
        print(
            f"{shift_name(shift)} {method:<13} seed={seed}: target val {scores['val']:.2f} "
            f"test {scores['test']:.2f} ({scores['wall']:.0f} s wall, {scores['cpu']:.0f} s CPU)",
            flush=True,
        )
    return results


def print_table(args: argparse.Namespace, summary: dict[tuple[str, str], list[dict[str, float]]]) -> None:
    print()
    print(
        "| shift | method | target test acc, % (mean ± sd) | seeds | gap closed | target val acc, % "
        "| wall s/run | CPU s/run |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for shift in args.shift:
        name = shift_name(shift)
        done = [m for m in METHODS if (name, m) in summary]
        means = {m: statistics.mean(r["test"] for r in summary[(name, m)]) for m in done}
        for method in done:
            runs = summary[(name, method)]
            tests = [r["test"] for r in runs]
            sd = statistics.stdev(tests) if len(tests) > 1 else 0.0
            gap = "—"
            if {"source_only", "oracle"} <= set(means) and method not in ("source_only", "oracle"):
                denominator = means["oracle"] - means["source_only"]
                closed = (means[method] - means["source_only"]) / denominator if denominator > 0 else None
                gap = "n/a" if closed is None else f"{closed:.2f}"
            val = statistics.mean(r["val"] for r in runs)
            wall = statistics.mean(r["wall"] for r in runs)
            cpu = statistics.mean(r["cpu"] for r in runs)
            print(
                f"| {name} | {method} | {means[method]:.2f} ± {sd:.2f} | {len(tests)} | {gap} | {val:.2f} "
                f"| {wall:.0f} | {cpu:.0f} |"
            )
    print(flush=True)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    add_shift_arguments(parser)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps per run (all methods)")
    parser.add_argument("--batch-size", type=int, default=32, help="per domain")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--trade-off", type=float, default=1.0, help="target-term weight of every method")
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
    parser.add_argument(
        "--no-strong-view",
        action="store_true",
        help="self_training without FixMatch's strong view (the target image serves as both views)",
    )
    parser.add_argument("--tta-batch-size", type=int, default=128, help="TENT/AdaBN prediction batch")
    add_network_arguments(parser)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    args = parser.parse_args()
    print_header(args)
    trade_offs: dict[str, float] = {}
    for item in args.method_trade_off:
        method, _, value = item.partition("=")
        if method not in TRAINED or method == "source_only" or not value:
            parser.error(f"--method-trade-off {item!r}: expected METHOD=VALUE for one of {list(TRAINED)[1:]}")
        trade_offs[method] = float(value)
    print(f"# trade-offs: default {args.trade_off}, overrides {trade_offs}", flush=True)
    summary: dict[tuple[str, str], list[dict[str, float]]] = {}
    for seed in args.seeds:  # seed-major, so an interrupted run still has complete seeds
        for shift in args.shift:
            for method, result in run_shift(args, shift, seed, trade_offs).items():
                summary.setdefault((shift_name(shift), method), []).append(result)
        print_table(args, summary)


if __name__ == "__main__":
    main()
