"""The digit-shift setup the domain-adaptation benchmarks share: shifts, data, network, optimizer, trainer.

``bench_domain_adaptation.py`` (methods against source-only and an oracle) and
``bench_selection.py`` (label-free checkpoint selection) import it from their own folder, so
both train every method on the same data (``DomainAdaptationDataModule``), network
(``LeNetBackbone`` unless the network flags say otherwise), optimizer (SGD, momentum 0.9,
weight decay 5e-4, lr annealed as in the DANN paper) and Trainer options. Not a script.
"""

from __future__ import annotations

import argparse
import os
import platform
from datetime import datetime, timezone
from typing import Any, get_args

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from _common import quiet_cpu_trainer
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lt_transfer.backbones import LeNetBackbone
from lt_transfer.data.domain_adaptation import DomainAdaptationDataModule, DomainName
from lt_transfer.modules.domain_adaptation import DomainAdaptationModule

DOMAINS: tuple[str, ...] = get_args(DomainName)
DEFAULT_SHIFTS = ("mnist:mnist_m", "mnist:sklearn_digits")
#: DomainAdaptationModule arguments of each trained method (everything else: the module's defaults).
TRAINED: dict[str, dict[str, Any]] = {
    "source_only": {"method": "source_only"},
    "dann": {"method": "dann"},
    "mmd": {"method": "mmd"},
    "coral": {"method": "coral"},
    "cdan": {"method": "cdan"},
    "mcc": {"method": "mcc"},
    "dann_mcc": {"method": "dann", "mcc_weight": 1.0},
    "self_training": {"method": "self_training"},
}
ADVERSARIAL = ("dann", "cdan", "dann_mcc")


def parse_shift(value: str) -> tuple[str, str]:
    """``"SOURCE:TARGET"`` → ``(source, target)``, both domains of the DataModule."""
    source, _, target = value.partition(":")
    if source not in DOMAINS or target not in DOMAINS:
        raise argparse.ArgumentTypeError(
            f"--shift {value!r}: expected SOURCE:TARGET with both in {list(DOMAINS)}, e.g. mnist:mnist_m"
        )
    return source, target


def shift_name(shift: tuple[str, str]) -> str:
    """``("mnist", "mnist_m")`` → ``"mnist→mnist_m"``."""
    return f"{shift[0]}→{shift[1]}"


def trainer(args: argparse.Namespace, **kwargs: Any) -> pl.Trainer:
    """A quiet CPU Trainer without logger, checkpoints or validation; ``kwargs`` override."""
    return quiet_cpu_trainer(**{"limit_val_batches": 0, **kwargs})


def sgd(args: argparse.Namespace) -> Any:
    """The benchmarks' optimizer: SGD, lr ``--lr``, momentum 0.9, weight decay 5e-4."""
    return lambda params: torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=5e-4)


@torch.no_grad()
def accuracy(
    model: torch.nn.Module, dataset: TensorDataset, args: argparse.Namespace, callback: Any = None
) -> float:
    """Accuracy in % on ``dataset``; with a test-time callback, predicted through ``trainer.predict``.

    Without a callback the model is put in eval mode (and left there).
    """
    x, y = dataset.tensors
    if callback is not None:
        loader = DataLoader(TensorDataset(x), batch_size=args.tta_batch_size)
        probabilities = trainer(args, callbacks=[callback]).predict(model, loader)
        return 100.0 * float((torch.cat(probabilities).argmax(-1) == y).float().mean())
    model.eval()
    chunks = range(0, len(y), 1000)
    correct = sum(int((model(x[i : i + 1000]).argmax(-1) == y[i : i + 1000]).sum()) for i in chunks)
    return 100.0 * correct / len(y)


def strong_digit_augmentation(x: torch.Tensor) -> torch.Tensor:
    """A strong view of one normalised ``(3, H, W)`` digit image, fixed a priori (not tuned).

    The augmentations of self-ensembling for digit domain adaptation (French et al., ICLR 2018:
    small affine moves, intensity flip, per-channel intensity scale and offset) plus FixMatch's
    Cutout (a square of half the image side set to 0): a random affine map (rotation ±15°,
    scale 0.9–1.1, shear ±0.15, translation ±10 % of the side), negation with probability 0.5,
    per-channel scale in [0.5, 1.5] and offset in [-0.5, 0.5], then the Cutout square.
    """
    angle = (torch.rand(()) * 2 - 1) * torch.pi / 12
    scale = 0.9 + 0.2 * torch.rand(())
    shear = (torch.rand(()) * 2 - 1) * 0.15
    shift = (torch.rand(2) * 2 - 1) * 0.2  # grid units: [-1, 1] spans the image
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin + shear, shift[0]]), torch.stack([sin, cos, shift[1]])])
    grid = F.affine_grid(theta.unsqueeze(0), [1, *x.shape], align_corners=False)
    out = F.grid_sample(x.unsqueeze(0), grid, padding_mode="border", align_corners=False)[0]
    if torch.rand(()) < 0.5:
        out = -out
    out = out * (0.5 + torch.rand(3, 1, 1)) + (torch.rand(3, 1, 1) - 0.5)
    side = x.shape[-1] // 2
    top, left = (int(v) for v in torch.randint(0, x.shape[-1] - side + 1, (2,)))
    out[:, top : top + side, left : left + side] = 0.0
    return out


class StrongView(Dataset):
    """Target images as ``{"x": image, "x_strong": strong_digit_augmentation(image)}`` (FixMatch's
    weak view is the image itself; self-training reads the strong view, other methods ignore it)."""

    def __init__(self, images: Dataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.images[i][0]
        return {"x": x, "x_strong": strong_digit_augmentation(x)}


def datamodule(
    args: argparse.Namespace,
    source: str,
    target: str,
    seed: int,
    source_free: bool = False,
    val_samples: int = 200,
    test_samples: int | None = None,
    strong_view: bool = False,
) -> DomainAdaptationDataModule:
    """The shift's data (set up), sized by ``--source-samples``, ``--target-samples``,
    ``--target-val-samples`` and ``--batch-size``; subsets drawn with ``seed``. ``strong_view``:
    target training batches also carry a strong view (:class:`StrongView`)."""
    dm = DomainAdaptationDataModule(
        source,  # type: ignore[arg-type]
        target,  # type: ignore[arg-type]
        source_samples=args.source_samples,
        target_samples=args.target_samples,
        val_samples=val_samples,
        target_val_samples=args.target_val_samples,
        test_samples=test_samples,
        batch_size=args.batch_size,
        num_workers=0,
        seed=seed,
        source_free=source_free,
    )
    dm.setup("fit")
    if strong_view:  # setup() keeps the datasets it has, so the wrapped target set stays
        dm.train_target = StrongView(dm.train_target)
    return dm


def build_model(args: argparse.Namespace, method: str, trade_off: float) -> DomainAdaptationModule:
    """A fresh module for ``method`` (a key of :data:`TRAINED`, or ``"oracle"``) with the network flags."""
    kwargs = dict(TRAINED["source_only" if method == "oracle" else method])
    if method in ADVERSARIAL:
        kwargs.update(discriminator_hidden=args.disc_hidden, discriminator_depth=args.disc_depth)
        kwargs.update(trade_off_on=args.trade_off_on)
    if kwargs["method"] != "source_only":
        kwargs["trade_off"] = trade_off
    features = None if args.flat_features else 128
    return DomainAdaptationModule(
        LeNetBackbone(num_features=features, batch_norm=not args.no_batch_norm),
        head_hidden=tuple(args.head_hidden),
        joint_forward=args.joint_bn,
        optimizer=sgd(args),
        lr_annealing=True,
        **kwargs,
    )


def add_shift_arguments(parser: argparse.ArgumentParser) -> None:
    """``--shift`` (default: both public shifts)."""
    parser.add_argument(
        "--shift",
        nargs="+",
        type=parse_shift,
        default=[parse_shift(s) for s in DEFAULT_SHIFTS],
        metavar="SOURCE:TARGET",
        help=f"domain pairs, each of {list(DOMAINS)} (default: {' '.join(DEFAULT_SHIFTS)})",
    )


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """The network flags (same network for every method; defaults = the original benchmark)."""
    net = parser.add_argument_group("network (same for every method; defaults = the original benchmark)")
    net.add_argument("--no-batch-norm", action="store_true", help="LeNetBackbone(batch_norm=False): paper")
    net.add_argument(
        "--flat-features", action="store_true", help="no FC layer: 768 flattened conv features, as the paper"
    )
    net.add_argument("--head-hidden", nargs="*", type=int, default=[], help="label predictor (paper 100 100)")
    bn = net.add_mutually_exclusive_group()
    bn.add_argument("--joint-bn", action="store_true", help="joint_forward=True: mixed source+target batches")
    bn.add_argument("--separate-bn", action="store_true", help="joint_forward=False: per-domain BN (default)")
    net.add_argument("--disc-hidden", type=int, default=256, help="DANN/CDAN discriminator width (paper 100)")
    net.add_argument("--disc-depth", type=int, default=2, help="DANN/CDAN discriminator layers (paper 1)")
    net.add_argument("--trade-off-on", choices=["loss", "reversal"], default="loss", help="DANN/CDAN option")


def print_header(args: argparse.Namespace) -> None:
    """Set the torch threads from ``--threads``, then print date, machine, versions, threads and args."""
    torch.set_num_threads(args.threads)
    print(
        f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"# args: {vars(args)}", flush=True)
