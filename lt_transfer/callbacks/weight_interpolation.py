"""WiSE-FT: interpolate between the pretrained and the fine-tuned weights, and pick the mix.

Wortsman et al., "Robust fine-tuning of zero-shot models" (CVPR 2022): the weights
:math:`(1 - \\alpha)\\, w^0 + \\alpha\\, w^{ft}` often beat both ends, and the mixing coefficient
:math:`\\alpha` costs no training to choose. Here :math:`\\alpha = 0` is the pretrained backbone
and :math:`\\alpha = 1` the fine-tuned model, bit for bit.

* :func:`pretrained_state`: a copy of the backbone's state (parameters and buffers), taken
  before fine-tuning;
* :func:`interpolate_weights`: put the model at one :math:`\\alpha`;
* :func:`interpolation_sweep`: evaluate accuracy at each :math:`\\alpha` on the validation
  and test loaders of a datamodule, choose :math:`\\alpha` on validation;
* :class:`WeightInterpolation`: the callback that snapshots at fit start (kept in its
  ``state_dict`` for resume), runs the sweep when training ends and leaves the model at the
  chosen :math:`\\alpha` (optionally saving a checkpoint per :math:`\\alpha`).

What is interpolated: every floating-point entry of the backbone's ``state_dict``,
**BatchNorm running statistics included** (interpolated with the same :math:`\\alpha`, not
recomputed: recomputing them on training data would make :math:`\\alpha = 1` differ from the
fine-tuned model). Integer buffers (``num_batches_tracked``) keep their fine-tuned values, and
so does everything outside the backbone: the head is always the fine-tuned head (the
pretrained model has none for the new classes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from typing_extensions import override

from lt_transfer.batches import input_to, split_batch
from lt_transfer.callbacks._regularization import SnapshotState, check_strategy, find_module

__all__ = [
    "InterpolationSweep",
    "WeightInterpolation",
    "interpolate_weights",
    "interpolation_sweep",
    "pretrained_state",
]

DEFAULT_ALPHAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


def pretrained_state(model: nn.Module, backbone: str = "backbone") -> dict[str, torch.Tensor]:
    """A copy of the backbone's ``state_dict`` keyed as in ``model.state_dict()``.

    Take it before fine-tuning; it is the :math:`\\alpha = 0` end of the interpolation.

    Example:
        >>> model = nn.Module()
        >>> model.backbone, model.head = nn.BatchNorm1d(2), nn.Linear(2, 2)
        >>> sorted(pretrained_state(model))  # doctest: +NORMALIZE_WHITESPACE
        ['backbone.bias', 'backbone.num_batches_tracked', 'backbone.running_mean',
         'backbone.running_var', 'backbone.weight']
    """
    module = find_module(model, backbone, "backbone", "pretrained_state")
    prefix = f"{backbone}." if backbone else ""
    return {prefix + name: value.detach().clone() for name, value in module.state_dict().items()}


def _check_alphas(alphas: Sequence[float], owner: str) -> list[float]:
    values = list(alphas) if not isinstance(alphas, (str, bytes)) else []
    if not values or any(
        isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1 for a in values
    ):
        raise ValueError(f"{owner}(alphas={alphas!r}) must be a non-empty list of numbers in [0, 1].")
    return [float(a) for a in values]


def interpolate_weights(
    model: nn.Module,
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Mapping[str, torch.Tensor],
    alpha: float,
) -> None:
    """Set ``model`` to ``(1 - alpha) * pretrained + alpha * finetuned`` on the keys of ``pretrained``.

    ``alpha=1`` gives ``finetuned`` and ``alpha=0`` ``pretrained`` exactly. Integer tensors take
    the fine-tuned value. Keys outside ``pretrained`` are left as they are.

    Raises:
        ValueError: ``alpha`` outside ``[0, 1]``, a key missing from the model or from
            ``finetuned``, or a shape mismatch.

    Example:
        >>> layer = nn.Linear(1, 1, bias=False)
        >>> interpolate_weights(layer, {"weight": torch.zeros(1, 1)}, {"weight": torch.ones(1, 1)}, 0.25)
        >>> layer.weight.item()
        0.25
    """
    _check_alphas([alpha], "interpolate_weights")
    state = model.state_dict()
    for key, start in pretrained.items():
        if key not in state or key not in finetuned:
            raise ValueError(
                f"interpolate_weights: {key!r} of the pretrained state is missing from the "
                f"{'model' if key not in state else 'fine-tuned state'}; take both from this model "
                "(pretrained_state(model) before fine-tuning)."
            )
        target, end = state[key], finetuned[key]
        if target.shape != start.shape or end.shape != start.shape:
            raise ValueError(
                f"interpolate_weights: {key!r} has shape {tuple(target.shape)} in the model, "
                f"{tuple(start.shape)} pretrained and {tuple(end.shape)} fine-tuned."
            )
        with torch.no_grad():
            if not target.is_floating_point():
                target.copy_(end)
            else:
                mixed = (1.0 - alpha) * start.to(target.device).double() + alpha * end.to(
                    target.device
                ).double()
                target.copy_(mixed.to(target.dtype))


@torch.no_grad()
def _accuracy(model: nn.Module, loader: Any) -> float:
    device = next(model.parameters()).device
    correct = total = 0
    for batch in loader:
        parsed = split_batch(batch, "interpolation_sweep")
        if parsed.y is None:
            raise ValueError("interpolation_sweep: the evaluation batches have no labels.")
        logits = model(input_to(parsed.x, device))
        y = parsed.y.to(device)
        correct += int((logits.argmax(-1) == y).sum())
        total += len(y)
    if total == 0:
        raise ValueError("interpolation_sweep: the evaluation loader yields no sample.")
    return correct / total


def _loader(datamodule: Any, stage: str, loader_index: int) -> Any:
    method = {"val": "val_dataloader", "test": "test_dataloader"}[stage]
    if isinstance(datamodule, LightningDataModule):
        datamodule.setup("validate" if stage == "val" else "test")
    loaders = getattr(datamodule, method)()
    if isinstance(loaders, (list, tuple)):
        if not 0 <= loader_index < len(loaders):
            raise ValueError(
                f"interpolation_sweep(loader_index={loader_index}) but {method}() returns "
                f"{len(loaders)} loaders."
            )
        return loaders[loader_index]
    return loaders


@dataclass
class InterpolationSweep:
    """Accuracy per mixing coefficient, and the coefficient chosen on validation.

    Attributes:
        alphas: the coefficients, in the order evaluated.
        accuracy: ``{"val": [...], "test": [...]}``, one accuracy per alpha (stages evaluated).
        best_alpha: the alpha with the highest validation accuracy (ties: the largest alpha,
            i.e. the one nearest the fine-tuned model); ``None`` without a validation stage.

    Example:
        >>> sweep = InterpolationSweep([0.0, 0.5, 1.0], {"val": [0.5, 0.8, 0.8], "test": [0.4, 0.7, 0.9]})
        >>> sweep.best_alpha, sweep.at(sweep.best_alpha)
        (1.0, {'val': 0.8, 'test': 0.9})
    """

    alphas: list[float]
    accuracy: dict[str, list[float]]
    best_alpha: float | None = field(default=None)

    def __post_init__(self) -> None:
        if self.best_alpha is None and self.accuracy.get("val"):
            scores = self.accuracy["val"]
            best = max(range(len(scores)), key=lambda i: (scores[i], self.alphas[i]))
            self.best_alpha = self.alphas[best]

    def at(self, alpha: float) -> dict[str, float]:
        """The accuracies at ``alpha`` (one of :attr:`alphas`)."""
        index = self.alphas.index(alpha)
        return {stage: values[index] for stage, values in self.accuracy.items()}


def interpolation_sweep(
    model: nn.Module,
    datamodule: Any,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    pretrained: Mapping[str, torch.Tensor] | None = None,
    stages: Sequence[Literal["val", "test"]] = ("val", "test"),
    apply: Literal["best", "finetuned"] = "best",
    loader_index: int = 0,
    save_to: str | Path | None = None,
) -> InterpolationSweep:
    """Evaluate the fine-tuned ``model`` at each mixing coefficient and choose one on validation.

    Args:
        model: the fine-tuned model; its forward maps the batch input to logits.
        datamodule: has ``val_dataloader()`` / ``test_dataloader()`` (a LightningDataModule is
            set up for each stage first); a list of loaders uses ``loader_index``.
        alphas: mixing coefficients in ``[0, 1]`` (0: pretrained backbone, 1: fine-tuned).
        pretrained: the backbone's state before fine-tuning (:func:`pretrained_state`, or
            :attr:`WeightInterpolation.snapshot`). Required.
        stages: which splits to evaluate; ``"val"`` chooses :attr:`InterpolationSweep.best_alpha`.
        apply: leave the model at the ``"best"`` alpha (needs ``"val"``), or restore the
            ``"finetuned"`` weights.
        loader_index: which loader when a split has several.
        save_to: folder to save the model's ``state_dict`` at each alpha
            (``alpha=<a>.pt``); ``None``: save nothing.

    Returns:
        An :class:`InterpolationSweep`. The model is left in eval mode if it was, else train mode.

    Raises:
        ValueError: no ``pretrained`` state, bad ``alphas``/``stages``, ``apply="best"`` without
            ``"val"``, unlabelled evaluation batches.

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from types import SimpleNamespace
        >>> model = nn.Module()
        >>> model.backbone, model.head = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> model.forward = lambda x: model.head(model.backbone(x))
        >>> start = pretrained_state(model)
        >>> loader = DataLoader(TensorDataset(torch.randn(8, 2), torch.tensor([0, 1] * 4)), batch_size=4)
        >>> data = SimpleNamespace(val_dataloader=lambda: loader, test_dataloader=lambda: loader)
        >>> sweep = interpolation_sweep(model, data, [0.0, 1.0], start)
        >>> sweep.alphas, sorted(sweep.accuracy), sweep.best_alpha in (0.0, 1.0)
        ([0.0, 1.0], ['test', 'val'], True)
    """
    values = _check_alphas(alphas, "interpolation_sweep")
    if pretrained is None or not pretrained:
        raise ValueError(
            "interpolation_sweep(pretrained=None): pass the backbone's state before fine-tuning, "
            "pretrained_state(model) taken before fit (or WeightInterpolation.snapshot)."
        )
    stages = list(stages)
    if not stages or any(stage not in ("val", "test") for stage in stages):
        raise ValueError(f"interpolation_sweep(stages={stages!r}) must list 'val' and/or 'test'.")
    if apply not in ("best", "finetuned"):
        raise ValueError(f"interpolation_sweep(apply={apply!r}) must be 'best' or 'finetuned'.")
    if apply == "best" and "val" not in stages:
        raise ValueError(
            "interpolation_sweep(apply='best') chooses alpha on validation; add 'val' to stages."
        )
    loaders = {stage: _loader(datamodule, stage, loader_index) for stage in stages}
    state = model.state_dict()
    finetuned = {key: state[key].detach().clone() for key in pretrained if key in state}
    was_training = model.training
    model.eval()
    accuracy: dict[str, list[float]] = {stage: [] for stage in stages}
    try:
        for alpha in values:
            interpolate_weights(model, pretrained, finetuned, alpha)
            for stage, loader in loaders.items():
                accuracy[stage].append(_accuracy(model, loader))
            if save_to is not None:
                folder = Path(save_to)
                folder.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), folder / f"alpha={alpha:g}.pt")
    finally:
        interpolate_weights(model, pretrained, finetuned, 1.0)
        model.train(was_training)
    result = InterpolationSweep(values, accuracy)
    if apply == "best" and result.best_alpha is not None:
        interpolate_weights(model, pretrained, finetuned, result.best_alpha)
    return result


class WeightInterpolation(SnapshotState):
    """WiSE-FT after fit: evaluate pretrained/fine-tuned weight mixes and keep the best on validation.

    At the start of the first ``fit`` the backbone's state is copied (:attr:`snapshot`, kept in
    the ``state_dict`` so a resumed run interpolates toward the same weights). When training
    ends (``on_train_end``, before the strategy is torn down) it runs
    :func:`interpolation_sweep` on the trainer's datamodule and leaves the model at the chosen
    alpha (``apply="best"``) or at the fine-tuned weights (``"finetuned"``). The result is
    :attr:`sweep` (in the training process; under ``ddp_spawn`` the main process gets the
    weights but not the attribute) and is logged at rank 0. Checkpoints written during training
    hold the fine-tuned weights; ``dirpath`` saves one ``state_dict`` per alpha (rank 0 writes).

    Args:
        alphas: mixing coefficients in ``[0, 1]`` (``None``: 0, 0.25, 0.5, 0.75, 1).
        backbone: attribute path of the pretrained part on the LightningModule.
        apply: ``"best"`` (the alpha with the best validation accuracy) or ``"finetuned"``.
        test: also evaluate the test split at each alpha.
        loader_index: which validation/test loader when the datamodule has several.
        dirpath: folder for the per-alpha ``state_dict`` files (``None``: none).

    Raises:
        ValueError: bad arguments; at ``setup``: an unknown backbone, a sharding strategy; when
            training ends: no datamodule attached to the trainer.

    Example:
        >>> import lightning.pytorch as pl
        >>> from lt_transfer import DigitsDataModule, TransferClassifier, Backbone
        >>> trunk = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 8))
        >>> model = TransferClassifier(Backbone(trunk, 8, pretrained=True), num_classes=10)
        >>> data = DigitsDataModule("sklearn_digits", image_size=8, labels_per_class=2, batch_size=10)
        >>> wise = WeightInterpolation(alphas=[0.0, 0.5, 1.0])
        >>> trainer = pl.Trainer(max_steps=2, callbacks=[wise], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
        >>> trainer.fit(model, data)
        >>> wise.sweep.alphas, wise.sweep.best_alpha in (0.0, 0.5, 1.0)
        ([0.0, 0.5, 1.0], True)
    """

    def __init__(
        self,
        alphas: list[float] | None = None,
        backbone: str = "backbone",
        apply: Literal["best", "finetuned"] = "best",
        test: bool = True,
        loader_index: int = 0,
        dirpath: str | None = None,
    ) -> None:
        super().__init__()
        self.alphas = _check_alphas(DEFAULT_ALPHAS if alphas is None else alphas, "WeightInterpolation")
        if not isinstance(backbone, str):
            raise ValueError(
                f"WeightInterpolation(backbone={backbone!r}) must be an attribute path string, e.g. "
                "'backbone'."
            )
        if apply not in ("best", "finetuned"):
            raise ValueError(f"WeightInterpolation(apply={apply!r}) must be 'best' or 'finetuned'.")
        if isinstance(loader_index, bool) or not isinstance(loader_index, int) or loader_index < 0:
            raise ValueError(f"WeightInterpolation(loader_index={loader_index!r}) must be an int >= 0.")
        self.backbone = backbone
        self.apply = apply
        self.test = bool(test)
        self.loader_index = loader_index
        self.dirpath = dirpath
        #: the backbone's state at the start of the first fit; ``None`` before it.
        self.snapshot: dict[str, torch.Tensor] | None = None
        #: the result of the sweep after training; ``None`` before.
        self.sweep: InterpolationSweep | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(backbone=self.backbone)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            check_strategy(trainer, "WeightInterpolation")
            find_module(pl_module, self.backbone, "backbone", "WeightInterpolation")

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.snapshot is None:
            if trainer.ckpt_path is not None:
                raise ValueError(
                    f"WeightInterpolation: this run resumes from {trainer.ckpt_path!r}, which holds no "
                    "pretrained snapshot of the callback; resume from a checkpoint written with it."
                )
            self.snapshot = pretrained_state(pl_module, self.backbone)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.snapshot is None:
            return
        datamodule = trainer.datamodule
        if datamodule is None:
            raise ValueError(
                "WeightInterpolation evaluates the interpolated weights on the datamodule's validation "
                "split, but the trainer has no datamodule; call trainer.fit(model, datamodule=...), or "
                "run interpolation_sweep yourself with loaders."
            )
        stages: list[Literal["val", "test"]] = ["val", "test"] if self.test else ["val"]
        self.sweep = interpolation_sweep(
            pl_module,
            datamodule,
            self.alphas,
            self.snapshot,
            stages=stages,
            apply=self.apply,
            loader_index=self.loader_index,
            save_to=self.dirpath if trainer.is_global_zero else None,  # one writer under DDP
        )
        lines = [
            f"alpha={alpha:g}: "
            + ", ".join(f"{stage} acc {values[i]:.4f}" for stage, values in self.sweep.accuracy.items())
            for i, alpha in enumerate(self.sweep.alphas)
        ]
        rank_zero_info(
            "WeightInterpolation (WiSE-FT): "
            + "; ".join(lines)
            + f"; chosen on val: alpha={self.sweep.best_alpha:g}"
            + (" (applied)" if self.apply == "best" else " (model left fine-tuned)")
        )
