"""Benchmark: fine-tuning that keeps what the pretrained model knows (issue 16).

ImageNet MobileNetV2 (the shipped torchvision weights) fine-tuned on few-label MNIST and
Fashion-MNIST (5, 20 and 100 labels per class), and optionally (``--text``) MiniLM on airline
tweets with 50 labels per class (positive vs negative). Rows:

* ``plain``: full fine-tuning (TransferClassifier / TextClassifier, backbone lr x0.1, AdamW);
* ``l2sp``: + L2SP(alpha, beta=0.01), AdamW weight decay 0 (L2-SP replaces it);
* ``delta``: + DELTA(alpha) on the backbone's last stage, channel attention from 4 training
  batches (images only: a transformer has no feature maps);
* ``bss``: + BSS(eta, k=1);
* ``wise``: WiSE-FT, the ``plain`` runs' weights interpolated toward the pretrained backbone;
* ``progressive``: ProgressiveUnfreezing, the first group unfrozen at a fraction of the epochs,
  the rest gradually over the next 40% of them;
* ``combination``: the two best of l2sp / delta / bss / progressive (by validation) together,
  each at its chosen strength; ``combination+wise``: its weights interpolated as in ``wise``.

Strengths are chosen **on the validation split** from a small grid per method
(:data:`GRIDS`), separately for each target and label count, by the mean validation accuracy
over the seeds; the table reports the **test** accuracy (mean ± sd over the seeds) at the chosen
strength, and how far the weights moved: the relative L2 distance ``||w - w0|| / ||w0||`` of the
backbone's parameters from the pretrained ones (mean over seeds). The verdict line checks the
issue's target (best row, chosen on validation, >= plain + 1 point at 5 and 20 labels per class
on both image targets) and says where it is not met.

Fashion-MNIST is read from the IDX files of the Debian package ``dataset-fashion-mnist``
(``apt-get install dataset-fashion-mnist``); without them that target is skipped with a message.

Cost: a run trains ``max(--epochs, enough epochs for --min-steps steps)``: with the defaults
100 steps at 5 labels/class, 105 at 20 and 320 at 100. Per target and label count there are
13 runs per seed (plain, 3 + 3 + 3 + 2 grid points, the combination), about 41,000 MobileNetV2
steps (32 px, batch 32) for the two image targets with 3 seeds: hours on a 2-core CPU at
0.25-0.7 s per step, plus evaluation (WiSE-FT sweeps on the plain and combination runs). Use
``--targets``/``--labels``/``--methods`` to run parts of it in separate processes.

Usage::

    python scripts/bench_regularizers.py --fast --text          # smoke run, a few minutes
    python scripts/bench_regularizers.py --text --out runs.json # the full benchmark (hours on a CPU)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from _common import quiet_cpu_trainer  # noqa: E402

from lt_transfer import TextClassifier, TransferClassifier  # noqa: E402
from lt_transfer.callbacks import (  # noqa: E402
    BSS,
    DELTA,
    L2SP,
    ProgressiveUnfreezing,
    interpolation_sweep,
    pretrained_state,
)
from lt_transfer.data import DigitsDataModule, FashionMNISTDataModule  # noqa: E402
from lt_transfer.data.fashion_mnist import FASHION_MNIST_ROOT  # noqa: E402
from lt_transfer.data.text import TextClassificationDataModule, TextSplit  # noqa: E402
from lt_transfer.data.tweets import tweet_splits  # noqa: E402
from lt_transfer.resources import MINILM_L6_V2, MOBILENET_V2_IMAGENET  # noqa: E402

IMAGE_TARGETS = ("mnist", "fashion_mnist")
TEXT_TARGET = "tweets"
REGULARIZERS = ("l2sp", "delta", "bss", "progressive")
METHODS = ("plain", *REGULARIZERS, "wise", "combination")
#: The strengths tried per method (alpha of L2SP / DELTA, eta of BSS, first-unfreeze fraction).
GRIDS: dict[str, list[float]] = {
    "l2sp": [0.01, 0.1, 1.0],
    "delta": [0.001, 0.01, 0.1],
    "bss": [0.0001, 0.001, 0.01],
    "progressive": [0.2, 0.4],
}
FAST_GRIDS: dict[str, list[float]] = {"l2sp": [0.1], "delta": [0.01], "bss": [0.001], "progressive": [0.2]}
STRENGTH_NAMES = {"l2sp": "alpha", "delta": "alpha", "bss": "eta", "progressive": "start"}


@dataclass
class RunResult:
    """One training run (one seed) and its evaluation."""

    target: str
    labels: int
    method: str
    parts: dict[str, float]
    seed: int
    val: float
    test: float
    moved: float
    seconds: float
    steps: int
    wise: dict[str, list[float]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ data
def image_data(target: str, labels: int, seed: int, args: argparse.Namespace) -> pl.LightningDataModule:
    options = dict(
        image_size=args.image_size,
        labels_per_class=labels,
        val_samples=args.val_samples,
        test_samples=args.test_samples,
        batch_size=args.batch_size,
        seed=seed,
    )
    if target == "mnist":
        return DigitsDataModule("mnist", **options)
    return FashionMNISTDataModule(args.fashion_root, **options)


def _per_class(split: TextSplit, count: int, seed: int) -> TextSplit:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor(split.labels)
    keep: list[int] = []
    for label in labels.unique().tolist():
        indices = (labels == label).nonzero().flatten()
        keep += indices[torch.randperm(len(indices), generator=generator)[:count]].tolist()
    return split.subset(sorted(keep))


def text_data(labels: int, seed: int, args: argparse.Namespace) -> pl.LightningDataModule:
    parts = tweet_splits("airline", seed=0)  # the same disjoint train / val / test tweets for every seed
    train = _per_class(parts["train"], labels, seed)
    val = parts["val"].sample(args.val_samples, seed)
    test = parts["test"].sample(args.test_samples, seed)
    return TextClassificationDataModule(
        MINILM_L6_V2,
        train_texts=train.texts,
        train_labels=train.labels,
        val_texts=val.texts,
        val_labels=val.labels,
        test_texts=test.texts,
        test_labels=test.labels,
        num_classes=2,
        max_length=args.max_length,
        batch_size=args.text_batch_size,
    )


# ----------------------------------------------------------------------------------- model
def make_model(target: str, weight_decay: float, args: argparse.Namespace) -> pl.LightningModule:
    if target == TEXT_TARGET:
        optimizer = partial(torch.optim.AdamW, lr=args.text_lr, weight_decay=weight_decay)
        return TextClassifier("hf/" + MINILM_L6_V2, num_classes=2, pooling="mean", optimizer=optimizer)
    optimizer = partial(torch.optim.AdamW, lr=args.lr, weight_decay=weight_decay)
    return TransferClassifier(
        "torchvision/mobilenet_v2", num_classes=10, weights=MOBILENET_V2_IMAGENET, optimizer=optimizer
    )


def callbacks_for(parts: dict[str, float], model: pl.LightningModule, epochs: int) -> list[pl.Callback]:
    callbacks: list[pl.Callback] = []
    if "progressive" in parts:
        groups = len(model.backbone.layer_groups())
        start = min(epochs - 1, int(round(parts["progressive"] * epochs)))
        span = max(1, math.ceil(0.4 * epochs))
        callbacks.append(
            ProgressiveUnfreezing(
                unfreeze_at_epoch=start, every_n_epochs=1, groups_per_step=math.ceil(groups / span)
            )
        )
    if "l2sp" in parts:
        callbacks.append(L2SP(alpha=parts["l2sp"], beta=0.01))
    if "delta" in parts:
        callbacks.append(DELTA(alpha=parts["delta"], attention_batches=4))
    if "bss" in parts:
        callbacks.append(BSS(eta=parts["bss"], k=1))
    return callbacks


def _moved(model: pl.LightningModule, start: dict[str, torch.Tensor]) -> float:
    moved = total = 0.0
    with torch.no_grad():
        for name, param in model.backbone.named_parameters(prefix="backbone"):
            moved += float((param.float() - start[name].float()).pow(2).sum())
            total += float(start[name].float().pow(2).sum())
    return math.sqrt(moved / total)


def run_one(
    target: str, labels: int, method: str, parts: dict[str, float], seed: int, args: argparse.Namespace
) -> RunResult:
    pl.seed_everything(seed, verbose=False)
    data = text_data(labels, seed, args) if target == TEXT_TARGET else image_data(target, labels, seed, args)
    model = make_model(target, 0.0 if "l2sp" in parts else args.weight_decay, args)
    data.setup("fit")
    steps_per_epoch = math.ceil(len(data.train_dataloader().dataset) / data.train_dataloader().batch_size)
    epochs = max(args.epochs, math.ceil(args.min_steps / steps_per_epoch))
    start = pretrained_state(model)
    trainer = quiet_cpu_trainer(
        max_epochs=epochs,
        callbacks=callbacks_for(parts, model, epochs),
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    began = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - began
    moved = _moved(model, start)
    wise = method in ("plain", "combination")
    alphas = args.wise_alphas if wise else [1.0]
    sweep = interpolation_sweep(model, data, alphas, start, apply="finetuned")
    at_one = sweep.at(1.0)
    return RunResult(
        target,
        labels,
        method,
        dict(parts),
        seed,
        100 * at_one["val"],
        100 * at_one["test"],
        moved,
        seconds,
        trainer.global_step,
        {"alphas": alphas, "val": [100 * v for v in sweep.accuracy["val"]],
         "test": [100 * v for v in sweep.accuracy["test"]]} if wise else {},
    )  # fmt: skip


# ------------------------------------------------------------------------------- selection
@dataclass
class Row:
    """A table cell: the chosen strength and the test accuracy of its seeds."""

    method: str
    choice: str
    val: float
    tests: list[float]
    moved: float

    @property
    def test(self) -> float:
        return statistics.mean(self.tests)

    def cell(self) -> str:
        choice = f" [{self.choice}]" if self.choice else ""
        spread = f"± {statistics.stdev(self.tests):.1f}" if len(self.tests) > 1 else "(1 seed)"
        return f"{self.test:.1f} {spread}{choice}, moved {self.moved:.3g}"


def _strength_label(parts: dict[str, float]) -> str:
    return ", ".join(f"{name} {STRENGTH_NAMES[name]}={value:g}" for name, value in parts.items())


def best_row(method: str, candidates: dict[str, list[RunResult]]) -> Row:
    """The candidate (strength) with the best mean validation accuracy over the seeds."""
    label, runs = max(candidates.items(), key=lambda item: statistics.mean(r.val for r in item[1]))
    return Row(
        method,
        label,
        statistics.mean(r.val for r in runs),
        [r.test for r in runs],
        statistics.mean(r.moved for r in runs),
    )


def wise_row(method: str, runs: list[RunResult]) -> Row:
    """WiSE-FT on ``runs``: the alpha with the best mean validation accuracy."""
    alphas = runs[0].wise["alphas"]
    vals = [statistics.mean(r.wise["val"][i] for r in runs) for i in range(len(alphas))]
    best = max(range(len(alphas)), key=lambda i: (vals[i], alphas[i]))
    return Row(
        method,
        f"alpha={alphas[best]:g}",
        vals[best],
        [r.wise["test"][best] for r in runs],
        alphas[best] * statistics.mean(r.moved for r in runs),  # interpolation is linear in the weights
    )


def run_setting(target: str, labels: int, args: argparse.Namespace, log: list[RunResult]) -> list[Row]:
    grids = FAST_GRIDS if args.fast else GRIDS
    methods = [m for m in args.methods if not (target == TEXT_TARGET and m == "delta")]

    def runs_for(method: str, parts: dict[str, float]) -> list[RunResult]:
        results = []
        for seed in args.seeds:
            result = run_one(target, labels, method, parts, seed, args)
            log.append(result)
            print(
                f"  {target} {labels}/class {method:12s} {_strength_label(parts) or '-':38s} seed {seed}: "
                f"val {result.val:5.1f} test {result.test:5.1f} moved {result.moved:.3g} "
                f"({result.steps} steps, {result.seconds:.0f} s)",
                flush=True,
            )
            results.append(result)
        return results

    rows: list[Row] = []
    plain = runs_for("plain", {})
    rows.append(best_row("plain", {"": plain}))
    chosen: dict[str, tuple[float, Row]] = {}
    for method in REGULARIZERS:
        if method not in methods:
            continue
        candidates = {}
        for value in grids[method]:
            candidates[f"{STRENGTH_NAMES[method]}={value:g}"] = runs_for(method, {method: value})
        row = best_row(method, candidates)
        rows.append(row)
        chosen[method] = (float(row.choice.split("=")[1]), row)
    if "wise" in methods:
        rows.append(wise_row("wise", plain))
    if "combination" in methods and len(chosen) >= 2:
        top = sorted(chosen, key=lambda m: chosen[m][1].val, reverse=True)[:2]
        parts = {m: chosen[m][0] for m in top}
        combo = runs_for("combination", parts)
        rows.append(best_row("combination", {_strength_label(parts): combo}))
        rows.append(wise_row("combination+wise", combo))
    if target == TEXT_TARGET and "delta" in args.methods:
        rows.append(
            Row("delta", "a transformer has no convolutional feature maps", math.nan, [math.nan], math.nan)
        )
    return rows


# ---------------------------------------------------------------------------------- report
def print_table(target: str, by_labels: dict[int, list[Row]]) -> None:
    labels = sorted(by_labels)
    print(
        f"\n### {target}: test accuracy (%), mean ± sd over seeds [strength chosen on val], "
        "moved ||Δw||/||w0||\n"
    )
    print("| method | " + " | ".join(f"{n} labels/class" for n in labels) + " |")
    print("|---|" + "---|" * len(labels))
    methods = list(dict.fromkeys(row.method for rows in by_labels.values() for row in rows))
    for method in methods:
        cells = []
        for n in labels:
            row = next((r for r in by_labels[n] if r.method == method), None)
            if row is None:
                cells.append("not run")
            else:
                cells.append(f"n/a ({row.choice})" if math.isnan(row.val) else row.cell())
        print(f"| {method} | " + " | ".join(cells) + " |")


def verdicts(results: dict[str, dict[int, list[Row]]]) -> None:
    print(
        "\n### Target: best row (chosen on validation) beats plain by >= 1 point at 5 and 20 labels/class\n"
    )
    for target in IMAGE_TARGETS:
        for labels in (5, 20):
            rows = results.get(target, {}).get(labels)
            if not rows:
                print(f"- {target}, {labels} labels/class: not run")
                continue
            plain = next(r for r in rows if r.method == "plain")
            others = [r for r in rows if r.method != "plain" and not math.isnan(r.val)]
            if not others:
                print(f"- {target}, {labels} labels/class: no regulariser run")
                continue
            best = max(others, key=lambda r: r.val)
            gap = best.test - plain.test
            verdict = "met" if gap >= 1.0 else "NOT met"
            print(
                f"- {target}, {labels} labels/class: best on val = {best.method} [{best.choice}]: test "
                f"{best.test:.1f} vs plain {plain.test:.1f} ({gap:+.1f} points): {verdict}"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", nargs="+", default=list(IMAGE_TARGETS), choices=list(IMAGE_TARGETS))
    parser.add_argument(
        "--labels", nargs="+", type=int, default=[5, 20, 100], help="labels per class (images)"
    )
    parser.add_argument("--text", action="store_true", help="also MiniLM on airline tweets (slower)")
    parser.add_argument("--text-labels", type=int, default=50, help="labels per class (tweets)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run (at least --min-steps steps)")
    parser.add_argument("--min-steps", type=int, default=100, help="small label counts train this many steps")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="head lr of the image runs (backbone x0.1)")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (0 with L2SP)")
    parser.add_argument("--val-samples", type=int, default=1000, help="validation samples (strength choice)")
    parser.add_argument("--test-samples", type=int, default=2000)
    parser.add_argument("--wise-alphas", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--text-lr", type=float, default=1e-4)
    parser.add_argument("--text-batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument(
        "--fashion-root", default=FASHION_MNIST_ROOT, help="folder of the Fashion-MNIST IDX files"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--out", default=None, help="write every run as JSON here")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="smoke preset, overriding --labels, --seeds, --epochs, --min-steps, the sample counts, "
        "--wise-alphas, --text-labels and the grids: 5 labels/class (tweets: 8), seed 0, >= 4 steps, one "
        "strength per method, 100 val / 200 test samples",
    )
    args = parser.parse_args()
    if args.fast:
        args.labels, args.seeds, args.epochs, args.min_steps = [5], [0], 1, 4
        args.val_samples, args.test_samples, args.wise_alphas = 100, 200, [0.0, 0.5, 1.0]
        args.text_labels = 8
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    print(f"# bench_regularizers  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"lightning {pl.__version__}, {torch.get_num_threads()} torch thread(s)"
    )
    print(f"# args: {vars(args)}")
    print(f"# grids: {FAST_GRIDS if args.fast else GRIDS}")
    targets = list(args.targets)
    if "fashion_mnist" in targets and not (Path(args.fashion_root) / "train-images-idx3-ubyte.gz").exists():
        if not (Path(args.fashion_root) / "train-images-idx3-ubyte").exists():
            print(
                f"# fashion_mnist skipped: no IDX files in {args.fashion_root} (apt-get install "
                "dataset-fashion-mnist, or --fashion-root <folder>)"
            )
            targets.remove("fashion_mnist")
    settings = [(t, n) for t in targets for n in args.labels]
    if args.text:
        settings.append((TEXT_TARGET, args.text_labels))
    began = time.perf_counter()
    log: list[RunResult] = []
    results: dict[str, dict[int, list[Row]]] = {}
    for target, labels in settings:
        print(f"\n## {target}, {labels} labels per class", flush=True)
        results.setdefault(target, {})[labels] = run_setting(target, labels, args, log)
    for target, by_labels in results.items():
        print_table(target, by_labels)
    verdicts(results)
    print(f"\ntotal wall time {(time.perf_counter() - began) / 60:.1f} min, {len(log)} training runs")
    if args.out:
        Path(args.out).write_text(json.dumps([asdict(r) for r in log], indent=1))
        print(f"runs written to {args.out}")


if __name__ == "__main__":
    main()
