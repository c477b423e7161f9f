"""The only place that touches private Lightning (and jsonargparse) API.

Everything else in lt_transfer uses public API only. Each private access below is guarded:
when a Lightning release moves or renames what we rely on, the error names the access, the
installed version and the range we test (:data:`SUPPORTED_LIGHTNING`), instead of an
``AttributeError`` deep inside a callback. ``make test-lightning-min`` runs the suite on the
oldest supported release; ``make test`` on the newest.

The accesses, and why each is needed:

* :func:`rewrap_ddp` (``DDPStrategy._setup_model``, ``_register_ddp_hooks``): a
  ``DistributedDataParallel`` reducer covers only the parameters that required grad when it
  was built, so after an unfreeze the model must be wrapped again (Lightning #20340).
* :func:`restart_train_iterator` (``trainer.fit_loop._data_fetcher``): recreate the running
  epoch's training iterator so that already-forked ``DataLoader`` workers pick up a data set
  that changed at the start of the epoch (the feature cache).
* :func:`cli_hparams_active`, :func:`without_cli_hparams` (``_given_hyperparameters``):
  LightningCLI hands the top-level model config to every LightningModule built while it
  instantiates, nested ones included.
* :func:`lr_finder_scheduler_types` (``lightning.pytorch.tuner.lr_finder._LinearLR``,
  ``_ExponentialLR``): the schedulers Lightning's LR finder attaches, which
  ProgressiveUnfreezing accepts (an LR-finder run may unfreeze groups).
* :func:`install_top_level_instantiators` (``_InstantiatorFn``, ``_get_module_type``,
  ``LightningCLI._dump_config``, ``_model_class``, ``_datamodule_class``): the CLI's own
  instantiator, applied to the configured top-level class only.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning
from lightning.pytorch import LightningModule, Trainer

__all__ = [
    "SUPPORTED_LIGHTNING",
    "LightningCompatError",
    "attached_trainer",
    "cli_hparams_active",
    "install_top_level_instantiators",
    "load_options",
    "lr_finder_scheduler_types",
    "restart_train_iterator",
    "rewrap_ddp",
    "without_cli_hparams",
]

#: The Lightning releases the test suite runs on (oldest and newest, see the Makefile).
SUPPORTED_LIGHTNING = ">=2.5.2,<2.7"


class LightningCompatError(RuntimeError):
    """A private Lightning API that lt_transfer relies on is missing in the installed release.

    Example:
        >>> issubclass(LightningCompatError, RuntimeError)
        True
    """


def _fail(access: str, error: BaseException) -> LightningCompatError:
    return LightningCompatError(
        f"lt_transfer needs the Lightning internal {access}, which is missing or changed in the installed "
        f"lightning {lightning.__version__} ({type(error).__name__}: {error}). lt_transfer is tested with "
        f"lightning{SUPPORTED_LIGHTNING}; install a release in that range, e.g. "
        "`pip install 'lightning>=2.5.2,<2.7'`."
    )


def attached_trainer(module: LightningModule) -> Trainer | None:
    """The Trainer ``module`` is attached to, or ``None`` (public API: ``module.trainer`` raises).

    Example:
        >>> from torch import nn
        >>> attached_trainer(LightningModule()) is None
        True
    """
    try:
        return module.trainer
    except RuntimeError:
        return None


def rewrap_ddp(trainer: Trainer) -> bool:
    """Wrap the LightningModule in a new ``DistributedDataParallel`` (after an unfreeze).

    Returns ``True`` when the model was re-wrapped, ``False`` when the strategy is not DDP
    (nothing to do).

    Example:
        >>> rewrap_ddp(Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False))
        False
    """
    from lightning.pytorch.strategies import DDPStrategy
    from torch.nn.parallel import DistributedDataParallel

    strategy = trainer.strategy
    if not (isinstance(strategy, DDPStrategy) and isinstance(strategy.model, DistributedDataParallel)):
        return False
    try:
        setup_model = strategy._setup_model
        register_hooks = strategy._register_ddp_hooks
    except AttributeError as error:
        raise _fail("DDPStrategy._setup_model / _register_ddp_hooks", error) from error
    strategy.model = setup_model(strategy.lightning_module)
    register_hooks()
    return True


def restart_train_iterator(trainer: Trainer) -> None:
    """Recreate the current training epoch's data iterator (and its ``DataLoader`` workers).

    Call it from ``on_train_epoch_start`` only, before the first batch is fetched.
    """
    try:
        fetcher = trainer.fit_loop._data_fetcher
    except AttributeError as error:
        raise _fail("trainer.fit_loop._data_fetcher", error) from error
    if fetcher is None:
        raise _fail("trainer.fit_loop._data_fetcher", ValueError("no data fetcher at epoch start"))
    iter(fetcher)


def load_options(weights_only: bool) -> dict[str, Any]:
    """Keyword arguments for ``load_from_checkpoint`` asking for ``weights_only`` where supported.

    Lightning 2.6 takes ``weights_only``; 2.5 has no such argument (and reads unsafely): callers
    check the file with :func:`lt_transfer.checkpoints.read_checkpoint` first either way.

    Example:
        >>> load_options(True) in ({"weights_only": True}, {})
        True
    """
    return {"weights_only": weights_only} if _LOAD_TAKES_WEIGHTS_ONLY else {}


_LOAD_TAKES_WEIGHTS_ONLY = "weights_only" in inspect.signature(
    LightningModule.load_from_checkpoint
).parameters


def lr_finder_scheduler_types() -> tuple[type, ...]:
    """The lr-scheduler classes Lightning's LR finder uses (empty if this release has other ones).

    Example:
        >>> [t.__name__ for t in lr_finder_scheduler_types()]
        ['_LinearLR', '_ExponentialLR']
    """
    try:
        from lightning.pytorch.tuner.lr_finder import _ExponentialLR, _LinearLR
    except ImportError:
        return ()  # a release without them: nothing extra to accept, nothing breaks
    return (_LinearLR, _ExponentialLR)


def _given_hyperparameters() -> Any:
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters as given
    except ImportError as error:
        raise _fail("lightning.pytorch.core.mixins.hparams_mixin._given_hyperparameters", error) from error
    return given


def cli_hparams_active() -> bool:
    """True while LightningCLI instantiates a module (it then passes its config as hparams).

    Example:
        >>> cli_hparams_active()
        False
    """
    return _given_hyperparameters().get() is not None


@contextmanager
def without_cli_hparams() -> Iterator[None]:
    """Hide LightningCLI's hyper-parameters from modules built inside this block.

    A module built inside another one during CLI instantiation (a checkpoint teacher, a nested
    student) would otherwise record the *outer* module's config as its hyper-parameters.

    Example:
        >>> with without_cli_hparams():
        ...     cli_hparams_active()
        False
    """
    given = _given_hyperparameters()
    token = given.set(None)
    try:
        yield
    finally:
        given.reset(token)


def _class_path_of(config: Any) -> str | None:
    if isinstance(config, dict):
        return config.get("class_path") or config.get("_class_path")
    return getattr(config, "class_path", None)


def _resolve_class(class_path: str) -> type | None:
    module_name, _, name = class_path.rpartition(".")
    try:
        module = __import__(module_name, fromlist=[name])
        return getattr(module, name)
    except (ImportError, AttributeError, ValueError):
        return None


def install_top_level_instantiators(cli: Any) -> None:
    """Give a LightningCLI instantiators that pass the config to the top-level classes only.

    LightningCLI passes the top-level ``model`` config as hyper-parameters to *every*
    LightningModule it instantiates, nested ones included (e.g. a ``TransferClassifier``
    student inside a ``DistillationModule``), whose ``save_hyperparameters`` then records the
    outer module's arguments. The instantiators installed here build nested modules plainly,
    so they record their own. Call it from ``before_instantiate_classes``.
    """
    try:
        from lightning.pytorch.cli import _get_module_type, _InstantiatorFn

        classes = (
            ("model", cli._model_class, cli.subclass_mode_model),
            ("data", cli._datamodule_class, cli.subclass_mode_data),
        )
    except (ImportError, AttributeError) as error:
        access = "lightning.pytorch.cli._InstantiatorFn / _get_module_type / LightningCLI._model_class"
        raise _fail(access, error) from error

    # jsonargparse passes the applied link values only to instantiators whose signature names them;
    # Lightning's own instantiator takes them from release 2.5.x on.
    takes_links = "applied_instantiation_links" in inspect.signature(_InstantiatorFn.__call__).parameters

    class _TopLevelInstantiator(_InstantiatorFn):
        def __call__(
            self, class_type: type, *args: Any, applied_instantiation_links: dict | None = None, **kwargs: Any
        ) -> Any:
            try:
                dump_config = getattr(self.cli, "_dump_config", None)  # lightning >= 2.5.x: built lazily
                if dump_config is not None:
                    dump_config()
                config = self.cli.config_dump.get(self.key, {})
            except AttributeError as error:
                raise _fail("LightningCLI._dump_config / config_dump", error) from error
            class_path = _class_path_of(config)
            if class_path is not None and _resolve_class(class_path) is not class_type:
                return class_type(*args, **kwargs)
            if takes_links:
                kwargs["applied_instantiation_links"] = applied_instantiation_links or {}
            # explicit base call: a zero-argument super() puts ``__class__`` in this frame, which
            # Lightning 2.5's save_hyperparameters frame walk mistakes for an __init__ frame
            return _InstantiatorFn.__call__(self, class_type, *args, **kwargs)

    for key, class_type, subclasses in classes:
        cli.parser.add_instantiator(
            _TopLevelInstantiator(cli=cli, key=key), _get_module_type(class_type), subclasses=subclasses
        )
