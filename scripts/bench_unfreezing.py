"""Benchmark: ProgressiveUnfreezing vs Lightning's BackboneFinetuning vs plain fine-tuning.

Three sections, all measured in one run:

1. **Speed and memory** (ImageNet MobileNetV2, 32×32 inputs, batch 32, one CPU thread): median
   step time of the frozen phase (epoch 0) and of the unfrozen phase (epoch 1) and the peak
   resident memory after each phase, for ``ProgressiveUnfreezing``, ``BackboneFinetuning``
   (``train_bn=False`` and its default ``train_bn=True``; note that its ``freeze_before_training``
   leaves BatchNorm parameters trainable either way, so its frozen phase still runs backward
   through the backbone) and plain full fine-tuning. Each method runs in a fresh subprocess
   (peak RSS is per process), in ``--rounds`` interleaved rounds. The callback's own per-step
   cost is also timed directly (its per-batch hook), since end-to-end step ratios on a shared
   machine are noisier than 3%.
2. **Correctness**: each failure mode of the issue, pass/fail for ours and ``BackboneFinetuning``
   on a tiny model (DDP with ``ddp_spawn`` on 2 CPU processes), and for ``finetuning-scheduler``
   when it is importable (it is not a dependency: install it in a scratch location, see below).
3. **Accuracy** on few-label MNIST (20 labels per class, 32×32) from the shipped ImageNet
   MobileNetV2 weights: head only vs full fine-tuning vs progressive unfreezing, same epochs,
   same optimizer, mean ± std over seeds, on ``--test-samples`` MNIST test images.

    pip install --no-deps --target /tmp/fts_env finetuning-scheduler==2.14.1   # optional
    PYTHONPATH=/tmp/fts_env python scripts/bench_unfreezing.py [--rounds 2] [--seeds 0 1 2] [--epochs 12]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import lightning.pytorch as pl
import torch
from _common import quiet_cpu_trainer
from lightning.pytorch.callbacks import BackboneFinetuning, ModelCheckpoint
from torch import nn
from torch.optim import lr_scheduler as sched
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer import DigitsDataModule, ProgressiveUnfreezing, TransferClassifier
from lt_transfer.resources import MOBILENET_V2_IMAGENET

warnings.filterwarnings("ignore")
SPEED_METHODS = ["progressive", "backbone_finetuning", "backbone_finetuning_train_bn", "full"]


def _quiet_trainer(**kwargs) -> pl.Trainer:
    return quiet_cpu_trainer(**{"devices": 1, **kwargs})


# ---------------------------------------------------------------------------------- speed
class StepTimer(pl.Callback):
    def __init__(self, skip: int = 3) -> None:
        self.skip = skip
        self.times: dict[int, list[float]] = {}
        self.peak_kb: dict[int, int] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.skip:
            self.times.setdefault(trainer.current_epoch, []).append(time.perf_counter() - self._start)

    def on_train_epoch_end(self, trainer, pl_module):
        self.peak_kb[trainer.current_epoch] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class TimedProgressive(ProgressiveUnfreezing):
    """Accumulates the time spent in the per-batch hook (the only per-step work of the callback)."""

    hook_seconds = 0.0
    hook_calls = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        start = time.perf_counter()
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self.hook_seconds += time.perf_counter() - start
        self.hook_calls += 1


def speed_worker(method: str, steps: int) -> dict:
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(32 * (steps + 3), 3, 32, 32, generator=generator),
        torch.randint(0, 10, (32 * (steps + 3),), generator=generator),
    )
    model = TransferClassifier(
        "torchvision/mobilenet_v2",
        num_classes=10,
        weights=MOBILENET_V2_IMAGENET,
        finetune="full",
        backbone_lr_scale=0.1,
    )
    timer = StepTimer()
    callbacks: list[pl.Callback] = [timer]
    progressive = None
    if method == "progressive":
        progressive = TimedProgressive(unfreeze_at_epoch=1, backbone_lr_scale=0.1)
        callbacks.insert(0, progressive)
    elif method.startswith("backbone_finetuning"):
        callbacks.insert(
            0, BackboneFinetuning(unfreeze_backbone_at_epoch=1, train_bn=method.endswith("train_bn"))
        )
    trainer = _quiet_trainer(max_epochs=2, callbacks=callbacks, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, DataLoader(data, batch_size=32, shuffle=False))
    result = {
        "frozen_step_s": statistics.median(timer.times[0]),
        "unfrozen_step_s": statistics.median(timer.times[1]),
        "frozen_times": timer.times[0],
        "unfrozen_times": timer.times[1],
        "frozen_peak_mb": timer.peak_kb[0] / 1024,
        "unfrozen_peak_mb": timer.peak_kb[1] / 1024,
    }
    if progressive is not None:
        result["hook_us_per_step"] = 1e6 * progressive.hook_seconds / max(1, progressive.hook_calls)
    return result


def run_speed(rounds: int, steps: int) -> dict[str, dict]:
    collected: dict[str, list[dict]] = {m: [] for m in SPEED_METHODS}
    for _ in range(rounds):
        for method in SPEED_METHODS:
            out = subprocess.run(
                [sys.executable, __file__, "--speed-worker", method, "--steps", str(steps)],
                capture_output=True,
                text=True,
                check=True,
            )
            collected[method].append(json.loads(out.stdout.strip().splitlines()[-1]))
    summary = {}
    for method, runs in collected.items():
        summary[method] = {
            "frozen_step_s": statistics.median([t for r in runs for t in r["frozen_times"]]),
            "unfrozen_step_s": statistics.median([t for r in runs for t in r["unfrozen_times"]]),
            "frozen_min_s": min(t for r in runs for t in r["frozen_times"]),
            "unfrozen_min_s": min(t for r in runs for t in r["unfrozen_times"]),
            "frozen_peak_mb": statistics.median([r["frozen_peak_mb"] for r in runs]),
            "unfrozen_peak_mb": statistics.median([r["unfrozen_peak_mb"] for r in runs]),
        }
        if "hook_us_per_step" in runs[0]:
            summary[method]["hook_us_per_step"] = statistics.median([r["hook_us_per_step"] for r in runs])
    return summary


# ---------------------------------------------------------------------------- correctness
class Tiny(pl.LightningModule):
    """A module with ``backbone``/``head`` attributes (what BackboneFinetuning requires)."""

    def __init__(self, scheduler: str | None = None, head_bn: bool = False, val: bool = False) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.backbone = nn.Sequential(
            nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU()
        )
        self.head = nn.Sequential(nn.BatchNorm1d(8), nn.Linear(8, 2)) if head_bn else nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("score", 1.0, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=0.05)
        if self.scheduler is None:
            return optimizer
        if self.scheduler == "lambda":
            return [optimizer], [sched.LambdaLR(optimizer, lambda e: 0.5**e)]
        if self.scheduler == "step":
            return [optimizer], [sched.StepLR(optimizer, 1, 0.5)]
        if self.scheduler == "onecycle":
            scheduler = sched.OneCycleLR(optimizer, max_lr=0.05, total_steps=40)
            return [optimizer], [{"scheduler": scheduler, "interval": "step"}]
        raise ValueError(self.scheduler)


class TinyVal(Tiny):
    """Tiny with a validation loss (finetuning-scheduler's checkpoint callback monitors one)."""

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))


def _tiny_data(n: int = 32) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.randn(n, 4, generator=generator), torch.randint(0, 2, (n,), generator=generator)
    )


def _fts_available() -> bool:
    try:
        import finetuning_scheduler  # noqa: F401
    except ImportError:
        return False
    return True


def _setup(kind: str, max_epochs: int, unfreeze_at: int = 1, ckpt_dir: Path | None = None) -> tuple:
    """Model class, callbacks, val loader and trainer kwargs for one method on the tiny model."""
    if kind == "ours":
        return Tiny, [ProgressiveUnfreezing(unfreeze_at_epoch=unfreeze_at, backbone_lr_scale=0.1)], None, {}
    if kind == "backbone_finetuning":
        return Tiny, [BackboneFinetuning(unfreeze_backbone_at_epoch=unfreeze_at)], None, {}
    import logging

    from finetuning_scheduler import FinetuningScheduler, FTSCheckpoint

    # phase 0: head; phase 1 (from epoch `unfreeze_at`, at least 1): backbone at 0.1 x the head's lr
    schedule = {
        0: {"params": ["head.*"], "max_transition_epoch": max(1, unfreeze_at)},
        1: {"params": ["backbone.*"], "lr": 0.005, "max_transition_epoch": max_epochs},
    }
    fts = FinetuningScheduler(
        ft_schedule=schedule, epoch_transitions_only=True, restore_best=False, logging_level=logging.ERROR
    )
    directory = ckpt_dir or Path(tempfile.mkdtemp())
    saver = FTSCheckpoint(monitor="val_loss", dirpath=directory, filename="{epoch}", save_top_k=-1)
    val = DataLoader(_tiny_data(), batch_size=8)
    return TinyVal, [fts, saver], val, {"enable_checkpointing": True}


class GatherDiff(pl.Callback):
    def __init__(self, out: str) -> None:
        self.out = out
        self.diffs: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        gathered = pl_module.all_gather(flat)
        self.diffs.append(float((gathered[0] - gathered[1]).abs().max()))
        if trainer.global_rank == 0:
            Path(self.out).write_text(json.dumps(self.diffs))


def check_ddp(kind: str, tmp: Path) -> tuple[bool, str]:
    out = tmp / f"ddp_{kind}.json"
    model_cls, callbacks, val, kwargs = _setup(kind, 3)
    trainer = _quiet_trainer(
        max_epochs=3, strategy="ddp_spawn", devices=2, callbacks=[*callbacks, GatherDiff(str(out))], **kwargs
    )
    trainer.fit(model_cls(), DataLoader(_tiny_data(64), batch_size=8, shuffle=True), val)
    diffs = json.loads(out.read_text())
    detail = "max abs(rank0 - rank1) per epoch: " + ", ".join(f"{d:.2g}" for d in diffs)
    return all(d == 0 for d in diffs), detail


def check_resume(kind: str, tmp: Path) -> tuple[bool, str]:
    def run(ckpt: str | None, directory: Path) -> Tiny:
        pl.seed_everything(0, verbose=False)
        model_cls, callbacks, val, kwargs = _setup(kind, 4, ckpt_dir=directory)
        if kind != "fts":
            callbacks.append(ModelCheckpoint(dirpath=directory, filename="{epoch}", save_top_k=-1))
        model = model_cls(scheduler="step")
        trainer = _quiet_trainer(
            max_epochs=4, callbacks=callbacks, **{"enable_checkpointing": True, **kwargs}
        )
        trainer.fit(model, DataLoader(_tiny_data(), batch_size=8), val, ckpt_path=ckpt)
        return model

    reference = run(None, tmp / f"ckpt_{kind}")
    resumed = run(str(tmp / f"ckpt_{kind}" / "epoch=1.ckpt"), tmp / f"ckpt_{kind}_resumed")
    same_grad = [p.requires_grad for p in reference.parameters()] == [
        p.requires_grad for p in resumed.parameters()
    ]
    pairs = zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True)
    same = same_grad and all(torch.equal(a, b) for a, b in pairs)
    trainable = sum(p.requires_grad for p in resumed.backbone.parameters())
    total = len(list(resumed.backbone.parameters()))
    return (
        same,
        f"final weights torch.equal: {same}; backbone params trainable after resume: {trainable}/{total}",
    )


def check_scheduler(kind: str, name: str) -> tuple[bool, str]:
    ratios: list[float] = []
    batches = []

    class Ratio(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            batches.append(batch_idx)
            groups = trainer.optimizers[0].param_groups
            if len(groups) > 1:
                ratios.append(groups[-1]["lr"] / groups[0]["lr"])

    model_cls, callbacks, val, kwargs = _setup(kind, 4)
    try:
        trainer = _quiet_trainer(max_epochs=4, callbacks=[*callbacks, Ratio()], **kwargs)
        trainer.fit(model_cls(scheduler=name), DataLoader(_tiny_data(), batch_size=8), val)
    except Exception as error:  # noqa: BLE001 - reported in the table
        message = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:90]}"
        if not batches:  # a clear error before training is the documented alternative
            return True, f"error at the start of training: {message}"
        return False, f"error after {len(batches)} steps: {message}"
    constant = bool(ratios) and max(ratios) - min(ratios) <= 1e-9 * max(ratios)
    return constant, f"backbone/head lr ratio after unfreeze: {min(ratios):.3g} .. {max(ratios):.3g}"


def check_identity(kind: str) -> tuple[bool, str]:
    # fresh LayerNorm weights (all ones) in head and backbone (BackboneFinetuning never freezes
    # BatchNorm parameters before training, so LayerNorm shows its by-value comparison); unfreeze
    # at epoch 0, while the values are still equal (finetuning-scheduler: epoch 1, its earliest)
    model_cls, callbacks, val, kwargs = _setup(kind, 2, unfreeze_at=0)
    model = model_cls()
    model.backbone.append(nn.LayerNorm(8))
    model.head = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 2))
    epochs = 2 if kind == "fts" else 1
    _quiet_trainer(max_epochs=epochs, callbacks=callbacks, **kwargs).fit(
        model, DataLoader(_tiny_data(), batch_size=8), val
    )
    ids = [id(p) for g in model.trainer.optimizers[0].param_groups for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    missing = len(trainable - set(ids))
    ok = missing == 0 and len(ids) == len(set(ids)) and len(trainable) == len(list(model.parameters()))
    return ok, f"trainable params missing from the optimizer: {missing}"


def check_frozen_bn(kind: str) -> tuple[bool, str]:
    if kind == "backbone_finetuning":  # its "frozen BatchNorm" setting
        model_cls, callbacks, val, kwargs = Tiny, [BackboneFinetuning(5, train_bn=False)], None, {}
    else:
        model_cls, callbacks, val, kwargs = _setup(kind, 6, unfreeze_at=5)
    model = model_cls()
    bn = model.backbone[1]
    bn.running_mean.add_(0.5)  # "pretrained" statistics
    before = bn.running_mean.clone()
    mismatches = []

    class Compare(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            with torch.no_grad():
                in_training = pl_module.backbone(batch[0])
                modes = [m.training for m in pl_module.backbone.modules()]
                tracking = bn.track_running_stats
                pl_module.backbone.eval()
                bn.track_running_stats = True
                in_eval = pl_module.backbone(batch[0])
                bn.track_running_stats = tracking
                for module, mode in zip(pl_module.backbone.modules(), modes, strict=True):
                    module.training = mode
            mismatches.append(not torch.equal(in_training, in_eval))

    _quiet_trainer(max_epochs=1, callbacks=[*callbacks, Compare()], **kwargs).fit(
        model, DataLoader(_tiny_data(), batch_size=8), val
    )
    unchanged = torch.equal(bn.running_mean, before)
    return unchanged and not any(mismatches), (
        f"running stats unchanged: {unchanged}; frozen-layer output differs train vs eval in "
        f"{sum(mismatches)}/{len(mismatches)} steps"
    )


def run_correctness(
    tmp: Path, speed: dict, kinds: list[str]
) -> list[tuple[str, dict[str, tuple[bool, str]]]]:
    rows = []
    for title, check in [
        ("DDP: ranks identical after unfreeze (#20340)", lambda k: check_ddp(k, tmp)),
        ("resume after unfreeze == uninterrupted (#21901)", lambda k: check_resume(k, tmp)),
        ("StepLR schedules the new group", lambda k: check_scheduler(k, "step")),
        ("LambdaLR schedules the new group (#12141)", lambda k: check_scheduler(k, "lambda")),
        ("OneCycleLR schedules the new group (#8720)", lambda k: check_scheduler(k, "onecycle")),
        ("equal-valued params: each trainable one in one group", check_identity),
        ("frozen BN: stats unchanged, train == eval output", check_frozen_bn),
    ]:
        results = {}
        for kind in kinds:
            try:
                results[kind] = check(kind)
            except Exception as error:  # noqa: BLE001 - reported in the table
                results[kind] = (False, f"{type(error).__name__}: {str(error).strip().splitlines()[0][:90]}")
        rows.append((title, results))
    if speed is None:
        return rows
    full = speed["full"]["frozen_step_s"]
    rows.append(
        (
            "frozen phase cheaper than full fine-tuning",
            {
                "ours": (
                    speed["progressive"]["frozen_step_s"] < 0.8 * full,
                    f"{speed['progressive']['frozen_step_s'] / full:.2f}× full step",
                ),
                "backbone_finetuning": (
                    speed["backbone_finetuning_train_bn"]["frozen_step_s"] < 0.8 * full,
                    f"default train_bn=True: "
                    f"{speed['backbone_finetuning_train_bn']['frozen_step_s'] / full:.2f}× full step",
                ),
            },
        )
    )
    return rows


# ------------------------------------------------------------------------------- accuracy
def accuracy_run(
    method: str, seed: int, epochs: int, test_samples: int, args: argparse.Namespace | None = None
) -> float:
    """One few-label MNIST run; returns the accuracy on ``args.eval_split`` (default: test).

    ``args=None`` keeps the original budget (32 px, batch 32, backbone ×0.1, progressive:
    4 groups per epoch from epoch 2 at lr ×0.1).
    """
    image_size = args.image_size if args else 32
    batch_size = args.batch_size if args else 32
    backbone_lr_scale = args.backbone_lr_scale if args else 0.1
    weight_decay = args.weight_decay if args else 0.01
    eval_split = args.eval_split if args else "test"
    pl.seed_everything(seed, verbose=False)
    data = DigitsDataModule(
        "mnist",
        image_size=image_size,
        labels_per_class=20,
        val_samples=args.val_samples if args else None,
        test_samples=test_samples,
        batch_size=batch_size,
        seed=seed,
    )
    finetune = "frozen" if method == "head_only" else "full"
    model = TransferClassifier(
        "torchvision/mobilenet_v2",
        num_classes=10,
        weights=MOBILENET_V2_IMAGENET,
        finetune=finetune,
        # with the callback, its own backbone_lr_scale applies (it would conflict with the model's)
        backbone_lr_scale=None if method == "progressive" else backbone_lr_scale,
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=weight_decay),
    )
    callbacks = []
    if method == "progressive":
        # 19 layer groups. Default: 4 more every epoch from epoch 2 (all trainable from epoch 6).
        callbacks.append(ProgressiveUnfreezing(**progressive_kwargs(args)))
    trainer = _quiet_trainer(
        max_epochs=epochs, callbacks=callbacks, limit_val_batches=0, num_sanity_val_steps=0
    )
    trainer.fit(model, data)
    if eval_split == "val":
        trainer = _quiet_trainer()
        return float(trainer.validate(model, data, verbose=False)[0]["val/acc"])
    result = trainer.test(model, data, verbose=False)[0]
    return float(result["test/acc"])


def progressive_kwargs(args: argparse.Namespace | None) -> dict:
    """ProgressiveUnfreezing arguments of the accuracy section (defaults: the original schedule)."""
    if args is None:
        return dict(unfreeze_at_epoch=2, every_n_epochs=1, groups_per_step=4, backbone_lr_scale=0.1)
    every = args.pu_every_n_epochs or None
    milestones = args.pu_unfreeze_at
    return dict(
        unfreeze_at_epoch=milestones[0] if every or len(milestones) == 1 else milestones,
        every_n_epochs=every,
        groups_per_step=args.pu_groups_per_step or None,
        backbone_lr_scale=args.backbone_lr_scale if args.pu_lr_scale is None else args.pu_lr_scale,
        warmup_epochs=args.pu_warmup_epochs,
        frozen_mode="train" if args.pu_train_bn else "eval",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--test-samples", type=int, default=2000)
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["speed", "correctness", "accuracy"],
        choices=["speed", "correctness", "accuracy"],
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["head_only", "full", "progressive"],
        choices=["head_only", "full", "progressive"],
        help="accuracy-section methods",
    )
    acc = parser.add_argument_group("accuracy section budget and progressive schedule")
    acc.add_argument("--image-size", type=int, default=32)
    acc.add_argument("--batch-size", type=int, default=32)
    acc.add_argument("--backbone-lr-scale", type=float, default=0.1, help="full fine-tuning backbone lr ×")
    acc.add_argument("--weight-decay", type=float, default=0.01)
    acc.add_argument(
        "--eval-split",
        choices=["test", "val"],
        default="test",
        help="'val': score on MNIST validation images (schedule selection); 'test': the report",
    )
    acc.add_argument("--val-samples", type=int, default=2000, help="validation images for --eval-split val")
    acc.add_argument("--pu-unfreeze-at", type=int, nargs="+", default=[2], help="milestone(s)")
    acc.add_argument("--pu-every-n-epochs", type=int, default=1, help="gradual mode; 0: milestones only")
    acc.add_argument("--pu-groups-per-step", type=int, default=4, help="0: None (all / split evenly)")
    acc.add_argument("--pu-lr-scale", type=float, default=None, help="default: --backbone-lr-scale")
    acc.add_argument("--pu-warmup-epochs", type=int, default=0)
    acc.add_argument("--pu-train-bn", action="store_true")
    acc.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--speed-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.speed_worker:
        print(json.dumps(speed_worker(args.speed_worker, args.steps)))
        return

    started = time.time()
    print(f"# bench_unfreezing  {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}")
    print(
        f"torch {torch.__version__}, lightning {pl.__version__}, "
        f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads available; speed section uses 1 thread"
    )
    print(
        f"command: python scripts/bench_unfreezing.py --rounds {args.rounds} --steps {args.steps} "
        f"--seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs} "
        f"--test-samples {args.test_samples} --sections {' '.join(args.sections)} "
        f"--methods {' '.join(args.methods)} --image-size {args.image_size} --batch-size {args.batch_size} "
        f"--backbone-lr-scale {args.backbone_lr_scale} --weight-decay {args.weight_decay} "
        f"--eval-split {args.eval_split} --val-samples {args.val_samples} "
        f"--pu-unfreeze-at {' '.join(map(str, args.pu_unfreeze_at))} "
        f"--pu-every-n-epochs {args.pu_every_n_epochs} --pu-groups-per-step {args.pu_groups_per_step} "
        f"{'' if args.pu_lr_scale is None else f'--pu-lr-scale {args.pu_lr_scale} '}"
        f"--pu-warmup-epochs {args.pu_warmup_epochs}"
        f"{' --pu-train-bn' if args.pu_train_bn else ''} --threads {args.threads}\n"
    )
    speed = print_speed(args) if "speed" in args.sections else None
    if "correctness" in args.sections:
        print_correctness(speed)
    if "accuracy" in args.sections:
        print_accuracy(args)
    print(f"\ntotal wall time {time.time() - started:.0f} s")


def print_speed(args: argparse.Namespace) -> dict:
    speed = run_speed(args.rounds, args.steps)
    print(
        f"## Speed and memory (MobileNetV2, 32×32, batch 32; "
        f"median of {args.rounds}×{args.steps} steps per phase)\n"
    )
    print(
        "| method | frozen step, median / fastest (ms) | unfrozen step, median / fastest (ms) "
        "| peak RSS frozen (MB) | peak RSS unfrozen (MB) |"
    )
    print("|---|---|---|---|---|")
    names = {
        "progressive": "ProgressiveUnfreezing (ours)",
        "backbone_finetuning": "BackboneFinetuning(train_bn=False)",
        "backbone_finetuning_train_bn": "BackboneFinetuning (default train_bn=True)",
        "full": "full fine-tuning (no freezing)",
    }
    for method in SPEED_METHODS:
        s = speed[method]
        print(
            f"| {names[method]} | {1e3 * s['frozen_step_s']:.1f} / {1e3 * s['frozen_min_s']:.1f} "
            f"| {1e3 * s['unfrozen_step_s']:.1f} / {1e3 * s['unfrozen_min_s']:.1f} | "
            f"{s['frozen_peak_mb']:.0f} | {s['unfrozen_peak_mb']:.0f} |"
        )
    ours, bf = speed["progressive"], speed["backbone_finetuning"]
    print(
        f"\nours / BackboneFinetuning(train_bn=False) step time: "
        f"frozen {ours['frozen_step_s'] / bf['frozen_step_s']:.3f}, "
        f"unfrozen {ours['unfrozen_step_s'] / bf['unfrozen_step_s']:.3f} (end to end, on a shared machine)"
    )
    hook = ours["hook_us_per_step"]
    print(
        f"our per-step callback work, timed directly: {hook:.1f} µs = "
        f"{100 * hook * 1e-6 / ours['frozen_step_s']:.3f}% "
        f"of a frozen step, {100 * hook * 1e-6 / ours['unfrozen_step_s']:.3f}% of an unfrozen step"
    )
    print(
        f"same ratios on the fastest step (least disturbed by other jobs): frozen "
        f"{ours['frozen_min_s'] / bf['frozen_min_s']:.3f}, "
        f"unfrozen {ours['unfrozen_min_s'] / bf['unfrozen_min_s']:.3f}"
    )
    print(f"frozen / full step time: ours {ours['frozen_step_s'] / speed['full']['frozen_step_s']:.2f}\n")

    return speed


def print_correctness(speed: dict | None) -> None:
    kinds = ["ours", "backbone_finetuning"] + (["fts"] if _fts_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_correctness(Path(tmp), speed, kinds)
    print("## Correctness (tiny model; DDP = ddp_spawn, 2 CPU processes)\n")
    print("| failure mode | ours | BackboneFinetuning | finetuning-scheduler |")
    print("|---|---|---|---|")
    for title, results in rows:
        cells = []
        for kind in ("ours", "backbone_finetuning", "fts"):
            if kind not in results:
                cells.append("not run" if kind not in kinds else "not measured")
                continue
            ok, detail = results[kind]
            cells.append(f"{'pass' if ok else 'FAIL'}: {detail}")
        print(f"| {title} | " + " | ".join(cells) + " |")
    if "fts" in kinds:
        import finetuning_scheduler

        print(
            f"\nfinetuning-scheduler {finetuning_scheduler.__version__} (scratch install, not a dependency), "
            "explicit two-phase schedule (head, then backbone at 0.1 x head lr, epoch-driven), "
            "restore_best=False, FTSCheckpoint on a validation loss, other arguments at their defaults "
            "(e.g. apply_lambdas_new_pgs=False, frozen_bn_track_running_stats=True).\n"
        )
    else:
        print(
            "\nfinetuning-scheduler: not run (not importable; install it in a scratch location with "
            "`pip install --no-deps --target /tmp/fts_env finetuning-scheduler` and run with "
            "PYTHONPATH=/tmp/fts_env).\n"
        )


def print_accuracy(args: argparse.Namespace) -> None:
    scored = (
        f"{args.test_samples} test images"
        if args.eval_split == "test"
        else f"VALIDATION split ({args.val_samples} MNIST val images, not test)"
    )
    print(
        f"## Accuracy: few-label MNIST (20 labels/class), ImageNet MobileNetV2, {args.image_size} px, "
        f"{args.epochs} epochs, batch {args.batch_size}, AdamW lr 1e-3 wd {args.weight_decay} "
        f"(full fine-tuning backbone ×{args.backbone_lr_scale}), scored on {scored}, seeds {args.seeds}\n"
        f"progressive: ProgressiveUnfreezing({progressive_kwargs(args)})\n"
    )
    print("| method | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean ± std |")
    print("|---|" + "---|" * (len(args.seeds) + 1))
    means = {}
    for method, title in [
        ("head_only", "frozen backbone, head only"),
        ("full", "full fine-tuning"),
        ("progressive", "progressive unfreezing (ours)"),
    ]:
        if method not in args.methods:
            continue
        accs = [accuracy_run(method, seed, args.epochs, args.test_samples, args) for seed in args.seeds]
        means[method] = statistics.mean(accs)
        std = statistics.stdev(accs) if len(accs) > 1 else math.nan
        print(
            f"| {title} | "
            + " | ".join(f"{100 * a:.1f}" for a in accs)
            + f" | {100 * means[method]:.1f} ± {100 * std:.1f} |"
        )
    if len(means) < 3:
        return
    best_other = max(means["head_only"], means["full"])
    verdict = "met" if means["progressive"] >= best_other else "NOT met"
    print(
        f"\ntarget 'progressive >= max(head only, full)': {verdict} "
        f"({100 * means['progressive']:.1f} vs {100 * best_other:.1f})"
    )


if __name__ == "__main__":
    main()
