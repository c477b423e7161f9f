"""BackboneFinetuning: which layer groups of a module's ``backbone`` train, in which mode, at which rate.

The fine-tuning of a :class:`~lt_transfer.Backbone` under a new head, shared by
:class:`~lt_transfer.TransferClassifier` (and so :class:`~lt_transfer.TextClassifier`) and
:class:`~lt_transfer.TransferForecaster`:

* ``finetune``: ``"frozen"`` (only the head trains), ``"partial"`` (the head and the last
  ``trainable_groups`` layer groups) or ``"full"``;
* ``frozen_mode``: layer groups without trainable parameters keep their modules in eval mode
  (``"eval"``: BatchNorm uses and keeps its running statistics, dropout off) or follow the
  model (``"train"``); which groups are frozen is read from ``requires_grad`` each time, so a
  callback that unfreezes groups (``ProgressiveUnfreezing``) is respected;
* the backbone's param groups, output → input, at ``backbone_lr_scale * layer_decay ** depth``
  (:func:`lt_transfer.optim.layerwise_lr_scales`), with the resolved values exposed as the
  :attr:`~BackboneFinetuning.backbone_lr_scale` and :attr:`~BackboneFinetuning.layer_decay`
  properties that ``ProgressiveUnfreezing`` reads.
"""

from __future__ import annotations

from typing import Any, Literal

from lt_transfer.backbones import Backbone, LayerGroup
from lt_transfer.optim import (
    layerwise_lr_scales,
    param_groups_for,
    resolve_backbone_lr_scale,
    resolve_layer_decay,
)

__all__ = ["BackboneFinetuning", "FinetuneMode", "FrozenMode"]

FinetuneMode = Literal["frozen", "partial", "full"]
#: Mode of the modules of frozen layer groups: ``"eval"`` (BatchNorm uses and keeps its running
#: statistics, dropout off) or ``"train"``.
FrozenMode = Literal["eval", "train"]


class BackboneFinetuning:
    """Mixin (before the LightningModule base) for a module with a ``backbone`` and ``hparams.frozen_mode``.

    The module builds ``self.backbone``, records its hyper-parameters (``frozen_mode`` among
    them), then calls :meth:`init_finetuning`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lt_transfer import TransferForecaster
        >>> from lt_transfer.backbones import Backbone
        >>> net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2), nn.Conv1d(2, 2, 1),
        ...                     nn.AdaptiveAvgPool1d(1), nn.Flatten())
        >>> model = TransferForecaster(Backbone(net, 2), horizon=2, finetune="partial", trainable_groups=1,
        ...                            backbone_lr_scale=0.5, layer_decay=0.5)
        >>> [g.name for g in model.trainable_layer_groups()], model.backbone_lr_scale, model.layer_decay
        (['2'], 0.5, 0.5)
        >>> model.train().backbone.model[1].training  # a frozen group stays in eval mode
        False
    """

    backbone: Backbone
    hparams: Any  # the LightningModule's (an annotation only: no attribute is defined here)

    def init_finetuning(
        self,
        finetune: FinetuneMode,
        trainable_groups: int | None,
        backbone_lr_scale: float | None,
        layer_decay: float | None,
        frozen_mode: FrozenMode,
    ) -> None:
        """Check the fine-tuning arguments, resolve the lr settings and set ``requires_grad`` per group.

        Raises:
            ValueError: a ``finetune`` or ``frozen_mode`` outside its choices, ``trainable_groups``
                missing or out of range with ``"partial"`` or given with another mode, a bad
                ``backbone_lr_scale`` or ``layer_decay``.
        """
        name = type(self).__name__
        if finetune not in ("frozen", "partial", "full"):
            raise ValueError(f"{name}(finetune={finetune!r}) must be 'frozen', 'partial' or 'full'.")
        if frozen_mode not in ("eval", "train"):
            raise ValueError(
                f"{name}(frozen_mode={frozen_mode!r}) must be 'eval' (frozen BatchNorm keeps its running "
                "statistics, dropout off) or 'train'."
            )
        self._layer_decay = resolve_layer_decay(layer_decay, name)
        self._backbone_lr_scale = resolve_backbone_lr_scale(backbone_lr_scale, self.backbone.pretrained, name)
        groups = self.backbone.layer_groups()
        if finetune == "partial":
            if trainable_groups is None or not 1 <= trainable_groups <= len(groups):
                raise ValueError(
                    f"{name}(finetune='partial', trainable_groups={trainable_groups!r}): the backbone "
                    f"{self.backbone.name!r} has {len(groups)} layer groups ({[g.name for g in groups]}); "
                    f"set trainable_groups (required with 'partial' only, between 1 and {len(groups)}), or "
                    "use finetune='full'."
                )
        elif trainable_groups is not None:
            raise ValueError(
                f"{name}(trainable_groups={trainable_groups}) only applies to finetune='partial', not "
                f"finetune={finetune!r}; remove it or switch modes."
            )
        num_trainable = {"frozen": 0, "full": len(groups)}.get(finetune, trainable_groups)
        for index, group in enumerate(groups):
            trainable = index >= len(groups) - num_trainable
            for param in group.parameters():
                param.requires_grad_(trainable)

    @property
    def backbone_lr_scale(self) -> float:
        """The backbone learning-rate scale in use (``hparams.backbone_lr_scale`` resolved)."""
        return self._backbone_lr_scale

    @property
    def layer_decay(self) -> float:
        """The layer-wise lr decay in use (``hparams.layer_decay`` resolved; 1.0 = none).

        :class:`~lt_transfer.callbacks.ProgressiveUnfreezing` reads it (and
        :attr:`backbone_lr_scale`) for the groups it unfreezes.

        Example:
            >>> import lightning.pytorch as pl
            >>> from lt_transfer import TransferForecaster
            >>> from lt_transfer.callbacks import ProgressiveUnfreezing
            >>> from lt_transfer.data import ForecastingDataModule
            >>> data = ForecastingDataModule([[float(i % 5) for i in range(30)]] * 4, horizon=2, window=8,
            ...                              holdout="none", batch_size=8)
            >>> model = TransferForecaster("ts/fcn", horizon=2, layer_decay=0.5)
            >>> trainer = pl.Trainer(max_epochs=1, callbacks=[ProgressiveUnfreezing(unfreeze_at_epoch=[0])],
            ...                      logger=False, enable_progress_bar=False, enable_model_summary=False,
            ...                      enable_checkpointing=False)
            >>> trainer.fit(model, data)
            >>> groups = trainer.optimizers[0].param_groups
            >>> {g["name"]: g["lr"] / groups[0]["lr"] for g in groups if "no_decay" not in g["name"]}
            {'head': 1.0, 'backbone.block3': 1.0, 'backbone.block2': 0.5, 'backbone.block1': 0.25}
        """
        return self._layer_decay

    def trainable_layer_groups(self) -> list[LayerGroup]:
        """Backbone layer groups that currently have trainable parameters."""
        return [g for g in self.backbone.layer_groups() if any(p.requires_grad for p in g.parameters())]

    def frozen_layer_groups(self) -> list[LayerGroup]:
        """Backbone layer groups with no trainable parameter (their modules follow ``frozen_mode``)."""
        return [g for g in self.backbone.layer_groups() if not any(p.requires_grad for p in g.parameters())]

    def train(self, mode: bool = True) -> Any:
        """Set train/eval mode; frozen layer groups stay in eval mode when ``frozen_mode="eval"``."""
        super().train(mode)  # type: ignore[misc]
        if mode and self.hparams.frozen_mode == "eval":
            for group in self.frozen_layer_groups():
                for module in group.modules:
                    module.eval()
        return self

    def backbone_param_groups(self, no_decay: set[int]) -> list[dict]:
        """The trainable backbone parameters as param groups ``backbone.<group>``, output → input.

        Group ``i`` of ``n`` gets ``lr_scale = backbone_lr_scale * layer_decay ** (n - 1 - i)``;
        the parameters whose ids are in ``no_decay`` go to ``.no_decay`` twins
        (:func:`lt_transfer.optim.param_groups_for`).
        """
        layer_groups = self.backbone.layer_groups()
        scales = layerwise_lr_scales(len(layer_groups), self.backbone_lr_scale, self.layer_decay)
        groups: list[dict] = []
        for layer_group, scale in reversed(list(zip(layer_groups, scales, strict=True))):
            groups += param_groups_for(
                f"backbone.{layer_group.name}", layer_group.named_parameters, scale, no_decay
            )
        return groups
