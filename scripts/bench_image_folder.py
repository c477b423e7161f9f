"""Benchmark: your own images through ImageFolderDataModule (issue 13).

Writes a real image folder (MNIST digits as PNG files: a few labelled images per class for
training, a validation and a test folder), then, through :class:`ImageFolderDataModule` with the
preprocessing of the chosen weights:

1. **accuracy**: ImageNet MobileNetV2 (and, with ``--timm``, ImageNet EfficientNet-Lite0 through
   timm) fine-tuned ``frozen`` (head only), ``full`` and ``progressive`` (ProgressiveUnfreezing,
   the schedule chosen earlier on MNIST validation: 4 groups per epoch from epoch 1, backbone lr
   x0.3), several seeds, test accuracy mean +- sd;
2. **decoding throughput**: images/s of the training loader (PNG decode + preprocessing) with 0
   and 2 workers, measured side by side in one run;
3. **FeatureCache**: time per head-only epoch with and without the cache (frozen MobileNetV2).

Prints markdown tables and the torch thread count.

    python scripts/bench_image_folder.py [--labels-per-class 20] [--epochs 15] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import torch
from _common import quiet_cpu_trainer
from PIL import Image

from lt_transfer import FeatureCache, ImageFolderDataModule, ProgressiveUnfreezing, TransferClassifier
from lt_transfer.data.digits import few_labels
from lt_transfer.data.sources import ImageSplit, load_mnist
from lt_transfer.resources import EFFICIENTNET_LITE0_IMAGENET, MOBILENET_V2_IMAGENET

BACKBONES = {
    "mobilenet_v2": ("torchvision/mobilenet_v2", MOBILENET_V2_IMAGENET),
    "efficientnet_lite0": ("timm/efficientnet_lite0", EFFICIENTNET_LITE0_IMAGENET),
}


def write_folder(split: ImageSplit, folder: Path) -> None:
    for i, (image, label) in enumerate(zip(split.images, split.labels.tolist(), strict=True)):
        target = folder / f"digit_{label}"
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.numpy()).save(target / f"{i:05d}.png")


def head(split: ImageSplit, n: int) -> ImageSplit:
    return ImageSplit(split.images[:n], split.labels[:n])


def write_dataset(root: Path, labels_per_class: int, val_samples: int, test_samples: int, seed: int) -> None:
    mnist = load_mnist()
    write_folder(few_labels(mnist.train, labels_per_class, seed), root / "train")
    write_folder(head(mnist.val, val_samples), root / "val")
    write_folder(head(mnist.test, test_samples), root / "test")


def data_module(
    root: Path, backbone: str, args: argparse.Namespace, **overrides: object
) -> ImageFolderDataModule:
    spec, weights = BACKBONES[backbone]
    options = dict(
        backbone=spec,
        weights=weights,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=0,
        augment="none",
        seed=0,
    )
    options.update(overrides)
    return ImageFolderDataModule(str(root), **options)


def trainer(epochs: int, callbacks: list[pl.Callback] | None = None, **overrides: object) -> pl.Trainer:
    options = dict(
        max_epochs=epochs,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=max(epochs, 1),
        callbacks=callbacks or [],
    )
    return quiet_cpu_trainer(**{**options, **overrides})


def accuracy_run(root: Path, backbone: str, mode: str, seed: int, args: argparse.Namespace) -> float:
    pl.seed_everything(seed, verbose=False)
    spec, weights = BACKBONES[backbone]
    model = TransferClassifier(
        spec,
        num_classes=10,
        weights=weights,
        finetune="frozen" if mode == "frozen" else "full",
        backbone_lr_scale=None if mode == "progressive" else args.backbone_lr_scale,
        optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=0.01),
    )
    callbacks: list[pl.Callback] = []
    if mode == "progressive":
        schedule = dict(unfreeze_at_epoch=1, every_n_epochs=1, groups_per_step=4)
        callbacks.append(ProgressiveUnfreezing(**schedule, backbone_lr_scale=args.backbone_lr_scale))
    data = data_module(root, backbone, args, augment=args.augment, seed=seed)
    run = trainer(args.epochs, callbacks)
    run.fit(model, data)
    (result,) = run.test(model, data, verbose=False)
    return float(result["test/acc"])


def throughput(root: Path, workers: int, args: argparse.Namespace) -> float:
    """Images per second of one pass over the training + validation folders (decode + preprocess)."""
    data = data_module(root, "mobilenet_v2", args, num_workers=workers, persistent_workers=False)
    data.setup("fit")
    loaders = [data.train_dataloader(), data.val_dataloader()]
    next(iter(loaders[0]))  # warm-up: start workers, fill caches
    start, images = time.perf_counter(), 0
    for loader in loaders:
        for x, _ in loader:
            images += len(x)
    return images / (time.perf_counter() - start)


def cache_epochs(root: Path, cached: bool, args: argparse.Namespace) -> list[float]:
    """Seconds of each of ``--cache-epochs`` frozen (head-only) epochs, with or without FeatureCache."""
    pl.seed_everything(0, verbose=False)
    model = TransferClassifier(
        "torchvision/mobilenet_v2", num_classes=10, weights=MOBILENET_V2_IMAGENET, finetune="frozen"
    )
    times: list[float] = []

    class EpochTimer(pl.Callback):
        def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            times.append(time.perf_counter() - self.start)

    callbacks: list[pl.Callback] = [EpochTimer()] + ([FeatureCache(cache_val=False)] if cached else [])
    data = data_module(root / "cache", "mobilenet_v2", args, batch_size=args.batch_size)
    trainer(args.cache_epochs, callbacks, limit_val_batches=0).fit(model, data)
    return times


def main() -> None:
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lt_transfer").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels-per-class", type=int, default=20)
    parser.add_argument("--val-samples", type=int, default=1000)
    parser.add_argument("--test-samples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--backbone-lr-scale", type=float, default=0.3)
    parser.add_argument("--augment", default="none")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=["frozen", "full", "progressive"])
    parser.add_argument("--timm", action="store_true", help="also EfficientNet-Lite0 through timm")
    parser.add_argument("--throughput-samples", type=int, default=2000)
    parser.add_argument("--cache-samples", type=int, default=2000)
    parser.add_argument("--cache-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sections", nargs="+", default=["accuracy", "throughput", "cache"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        mnist = load_mnist()
        if "accuracy" in args.sections:
            started = time.perf_counter()
            backbones = ["mobilenet_v2"] + (["efficientnet_lite0"] if args.timm else [])
            print(
                f"\n## Accuracy: MNIST as PNG folders, {args.labels_per_class} labels per class, "
                f"{args.epochs} epochs, {args.image_size} px, test on {args.test_samples} images, "
                f"seeds {args.seeds}\n"
            )
            print("| backbone | mode | test accuracy (mean ± sd) | per seed |")
            print("|---|---|---|---|")
            for seed in args.seeds:
                sizes = (args.labels_per_class, args.val_samples, args.test_samples)
                write_dataset(root / f"seed{seed}", *sizes, seed)
            for backbone in backbones:
                for mode in args.modes:
                    scores = [accuracy_run(root / f"seed{s}", backbone, mode, s, args) for s in args.seeds]
                    spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
                    per_seed = ", ".join(f"{100 * s:.1f}" for s in scores)
                    mean = 100 * statistics.mean(scores)
                    print(f"| {backbone} | {mode} | {mean:.1f} ± {100 * spread:.1f} | {per_seed} |")
            print(f"\n(accuracy section: {time.perf_counter() - started:.0f} s)")
        if "throughput" in args.sections:
            n = args.throughput_samples
            write_folder(head(mnist.train, n), root / "speed" / "train")
            write_folder(head(mnist.val, n // 4), root / "speed" / "val")
            rates = {workers: throughput(root / "speed", workers, args) for workers in (0, 2)}
            files = n + n // 4
            size = f"{args.image_size} px, batch {args.batch_size}"
            print(f"\n## Decoding throughput ({files} PNG files, {size})\n")
            print("| workers | images/s |")
            print("|---|---|")
            for workers, rate in rates.items():
                print(f"| {workers} | {rate:.0f} |")
            print(f"\nratio 2 workers / 0 workers: {rates[2] / rates[0]:.2f}")
        if "cache" in args.sections:
            n = args.cache_samples
            write_folder(head(mnist.train, n), root / "cache" / "train")
            write_folder(head(mnist.val, 100), root / "cache" / "val")
            plain = cache_epochs(root, cached=False, args=args)
            cached = cache_epochs(root, cached=True, args=args)
            print(f"\n## FeatureCache: frozen MobileNetV2, {n} PNG training images, {args.image_size} px\n")
            print("| epoch | without cache (s) | with cache (s) | ratio |")
            print("|---|---|---|---|")
            for epoch, (a, b) in enumerate(zip(plain, cached, strict=True)):
                print(f"| {epoch} | {a:.1f} | {b:.1f} | {a / b:.1f}x |")


if __name__ == "__main__":
    main()
