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

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lt_transfer._lightning_compat import install_top_level_instantiators

__all__ = ["TransferCLI", "main"]


class TransferCLI(LightningCLI):
    """LightningCLI with the data → model class-count link.

    Nested LightningModules (a ``TransferClassifier`` student inside a
    ``DistillationModule``) record their own hyper-parameters, not the top-level config.

    Example:
        >>> issubclass(TransferCLI, LightningCLI)
        True
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Replace the CLI's instantiators by ones that apply to the top-level classes only."""
        install_top_level_instantiators(self)


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
