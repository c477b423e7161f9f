"""L2-SP: weight decay toward the pretrained weights instead of toward zero.

Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional
Networks" (ICML 2018). With :math:`S` the parameters that come from the pretrained model
(the backbone), :math:`w^0_S` their values at the start of fine-tuning and :math:`\\bar S`
the parameters that are new (the classification head), the penalty is

.. math::

    \\Omega(w) = \\frac{\\alpha}{2} \\lVert w_S - w^0_S \\rVert_2^2
        + \\frac{\\beta}{2} \\lVert w_{\\bar S} \\rVert_2^2 .

The first term keeps the fine-tuned backbone close to its starting point (it fights
catastrophic forgetting when labels are few); the second is plain L2 on the head, which has
no meaningful starting point. Li et al. choose :math:`\\alpha` and :math:`\\beta` by
cross-validation; ``alpha=0.1, beta=0.01`` are the defaults here.

Parameters are matched to their snapshot **by name**, and a parameter object passed twice is
counted once (identity); values are never compared. A parameter with
``requires_grad=False`` (a frozen layer group) carries no penalty, so progressive unfreezing
penalises a group only once it trains, and then from its pretrained values. The snapshot is
taken once, before the first step, over *all* pretrained parameters, frozen ones included.
The sums run in float32 for half-precision parameters.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import torch
from torch import nn

from lt_transfer.losses._float32 import float32

__all__ = ["L2SPLoss", "l2sp_loss", "parameter_snapshot"]


def _check_strength(value: float, name: str, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{owner}({name}={value!r}) must be a number >= 0 (0 switches the term off).")
    return float(value)


def parameter_snapshot(named_parameters: Iterable[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Detached copies of parameters by name: the pretrained starting point :math:`w^0`.

    Frozen parameters are included (they may be unfrozen later). The copies keep the dtype
    and device of the parameters, so the snapshot is bit-exact.

    Args:
        named_parameters: ``(name, parameter)`` pairs, e.g. ``backbone.named_parameters()``.

    Returns:
        A new ``{name: tensor}`` dict; later training does not change it.

    Example:
        >>> layer = torch.nn.Linear(2, 1)
        >>> snapshot = parameter_snapshot(layer.named_parameters())
        >>> sorted(snapshot), snapshot["weight"].requires_grad
        (['bias', 'weight'], False)
    """
    return {name: param.detach().clone() for name, param in named_parameters}


def l2sp_loss(
    named_parameters: Iterable[tuple[str, torch.Tensor]],
    snapshot: Mapping[str, torch.Tensor],
    new_parameters: Collection[str] = (),
    alpha: float = 0.1,
    beta: float = 0.01,
    validate_args: bool = True,
) -> torch.Tensor:
    """L2-SP penalty ``alpha/2 ||w - w0||² + beta/2 ||w_new||²`` (Li et al., ICML 2018).

    Args:
        named_parameters: the current ``(name, parameter)`` pairs (pretrained and new).
            Names must be the ones the snapshot was taken with.
        snapshot: ``{name: w0}`` of the pretrained parameters (:func:`parameter_snapshot`).
        new_parameters: names of the parameters that are new (the head): plain L2.
        alpha: strength of the pull toward the pretrained weights.
        beta: strength of the plain L2 on the new parameters.
        validate_args: check that every parameter is either in the snapshot or new, that every
            snapshot entry is passed, and that shapes match.

    Returns:
        A scalar (float32 for half-precision parameters); 0 when every parameter is frozen.

    Raises:
        ValueError: a parameter neither in ``snapshot`` nor in ``new_parameters``, a name in
            both, a snapshot entry or new name that was not passed, or a shape mismatch.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> head = torch.nn.Parameter(torch.tensor([3.0]))
        >>> snapshot = {"w": torch.tensor([0.0, 2.0])}
        >>> l2sp_loss([("w", w), ("head", head)], snapshot, {"head"}, alpha=1.0, beta=0.5)
        tensor(2.7500, grad_fn=<AddBackward0>)
    """
    new = set(new_parameters)
    if validate_args:
        _check_strength(alpha, "alpha", "l2sp_loss")
        _check_strength(beta, "beta", "l2sp_loss")
        both = sorted(new & set(snapshot))
        if both:
            raise ValueError(
                f"l2sp_loss: {both[:3]} are in new_parameters and also have a pretrained snapshot; a "
                "parameter is either pretrained (pulled toward w0) or new (plain L2): remove it from one."
            )
    seen_ids: set[int] = set()
    seen_names: set[str] = set()
    pretrained_terms: list[torch.Tensor] = []
    new_terms: list[torch.Tensor] = []
    reference: torch.Tensor | None = None  # for the device of a zero result
    for name, param in named_parameters:
        seen_names.add(name)
        if id(param) in seen_ids:  # the same parameter object under a second name: count it once
            continue
        seen_ids.add(id(param))
        reference = param if reference is None else reference
        if name in new:
            if param.requires_grad:
                new_terms.append(float32(param).pow(2).sum())
        elif name in snapshot:
            start = snapshot[name]
            if validate_args and start.shape != param.shape:
                raise ValueError(
                    f"l2sp_loss: parameter {name!r} has shape {tuple(param.shape)} but its snapshot has "
                    f"shape {tuple(start.shape)}; take the snapshot from the same model."
                )
            if param.requires_grad:
                current = float32(param)
                diff = current - start.detach().to(device=current.device, dtype=current.dtype)
                pretrained_terms.append(diff.pow(2).sum())
        elif validate_args:
            raise ValueError(
                f"l2sp_loss: parameter {name!r} is neither in the snapshot nor in new_parameters; add "
                "it to new_parameters if it is new (the head), snapshot it if it is pretrained, or "
                "leave it out of named_parameters if it should carry no penalty."
            )
    if validate_args:
        missing = sorted((set(snapshot) | new) - seen_names)
        if missing:
            raise ValueError(
                f"l2sp_loss: {missing[:3]} ({len(missing)} in all) are in the snapshot or new_parameters "
                "but were not passed in named_parameters; pass the parameters under the names the "
                "snapshot was taken with (same module, same prefix)."
            )
    zero = torch.zeros((), device=None if reference is None else reference.device)
    pretrained_sum = torch.stack(pretrained_terms).sum() if pretrained_terms else zero
    new_sum = torch.stack(new_terms).sum() if new_terms else zero
    return 0.5 * alpha * pretrained_sum + 0.5 * beta * new_sum


def _buffer_name(name: str) -> str:
    return "w0:" + name.replace(".", ":")


class L2SPLoss(nn.Module):
    """L2-SP holding its pretrained snapshot as buffers (saved in checkpoints, moved by ``.to``).

    The snapshot is taken at construction, so build the module before the first training
    step. Its buffers are named ``w0:<parameter name with ':' for '.'>``; restoring a
    checkpoint (``load_state_dict``) restores the original snapshot bit-exactly, whatever the
    weights were when the module was rebuilt. As a child of a module wrapped in DDP the
    snapshot (a copy of the backbone) would be broadcast from rank 0 at every forward
    (``broadcast_buffers``); hold it outside the wrapped module (e.g. in a callback) instead.

    Args:
        pretrained: ``(name, parameter)`` pairs of the pretrained parameters (frozen included).
        new_parameters: names of the new parameters (the head), which get plain L2.
        alpha: strength of the pull toward the pretrained weights.
        beta: strength of the plain L2 on the new parameters.
        validate_args: check names and shapes on every call.

    Raises:
        ValueError: negative strengths, no pretrained parameter, or names that collide once
            ``.`` is written ``:``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
        >>> loss_fn = L2SPLoss(model[0].named_parameters(prefix="0"), ["1.weight", "1.bias"])
        >>> loss_fn(model.named_parameters()).item() == 0.0  # backbone at w0, head zeroed below
        False
        >>> with torch.no_grad():
        ...     _ = [p.zero_() for p in model[1].parameters()]
        >>> loss_fn(model.named_parameters()).item()
        0.0
        >>> sorted(loss_fn.state_dict())
        ['w0:0:bias', 'w0:0:weight']
    """

    def __init__(
        self,
        pretrained: Iterable[tuple[str, torch.Tensor]],
        new_parameters: Collection[str] = (),
        alpha: float = 0.1,
        beta: float = 0.01,
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        self.alpha = _check_strength(alpha, "alpha", "L2SPLoss")
        self.beta = _check_strength(beta, "beta", "L2SPLoss")
        self.new_parameters: tuple[str, ...] = tuple(new_parameters)
        self.validate_args = validate_args
        snapshot = parameter_snapshot(pretrained)
        if not snapshot:
            raise ValueError(
                "L2SPLoss(pretrained=...) got no parameter; pass the pretrained model's named_parameters() "
                "(frozen ones included), e.g. model.backbone.named_parameters(prefix='backbone')."
            )
        buffer_names = {_buffer_name(name) for name in snapshot}
        if len(buffer_names) != len(snapshot):
            raise ValueError(
                "L2SPLoss: two parameter names differ only by '.' versus ':' and would share a buffer; "
                "rename one of the modules."
            )
        self.parameter_names: tuple[str, ...] = tuple(snapshot)
        for name, value in snapshot.items():
            self.register_buffer(_buffer_name(name), value)

    def snapshot(self) -> dict[str, torch.Tensor]:
        """The pretrained weights ``{parameter name: w0}`` (the buffers themselves, not copies)."""
        return {name: getattr(self, _buffer_name(name)) for name in self.parameter_names}

    def forward(self, named_parameters: Iterable[tuple[str, torch.Tensor]]) -> torch.Tensor:
        """Return the L2-SP penalty of the current ``(name, parameter)`` pairs."""
        return l2sp_loss(
            named_parameters, self.snapshot(), self.new_parameters, self.alpha, self.beta, self.validate_args
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, pretrained={len(self.parameter_names)}, "
            f"new={len(self.new_parameters)}"
        )
