"""``lt-transfer rank``: rank candidate models on a target datamodule from the command line.

LightningCLI's subcommands are fixed (``fit``, ``validate``, ``test``, ``predict``) and each
of them builds a model and a trainer, which ranking does not have. So ``lt-transfer`` hands
``rank`` to this parser before LightningCLI starts (:func:`lt_transfer.cli.main`), and the
parser reads ``--data`` exactly like the other subcommands do: a class path with
``--data.<argument>`` overrides, or a ``class_path``/``init_args`` YAML file or string::

    lt-transfer rank --candidates imagenet=torchvision/mobilenet_v2@DEFAULT random=torchvision/mobilenet_v2 \\
        runs/lenet_mnist.ckpt --data lt_transfer.DigitsDataModule --data.dataset sklearn_digits \\
        --data.labels_per_class 20 --scores logme leep knn --output_dir ranking

``--config rank.yaml`` holds the same keys (``candidates``, ``data``, ``scores`` ...);
``--print_config`` prints them. The markdown table goes to stdout, the files to
``--output_dir``.
"""

from __future__ import annotations

import sys
from typing import Literal

from jsonargparse import ActionConfigFile, ArgumentParser
from lightning.pytorch import LightningDataModule

from lt_transfer.ranking.rank import rank_models
from lt_transfer.ranking.registry import SCORES
from lt_transfer.ranking.table import RankingTable

__all__ = ["build_parser", "rank_main"]


def build_parser() -> ArgumentParser:
    """The argument parser of ``lt-transfer rank``.

    Example:
        >>> config = build_parser().parse_args(
        ...     ["--candidates", "a=torchvision/resnet18", "--data", "lt_transfer.DigitsDataModule"])
        >>> config.candidates, config.data.class_path, config.split
        (['a=torchvision/resnet18'], 'lt_transfer.DigitsDataModule', 'train')
    """
    parser = ArgumentParser(
        prog="lt-transfer rank",
        description=(
            "Rank pretrained candidates on a labelled target task with transferability scores, "
            "before fine-tuning any of them."
        ),
    )
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML file with these arguments.")
    parser.add_argument(
        "--candidates",
        nargs="+",
        type=str,
        required=True,
        help="Candidates as [name=]model[@weights]: a backbone spec (torchvision/..., hf/..., timm/...) "
        "with optional weights, or a checkpoint path of an lt_transfer module.",
    )
    parser.add_subclass_arguments(LightningDataModule, "data", required=True, help="The target task.")
    parser.add_argument(
        "--scores",
        nargs="+",
        type=str,
        default=None,
        help=f"Scores to compute (default: all of {list(SCORES)}).",
    )
    parser.add_argument(
        "--split", type=Literal["train", "val", "test"], default="train", help="Loader to score."
    )
    parser.add_argument("--max_samples", type=int | None, default=None, help="Most target samples.")
    parser.add_argument("--batch_size", type=int | None, default=None, help="Extraction batch size.")
    parser.add_argument(
        "--feature_dtype", type=Literal["float32", "float16"], default="float32", help="Feature storage type."
    )
    parser.add_argument(
        "--device", type=str, default="auto", help="'auto' (cuda if available), 'cpu', 'cuda'."
    )
    parser.add_argument("--output_dir", type=str | None, default="ranking", help="Where the CSV/PNG go.")
    parser.add_argument("--progress", type=bool, default=True, help="A progress bar per candidate.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed of every candidate's run.")
    return parser


def rank_main(args: list[str] | None = None) -> RankingTable:
    """Run ``lt-transfer rank`` with ``args`` (default: ``sys.argv[2:]``) and print the table.

    Example:
        >>> try:
        ...     rank_main(["--help"])  # doctest: +ELLIPSIS
        ... except SystemExit as stop:
        ...     stop.code
        usage: lt-transfer rank ...
        0
    """
    parser = build_parser()
    config = parser.parse_args(sys.argv[2:] if args is None else args)
    init = parser.instantiate_classes(config)
    device = config.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    table = rank_models(
        init.candidates,
        init.data,
        init.scores,
        split=config.split,
        max_samples=config.max_samples,
        batch_size=config.batch_size,
        feature_dtype=config.feature_dtype,
        device=device,
        output_dir=config.output_dir,
        progress=config.progress,
        seed=config.seed,
    )
    print(table.to_markdown())
    if config.output_dir is not None:
        print(f"\nwrote ranking.csv, ranking.md and ranking.png to {config.output_dir}")
    return table
