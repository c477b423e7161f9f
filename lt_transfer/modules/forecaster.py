"""TransferForecaster: a (pretrained) backbone plus a regression head forecasting the next values.

Why not :class:`~lt_transfer.modules._base.ClassificationModule`: its evaluation (cross-entropy,
accuracy, label checks, class probabilities) is all about classes. This module shares what
fits (self-contained checkpoints, the backbone fine-tuning of
:class:`~lt_transfer.modules._finetuning.BackboneFinetuning` as in
:class:`~lt_transfer.TransferClassifier`, ``lr_scale`` from :mod:`lt_transfer.optim`, the batch
contract of :mod:`lt_transfer.batches`) and has its own regression evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanAbsoluteError

from lt_transfer._lightning_compat import attached_trainer
from lt_transfer.backbones import Backbone, build_backbone
from lt_transfer.batches import split_batch
from lt_transfer.metrics.forecasting import SMAPE, MeanAbsoluteScaledError
from lt_transfer.modules._checkpointing import SelfContainedCheckpoints
from lt_transfer.modules._finetuning import BackboneFinetuning, FinetuneMode, FrozenMode
from lt_transfer.optim import apply_lr_scales, no_decay_parameter_ids, param_groups_for

__all__ = ["ForecastLoss", "TransferForecaster"]

#: The training loss on scaled values.
ForecastLoss = Literal["mse", "mae"]
_LOSSES = {"mse": F.mse_loss, "mae": F.l1_loss}


class TransferForecaster(BackboneFinetuning, SelfContainedCheckpoints):
    """Backbone + linear head predicting the next ``horizon`` values of a series from a window.

    ``forward(x)`` maps windows ``(N, C, window)`` to forecasts ``(N, horizon)`` (of channel 0,
    in the batch's scaled units): ``head(backbone(x))``, plus, with ``linear_window`` set, a linear
    map of the input window itself (the autoregressive "highway" of LSTNet, Lai et al. 2018: a
    pooled convolutional backbone sees shapes, the linear path the levels).

    Transfer: pretrain on many source series (:class:`~lt_transfer.data.ForecastingDataModule`
    with ``holdout="none"``), then forecast a target series zero-shot (``trainer.test`` with the
    pretrained model) or fine-tune the whole model on the target's short history
    (``trainer.fit`` again, e.g. after ``load_from_checkpoint``). ``weights=`` starts only the
    backbone from a file (a classifier's, say). ``finetune``, ``trainable_groups``,
    ``backbone_lr_scale``, ``layer_decay`` and ``frozen_mode`` work as in
    :class:`~lt_transfer.TransferClassifier`.

    Batches (:mod:`lt_transfer.batches`): ``(x, y)`` tuples or dicts with ``x`` and ``y``
    ``(N, horizon)``. Dict batches of :class:`~lt_transfer.data.ForecastingDataModule` also
    carry ``loc``/``scale`` (forecasts are scaled back to the series' units for the metrics and
    for ``predict_step``) and ``mase_scale``. Logged: ``train/loss``; ``val/`` and ``test/``
    ``loss`` (scaled units), ``mae``, ``smape`` (percent, M4) and ``mase`` (in series units;
    without ``loc``/``scale`` the batch's units).

    Args:
        backbone: a spec string (``"ts/fcn"``, ``"ts/resnet1d"``, ``"ts/inception"``: one input
            channel) or a :class:`~lt_transfer.Backbone` (e.g. ``FCNBackbone(in_channels=3)``).
        horizon: values forecast per window.
        weights: weights file of a spec-string backbone.
        linear_window: input length of the linear path (the data's ``window``); ``None``: no linear
            path (any input length).
        finetune: ``"frozen"``, ``"partial"`` or ``"full"``.
        trainable_groups: for ``"partial"``: how many layer groups, counted from the head, train.
        backbone_lr_scale: lr multiplier of the backbone group nearest the head; ``None``: 0.1
            for a pretrained backbone, else 1.0.
        layer_decay: lr multiplier per group towards the input; ``None``: no decay.
        frozen_mode: mode of the modules of frozen layer groups (``"eval"``: BatchNorm keeps its
            running statistics).
        loss: ``"mae"`` or ``"mse"`` on scaled values.
        head_dropout: dropout before the head.
        optimizer: optimizer factory taking param groups.
        scheduler: optional lr-scheduler factory.
        scheduler_interval: step the scheduler each ``"epoch"`` or ``"step"``.
        scheduler_monitor: metric for schedulers that need one.

    Raises:
        ValueError: inconsistent arguments; at run time, targets whose length is not
            ``horizon``, inputs whose length is not ``linear_window`` (named in the message).

    Example:
        >>> model = TransferForecaster("ts/fcn", horizon=6, linear_window=12)
        >>> model(torch.zeros(4, 1, 12)).shape
        torch.Size([4, 6])
        >>> [g["name"] for g in model.param_groups()][:3]
        ['head', 'head.no_decay', 'backbone.block3']
    """

    def __init__(
        self,
        backbone: str | Backbone = "ts/fcn",
        horizon: int = 6,
        weights: str | None = None,
        linear_window: int | None = None,
        finetune: FinetuneMode = "full",
        trainable_groups: int | None = None,
        backbone_lr_scale: float | None = None,
        layer_decay: float | None = None,
        frozen_mode: FrozenMode = "eval",
        loss: ForecastLoss = "mae",
        head_dropout: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        scheduler_monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        ignored = ["optimizer", "scheduler"] + (["backbone"] if isinstance(backbone, nn.Module) else [])
        self.save_hyperparameters(ignore=ignored)
        name = type(self).__name__
        for argument, value in (("horizon", horizon), ("linear_window", linear_window)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}({argument}={value!r}) must be an int >= 1.")
        choices = {
            "loss": (loss, tuple(_LOSSES)),
            "scheduler_interval": (scheduler_interval, ("epoch", "step")),
        }
        for argument, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"{name}({argument}={value!r}) must be one of {list(allowed)}.")
        if not 0 <= head_dropout < 1:
            raise ValueError(f"{name}(head_dropout={head_dropout}) must be in [0, 1).")
        if isinstance(backbone, str):
            self.backbone = build_backbone(backbone, weights)
        elif isinstance(backbone, Backbone) and weights is None:
            self.backbone = backbone
        else:
            raise ValueError(
                f"{name}(backbone={type(backbone).__name__}, weights={weights!r}): pass a spec string "
                "(weights apply to it) or a Backbone with its weights already loaded."
            )
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.init_finetuning(finetune, trainable_groups, backbone_lr_scale, layer_decay, frozen_mode)
        linear = nn.Linear(self.backbone.num_features, horizon)
        self.head = nn.Sequential(nn.Dropout(head_dropout), linear) if head_dropout else linear
        self.linear_path = nn.Linear(linear_window, horizon) if linear_window is not None else None
        self._metrics = nn.ModuleDict(
            {
                f"{stage}_{metric}": factory()
                for stage in ("val", "test")
                for metric, factory in (
                    ("mae", MeanAbsoluteError),
                    ("smape", SMAPE),
                    ("mase", MeanAbsoluteScaledError),
                )
            }
        )
        self.train()

    # ------------------------------------------------------------------ model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecasts ``(N, horizon)`` of windows ``(N, C, window)`` (scaled units)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__} takes a tensor of windows (N, C, window), got {type(x).__name__}; "
                "series of different lengths cannot share a batch (ForecastingDataModule pads them)."
            )
        out = self.head(self.backbone(x))
        if self.linear_path is not None:
            window = self.linear_path.in_features
            if x.shape[-1] != window:
                raise ValueError(
                    f"{type(self).__name__}(linear_window={window}) got inputs of length {x.shape[-1]}; use "
                    f"ForecastingDataModule(window={window}) or build the model with linear_window=None."
                )
            out = out + self.linear_path(x[:, 0, :])
        return out

    # -------------------------------------------------------------- optimizer
    def param_groups(self) -> list[dict]:
        """Head (and linear path) at the full rate, then trainable backbone groups (output → input).

        Example:
            >>> model = TransferForecaster("ts/fcn", horizon=2, backbone_lr_scale=0.5, layer_decay=0.5)
            >>> [(g["name"], g["lr_scale"]) for g in model.param_groups() if "no_decay" not in g["name"]]
            [('head', 1.0), ('backbone.block3', 0.5), ('backbone.block2', 0.25), ('backbone.block1', 0.125)]
        """
        no_decay = no_decay_parameter_ids(self)
        head = list(self.head.named_parameters())
        if self.linear_path is not None:
            head += list(self.linear_path.named_parameters(prefix="linear_path"))
        return param_groups_for("head", head, 1.0, no_decay) + self.backbone_param_groups(no_decay)

    def configure_optimizers(self) -> Any:
        """The optimizer over :meth:`param_groups` (``lr_scale`` applied), with the scheduler if any."""
        optimizer = self.optimizer_factory(self.param_groups())
        apply_lr_scales(optimizer)
        if self.scheduler_factory is None:
            return optimizer
        config = {"scheduler": self.scheduler_factory(optimizer), "interval": self.hparams.scheduler_interval}
        return {"optimizer": optimizer, "lr_scheduler": {**config, "monitor": self.hparams.scheduler_monitor}}

    # ------------------------------------------------------------------- steps
    def setup(self, stage: str) -> None:
        """Check ``horizon`` (and ``linear_window``) against the datamodule's ``horizon`` / ``window``."""
        trainer = attached_trainer(self)
        datamodule = trainer.datamodule if trainer is not None else None
        pairs = (("horizon", "horizon"), ("linear_window", "window"))
        for own_name, their_name in pairs:
            own, theirs = self.hparams[own_name], getattr(datamodule, their_name, None)
            if own is not None and isinstance(theirs, int) and theirs != own:
                raise ValueError(
                    f"{type(self).__name__}({own_name}={own}) but the datamodule {type(datamodule).__name__} "
                    f"has {their_name}={theirs}; make them equal."
                )

    def _forecast(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        parsed = split_batch(batch, type(self).__name__)
        preds = self(parsed.x)
        if parsed.y is not None and parsed.y.shape != preds.shape:
            raise ValueError(
                f"{type(self).__name__}(horizon={self.hparams.horizon}) forecasts {tuple(preds.shape)} but "
                f"the targets have shape {tuple(parsed.y.shape)}; the data's horizon must equal the model's."
            )
        return preds, parsed.y

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        preds, y = self._forecast(batch)
        if y is None:
            raise ValueError(f"{type(self).__name__}.training_step needs targets: (x, y) or a dict with 'y'.")
        loss = _LOSSES[self.hparams.loss](preds, y)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def _evaluate(self, stage: str, batch: Any) -> torch.Tensor | None:
        preds, y = self._forecast(batch)
        if y is None:
            return None
        loss = _LOSSES[self.hparams.loss](preds, y)
        options = {"on_epoch": True, "batch_size": len(y), "add_dataloader_idx": False}
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True, **options)
        values, targets = _unscaled(batch, preds), _unscaled(batch, y)
        scale = batch.get("mase_scale") if isinstance(batch, Mapping) else None
        if scale is None:  # no history given: scale 1, i.e. the MAE per series
            scale = torch.ones(len(y), device=y.device)
        for metric in ("mae", "smape", "mase"):
            state = self._metrics[f"{stage}_{metric}"]
            if metric == "mase":
                state.update(values, targets, scale)
            else:
                state.update(values, targets)
            self.log(f"{stage}/{metric}", state, metric_attribute=f"_metrics.{stage}_{metric}", **options)
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        return self._evaluate("val", batch)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        return self._evaluate("test", batch)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Forecasts ``(N, horizon)`` in the series' units (scaled back by the batch's ``loc``/``scale``)."""
        return _unscaled(batch, self(split_batch(batch, type(self).__name__).x))


def _unscaled(batch: Any, values: torch.Tensor) -> torch.Tensor:
    """``values * scale + loc`` with the batch's per-window ``loc``/``scale``, if it has them."""
    if not isinstance(batch, Mapping) or "scale" not in batch or "loc" not in batch:
        return values
    return values * batch["scale"].view(-1, 1) + batch["loc"].view(-1, 1)
