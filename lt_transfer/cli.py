"""``lt-transfer``: the LightningCLI entry point.

``lt-transfer fit --config configs/mnist_mobilenet_finetune.yaml`` trains a recipe; any
LightningModule / LightningDataModule / Callback is selectable by class path.
``data.num_classes`` is linked to ``model.init_args.num_classes``.
"""

from __future__ import annotations

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

__all__ = ["TransferCLI", "main"]


class TransferCLI(LightningCLI):
    """LightningCLI with the data → model class-count link.

    Example:
        >>> issubclass(TransferCLI, LightningCLI)
        True
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")


def main(args: list[str] | None = None) -> None:
    """Run the CLI (console script ``lt-transfer``)."""
    TransferCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
