"""What the regularisation callbacks (L2SP, DELTA, BSS, WeightInterpolation) share.

* :func:`find_module`: an attribute path (``backbone="..."``, ``head="..."``) resolved on the
  LightningModule, with an error that lists what exists;
* :func:`check_strategy`: single device and DDP only (sharding strategies flatten or split the
  parameters that a snapshot is matched to by name);
* :func:`loss_scale`: the factor Lightning puts on the returned loss before ``backward``;
* :class:`SnapshotState`: the ``state_dict`` of callbacks whose progress is a pretrained snapshot;
* :class:`ActivationPenalty`: the mechanism of the feature regularisers (DELTA, BSS).

**How a penalty on activations enters the loss.** A callback cannot change the loss that a
LightningModule returns, so the penalty's *gradient* is added instead. A forward hook on the
regularised module computes the penalty :math:`\\Omega(a)` of its output :math:`a` and
:math:`\\partial\\Omega/\\partial a` (the loss function itself, differentiated by autograd on a
detached copy of :math:`a`), and registers a tensor hook on :math:`a` that adds
:math:`c\\,\\partial\\Omega/\\partial a` to the gradient arriving at :math:`a` during
``backward``. :math:`c` is what Lightning multiplies the returned loss by before ``backward``:
``1 / accumulate_grad_batches``, times the ``GradScaler`` scale under ``"16-mixed"``
(:func:`loss_scale`). Everything upstream of :math:`a` then receives exactly the gradient of
``loss + Ω``; the tests compare it with that loss form. It works with any module, under DDP
(the added gradient is part of each rank's backward, before the all-reduce, as the loss form's
would be), under autocast (the penalties run in float32) and with manual optimisation through
``manual_backward``. An output that does not require grad (everything below it frozen, e.g. by
:class:`~lt_transfer.callbacks.ProgressiveUnfreezing`) carries no penalty: nothing it could move
trains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from typing_extensions import override

__all__ = ["ActivationPenalty", "SnapshotState", "check_strategy", "find_module", "loss_scale"]


def find_module(pl_module: nn.Module, path: str, argument: str, owner: str) -> nn.Module:
    """The sub-module at attribute ``path`` (``""``: the module itself), or a ``ValueError`` naming it.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> find_module(net, "0", "backbone", "L2SP")
        Linear(in_features=2, out_features=2, bias=True)
        >>> find_module(net, "encoder", "backbone", "L2SP")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: L2SP(backbone='encoder'): Sequential has no such sub-module; it has ['0']. ...
    """
    if not isinstance(path, str):
        raise ValueError(f"{owner}({argument}={path!r}) must be an attribute path string, e.g. 'backbone'.")
    try:
        return pl_module.get_submodule(path)
    except AttributeError as error:
        names = [name for name, _ in pl_module.named_modules() if name and name.count(".") < 2]
        raise ValueError(
            f"{owner}({argument}={path!r}): {type(pl_module).__name__} has no such sub-module; it has "
            f"{names[:20]}. Pass the attribute path of the module, e.g. {argument}='model.encoder'."
        ) from error


def check_strategy(trainer: Trainer, owner: str) -> None:
    """Raise unless the strategy keeps whole, named parameters on every rank (single device, DDP).

    Example:
        >>> check_strategy(Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False),
        ...                "L2SP")
    """
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    strategy = trainer.strategy
    if not isinstance(strategy, (DDPStrategy, SingleDeviceStrategy)):
        raise ValueError(
            f"{owner} supports single-device and DDP strategies (ddp, ddp_spawn, ddp_fork); got "
            f"{type(strategy).__name__}, which shards or flattens parameters, so the pretrained "
            "snapshot cannot be matched to them by name. Use strategy='ddp' or a single device."
        )


def loss_scale(trainer: Trainer) -> float:
    """The factor Lightning applies to the returned loss before ``backward``.

    ``1 / accumulate_grad_batches`` (automatic optimisation divides the loss by it), times the
    current ``GradScaler`` scale when the precision plugin has an enabled one (``"16-mixed"``).

    Example:
        >>> loss_scale(Trainer(accumulate_grad_batches=4, logger=False, enable_progress_bar=False,
        ...                    enable_model_summary=False))
        0.25
    """
    scale = 1.0
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is not None and scaler.is_enabled():
        scale = float(scaler.get_scale())
    return scale / trainer.accumulate_grad_batches


class SnapshotState(Callback):
    """A callback whose saved progress is :attr:`snapshot` (``{name: tensor}``, ``None`` before fit).

    Checkpoints hold the snapshot's tensors as they are, so a resumed run gets them bit for bit.

    Example:
        >>> class Keeper(SnapshotState):
        ...     snapshot = None
        >>> keeper = Keeper()
        >>> keeper.state_dict()
        {}
        >>> keeper.load_state_dict({"snapshot": {"w": torch.ones(1)}})
        >>> keeper.state_dict()
        {'snapshot': {'w': tensor([1.])}}
    """

    snapshot: dict[str, torch.Tensor] | None

    @override
    def state_dict(self) -> dict[str, Any]:
        return {} if self.snapshot is None else {"snapshot": dict(self.snapshot)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "snapshot" in state_dict:
            self.snapshot = dict(state_dict["snapshot"])


class ActivationPenalty(Callback):
    """Base of callbacks that add a penalty on module outputs to the loss (see the module doc).

    Subclasses register forward hooks (kept in :attr:`handles`, removed at teardown) and call
    :meth:`add_penalty` with a module's output and the penalty function. Penalties apply only
    inside training batches (``on_train_batch_start`` to ``on_train_batch_end``) with grad
    enabled, i.e. never in validation, testing or prediction. Their sum over a batch is logged as
    ``<log_name>/penalty``.

    Args:
        backbone: attribute path of the regularised backbone on the LightningModule.
        log_name: prefix of the logged penalty (the callback's name in lower case).

    Example:
        >>> class Norm(ActivationPenalty):
        ...     pass
        >>> Norm("backbone", "norm").backbone
        'backbone'
    """

    def __init__(self, backbone: str, log_name: str) -> None:
        super().__init__()
        if not isinstance(backbone, str):
            raise ValueError(
                f"{type(self).__name__}(backbone={backbone!r}) must be an attribute path string, e.g. "
                "'backbone'."
            )
        self.backbone = backbone
        self.log_name = log_name
        self.handles: list[Any] = []
        self._active = False
        self._scale = 1.0
        self._values: list[torch.Tensor] = []

    def add_penalty(self, output: Any, penalty: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Add ``penalty(output)`` to the loss of the running training batch (no-op outside one).

        The penalty and its gradient are computed now, on ``output`` as it is (before any later
        in-place change); the gradient is added to ``output``'s during backward.
        """
        if not (self._active and torch.is_grad_enabled() and isinstance(output, torch.Tensor)):
            return
        if not output.requires_grad:
            return  # nothing upstream trains: the penalty could not move anything
        with torch.enable_grad():
            leaf = output.detach().requires_grad_(True)
            value = penalty(leaf)
            (gradient,) = torch.autograd.grad(value, leaf)
        self._values.append(value.detach())
        output.register_hook(lambda grad: grad + (self._scale * gradient).to(grad.dtype))

    @property
    def active(self) -> bool:
        """Whether a training batch is running (penalties apply)."""
        return self._active

    def remove_hooks(self) -> None:
        """Remove every hook this callback registered."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._active = True
        self._values = []
        self._scale = loss_scale(trainer)

    @override
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        self._scale = loss_scale(trainer)  # the GradScaler's scale of this very backward

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._active = False
        if self._values:
            total = torch.stack([v.float() for v in self._values]).sum()
            pl_module.log(f"{self.log_name}/penalty", total, on_step=True, on_epoch=False)
        self._values = []

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._active = False
        self._values = []
        self.remove_hooks()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["handles"] = []  # hook handles are not picklable (ddp_spawn pickles callbacks)
        state["_values"] = []
        return state
