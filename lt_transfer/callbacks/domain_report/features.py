"""Feature vectors of a network's sub-module over a loader: what the domain-shift report compares.

:func:`resolve_feature_fn` finds the callable at an attribute path of a module (the backbone,
or any sub-module or method); :func:`extract_features` runs it over a loader, reading each
batch by the batch contract (:func:`lt_transfer.batches.split_batch`), and returns ``(N, D)``
features with the class labels when the batches have them; :func:`forward_with_features`
returns a module's output together with its backbone's features from one forward pass.
The transferability ranking (:func:`lt_transfer.ranking.rank_models`) and
:class:`~lt_transfer.callbacks.target_validation.TargetValidation` use them too (``where``
names the caller in messages).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from lt_transfer.batches import input_to, split_batch

__all__ = ["as_feature_vectors", "extract_features", "forward_with_features", "resolve_feature_fn"]


def resolve_feature_fn(
    module: nn.Module, backbone: str, where: str = "DomainShiftReport"
) -> Callable[[Any], torch.Tensor]:
    """Return the callable at attribute path ``backbone`` of ``module`` (e.g. ``"backbone"``).

    The attribute may be a sub-module or a method (``"forward_features"``); ``""`` means the
    module itself. ``where`` names the caller in messages.

    Raises:
        ValueError: when the path does not exist or is not callable (the message lists the
            module's children).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> resolve_feature_fn(net, "0")(torch.zeros(5, 4)).shape
        torch.Size([5, 3])
    """
    target: Any = module
    for part in [p for p in backbone.split(".") if p]:
        if not hasattr(target, part):
            children = [name for name, _ in module.named_children()]
            raise ValueError(
                f"{where}(backbone={backbone!r}): {type(target).__name__} has no attribute "
                f"{part!r}. The module's children are {children}; name the sub-module (or method) whose "
                "output is the feature vector, e.g. backbone='backbone' or backbone='encoder.pool'."
            )
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(
            f"{where}(backbone={backbone!r}) names a {type(target).__name__}, not a module or "
            "method; name the sub-module whose output is the feature vector."
        )
    return target


def as_feature_vectors(out: Any, where: str = "DomainShiftReport") -> torch.Tensor:
    """A feature function's output as ``(N, D)`` vectors (dtype kept).

    A tuple or list gives its first entry; ``(N, C, H, W)`` maps are average-pooled; other
    shapes are flattened after the batch dimension.

    Raises:
        ValueError: an output that is not a tensor.

    Example:
        >>> as_feature_vectors((torch.ones(2, 3, 4, 4), "aux")).shape
        torch.Size([2, 3])
    """
    if isinstance(out, (list, tuple)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ValueError(
            f"{where}: the feature function returned {type(out).__name__}; it must return a "
            "tensor (N, D) (or (N, C, H, W), which is average-pooled)."
        )
    if out.dim() == 4:
        out = out.mean(dim=(2, 3))
    return out.flatten(1)


def forward_with_features(
    module: nn.Module, x: Any, backbone: str, where: str = "DomainShiftReport"
) -> tuple[Any, torch.Tensor]:
    """``module(x)`` and the ``(N, D)`` features of its sub-module at path ``backbone``, in one pass.

    When ``backbone`` names a sub-module that ``module``'s forward calls exactly once, its
    output is captured by a forward hook during ``module(x)``; otherwise (a method, or a
    forward that does not call it once) the feature function runs a second time on ``x``;
    ``""`` (the module itself) gives its output twice.
    Run it under ``torch.no_grad()`` and in the mode you want (nothing is switched here).

    Raises:
        ValueError: a path that does not exist (see :func:`resolve_feature_fn`).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> out, features = forward_with_features(net, torch.zeros(5, 4), "0")
        >>> out.shape, features.shape
        (torch.Size([5, 2]), torch.Size([5, 3]))
    """
    fn = resolve_feature_fn(module, backbone, where)
    captured: list[Any] = []

    def capture(_module: nn.Module, _inputs: Any, output: Any) -> None:
        # a copy: a later in-place op of the forward (ReLU(inplace=True)) must not change it
        captured.append(output.clone() if isinstance(output, torch.Tensor) else output)

    handle = None
    if isinstance(fn, nn.Module) and fn is not module:
        handle = fn.register_forward_hook(capture)
    try:
        out = module(x)
    finally:
        if handle is not None:
            handle.remove()
    if fn is module:
        features = out
    else:
        features = captured[0] if len(captured) == 1 else fn(x)
    return out, as_feature_vectors(features, where)


def extract_features(
    fn: Callable[[Any], torch.Tensor],
    loader: Iterable,
    max_samples: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    where: str = "DomainShiftReport",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features ``(N, D)`` (CPU, ``dtype``) and labels (or ``None``) of up to ``max_samples`` inputs.

    Batches are read by the batch contract of :mod:`lt_transfer.batches` (a tensor,
    ``(x, y[, index])``, a dict with ``"image"``/``"x"``/... and ``"label"``/``"y"``/...); the
    labels are kept when every batch has class indices ``(N,)``. Modules reached by ``fn``
    should already be in eval mode (the callback takes care of it). ``dtype`` is the storage
    type (``torch.float16`` halves the memory of large feature sets); ``where`` names the
    caller in messages.

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> loader = DataLoader(TensorDataset(torch.randn(10, 4), torch.arange(10)), batch_size=4)
        >>> feats, labels = extract_features(nn.Linear(4, 2), loader, max_samples=6)
        >>> feats.shape, labels.tolist()
        (torch.Size([6, 2]), [0, 1, 2, 3, 4, 5])
    """
    feats: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    seen = 0
    with torch.no_grad():
        for raw in loader:
            batch = split_batch(raw, where)
            feats.append(as_feature_vectors(fn(input_to(batch.x, device)), where).to("cpu", dtype))
            if batch.y is not None and batch.y.dim() == 1:
                labels.append(batch.y.cpu())
            seen += len(feats[-1])
            if max_samples is not None and seen >= max_samples:
                break
    if not feats:
        raise ValueError(f"{where}: a dataloader yielded no batches; it needs samples.")
    out = torch.cat(feats)
    lab = torch.cat(labels) if len(labels) == len(feats) else None
    if max_samples is not None:
        out = out[:max_samples]
        lab = lab[:max_samples] if lab is not None else None
    return out, lab
