"""``lt-transfer``: the LightningCLI entry point.

``lt-transfer fit --config configs/mnist_mobilenet_finetune.yaml`` trains a recipe; any
LightningModule / LightningDataModule / Callback is selectable by class path.
``data.num_classes`` is linked to ``model.init_args.num_classes``.

``lt-transfer rank --candidates A B C --data <DataModule>`` ranks pretrained candidates on a
target task before fine-tuning (:mod:`lt_transfer.ranking.command`); LightningCLI's
subcommands are fixed and all build a model and a trainer, so ``main`` hands ``rank`` to its
own parser before LightningCLI starts.
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from lt_transfer._lightning_compat import install_top_level_instantiators
from lt_transfer.backbones import architecture_only
from lt_transfer.checkpoints import read_checkpoint
from lt_transfer.modules._checkpointing import CHECKPOINT_INFO_KEY

__all__ = ["TransferCLI", "main"]


class TransferCLI(LightningCLI):
    """LightningCLI with the data → model class-count link.

    Nested LightningModules (a ``TransferClassifier`` student inside a
    ``DistillationModule``) record their own hyper-parameters, not the top-level config.
    ``--ckpt_path`` is read safely before anything is built (clear errors for corrupt,
    truncated or wrong-kind files), and the model is then built with its backbones'
    architecture only: the checkpoint holds the weights, so the pretrained files named in the
    config are not needed.

    Example:
        >>> issubclass(TransferCLI, LightningCLI)
        True
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Replace the CLI's instantiators by ones that apply to the top-level classes only."""
        install_top_level_instantiators(self)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then read ``--ckpt_path`` safely before Lightning or anything else opens it."""
        super().parse_arguments(parser, args)
        self._ckpt_info: dict[str, Any] | None = None
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if isinstance(ckpt_path, str) and ckpt_path not in ("last", "best", "hpc", "registry"):
            checkpoint = read_checkpoint(ckpt_path, where=f"lt-transfer {subcommand} --ckpt_path", mmap=True)
            self._ckpt_info = {
                "self_contained": not checkpoint.get("lt_transfer_trainable_only", False),
                "model_configs": (checkpoint.get(CHECKPOINT_INFO_KEY) or {}).get("model_configs"),
            }

    def instantiate_classes(self) -> None:
        """With ``--ckpt_path``: build the model without the pretrained files the checkpoint replaces."""
        info = getattr(self, "_ckpt_info", None)
        if info is None:
            super().instantiate_classes()
            return
        with architecture_only(info["self_contained"], info["model_configs"]):
            super().instantiate_classes()


def main(args: list[str] | None = None) -> None:
    """Run the CLI (console script ``lt-transfer``); ``rank`` goes to its own parser (see above)."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["rank"]:
        from lt_transfer.ranking.command import rank_main  # lazy: fit/test do not need it

        rank_main(argv[1:])
        return
    TransferCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"epilog": "lt-transfer rank --help: rank pretrained candidates before fine-tuning."},
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
