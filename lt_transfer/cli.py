"""``lt-transfer``: the LightningCLI entry point.

``lt-transfer fit --config configs/mnist_mobilenet_finetune.yaml`` trains a recipe; any
LightningModule / LightningDataModule / Callback is selectable by class path.
``data.num_classes`` is linked to ``model.init_args.num_classes``.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, _get_module_type, _InstantiatorFn

__all__ = ["TransferCLI", "main"]


def _class_path_of(config: Any) -> str | None:
    if isinstance(config, dict):
        return config.get("class_path") or config.get("_class_path")
    return getattr(config, "class_path", None)


class _TopLevelInstantiator(_InstantiatorFn):
    """Lightning's instantiator, applied to the configured top-level class only.

    LightningCLI passes the top-level ``model`` config as hyper-parameters to *every*
    LightningModule it instantiates, nested ones included (e.g. a ``TransferClassifier``
    student inside a ``DistillationModule``), whose ``save_hyperparameters`` then records the
    outer module's arguments. Nested modules are instantiated plainly here, so they record
    their own.
    """

    def __call__(self, class_type: type, *args: Any, applied_instantiation_links: dict, **kwargs: Any) -> Any:
        self.cli._dump_config()
        class_path = _class_path_of(self.cli.config_dump.get(self.key, {}))
        if class_path is not None and _resolve_class(class_path) is not class_type:
            return class_type(*args, **kwargs)
        return super().__call__(
            class_type, *args, applied_instantiation_links=applied_instantiation_links, **kwargs
        )


def _resolve_class(class_path: str) -> type | None:
    module_name, _, name = class_path.rpartition(".")
    try:
        module = __import__(module_name, fromlist=[name])
        return getattr(module, name)
    except (ImportError, AttributeError, ValueError):
        return None


class TransferCLI(LightningCLI):
    """LightningCLI with the data → model class-count link.

    Example:
        >>> issubclass(TransferCLI, LightningCLI)
        True
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def _add_instantiators(self) -> None:
        for key, class_type, subclasses in (
            ("model", self._model_class, self.subclass_mode_model),
            ("data", self._datamodule_class, self.subclass_mode_data),
        ):
            self.parser.add_instantiator(
                _TopLevelInstantiator(cli=self, key=key), _get_module_type(class_type), subclasses=subclasses
            )


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
