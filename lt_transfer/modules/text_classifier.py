"""TextClassifier: a Hugging Face encoder + head, with freezing, layer-wise decay and LoRA."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lt_transfer.backbones import Backbone, build_backbone
from lt_transfer.modules._base import NanPolicy
from lt_transfer.modules.classifier import FrozenMode, TransferClassifier
from lt_transfer.resources import MINILM_L6_V2

__all__ = ["LORA_DEFAULTS", "TextClassifier", "TextFinetuneMode"]

TextFinetuneMode = Literal["frozen", "partial", "full", "lora"]
#: LoRA settings used when ``finetune="lora"`` and the argument is ``None``.
LORA_DEFAULTS: dict[str, float] = {"lora_r": 8, "lora_alpha": 16.0, "lora_dropout": 0.1}


class TextClassifier(TransferClassifier):
    """Sequence classification on a Hugging Face encoder, the Hugging Face way.

    A :class:`~lt_transfer.TransferClassifier` whose backbone is ``build_backbone("hf/...")``
    and whose batches are tokenizer dicts (``input_ids``, ``attention_mask``, ...,
    ``labels``) such as :class:`~lt_transfer.data.TextClassificationDataModule` yields. The
    layer groups are the embeddings, each encoder layer, then the pooler / the rest of a
    pretrained classification head; on top of the parent's modes:

    * ``frozen_layers=N`` (with ``finetune="partial"``): freeze the embeddings and the first
      ``N`` encoder layers, train the rest;
    * ``finetune="lora"``: freeze the encoder and train LoRA adapters (Hu et al. 2022) plus
      the head, through ``peft`` (the ``lora`` extra);
    * ``save_trainable_only=True``: checkpoints hold only the trainable weights (adapters,
      head, unfrozen layers) and load back onto the pretrained model rebuilt from the
      hyper-parameters.

    Biases and LayerNorm weights get no weight decay; layer-wise lr decay multiplies the
    learning rate by ``layer_decay`` per group towards the embeddings (ELECTRA, Clark et al.
    2020; BEiT). A ``...ForSequenceClassification`` model keeps its own head: the new head
    starts from its final Linear.

    Args:
        backbone: ``"hf/<hub name | folder | pkg://package/folder>"`` or an
            :class:`~lt_transfer.backbones.HFBackbone`. Default: the shipped MiniLM.
        num_classes: number of classes.
        pooling: ``"cls"``, ``"mean"``, ``"pooler"`` or ``None`` (mean for encoders; a
            sequence-classification model pools itself).
        model_class: ``"auto"``, ``"base"`` or ``"sequence_classification"`` (see
            :func:`~lt_transfer.backbones.build_hf_backbone`; spec-string backbones only;
            ``None``: ``"auto"``).
        finetune: ``"frozen"``, ``"partial"``, ``"full"`` or ``"lora"``.
        trainable_groups: for ``"partial"``: how many layer groups, counted from the head, train.
        frozen_layers: for ``"partial"``, instead of ``trainable_groups``: freeze the
            embeddings and this many encoder layers.
        backbone_lr_scale: lr multiplier of the encoder group nearest the head; ``None``: 0.1
            (the encoder is pretrained), except with ``finetune="lora"``: 1.0 (the adapters,
            the encoder's only trainable weights, are new). The value in use is the
            :attr:`backbone_lr_scale` property.
        layer_decay: lr multiplier per group towards the embeddings (``None`` or 1: none).
        head_dropout: dropout before the head; ``None``: 0.1 for an encoder, 0 for a
            sequence-classification model (its own dropout precedes the head).
        frozen_mode: mode of frozen groups: ``"eval"`` (dropout off there) or ``"train"``.
        lora_r: LoRA rank (``finetune="lora"`` only; ``None``: 8).
        lora_alpha: LoRA scaling numerator (``finetune="lora"`` only; ``None``: 16).
        lora_dropout: dropout on the LoRA input (``finetune="lora"`` only; ``None``: 0.1).
        lora_target_modules: Linear names to adapt (``None``: peft's default for the model
            type, ``query``/``value`` for BERT; ``finetune="lora"`` only).
        save_trainable_only: save only trainable weights (and buffers) in checkpoints.
        optimizer: optimizer factory taking param groups.
        scheduler: optional lr-scheduler factory.
        scheduler_interval: step the scheduler each ``"epoch"`` or ``"step"``.
        scheduler_monitor: metric for schedulers that need one.
        eval_names: names of several validation/test loaders (default: the datamodule's).
        nan_policy: ``"raise"``, ``"skip_batch"`` or ``"warn"`` on a non-finite training loss
            (see :class:`~lt_transfer.TransferClassifier`).
        lr: base learning rate in place of the optimizer's own (``None``: the optimizer's);
            ``Tuner.lr_find`` sets it.

    Raises:
        ValueError: inconsistent arguments (named in the message), e.g. ``frozen_layers``
            larger than the encoder's layer count or LoRA settings without ``finetune="lora"``.
        ImportError: ``finetune="lora"`` without ``peft`` installed.

    Example:
        >>> model = TextClassifier(num_classes=2, finetune="partial", frozen_layers=4)
        >>> [g.name for g in model.trainable_layer_groups()]
        ['layer.4', 'layer.5']
        >>> batch = model.backbone.tokenizer()(["late again"], return_tensors="pt")
        >>> model(batch).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        backbone: str | Backbone = "hf/" + MINILM_L6_V2,
        num_classes: int = 2,
        pooling: Literal["cls", "mean", "pooler"] | None = None,
        model_class: Literal["auto", "base", "sequence_classification"] | None = None,
        finetune: TextFinetuneMode = "full",
        trainable_groups: int | None = None,
        frozen_layers: int | None = None,
        backbone_lr_scale: float | None = None,
        layer_decay: float | None = None,
        head_dropout: float | None = None,
        frozen_mode: FrozenMode = "eval",
        lora_r: int | None = None,
        lora_alpha: float | None = None,
        lora_dropout: float | None = None,
        lora_target_modules: list[str] | None = None,
        save_trainable_only: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        scheduler_monitor: str = "val/loss",
        eval_names: list[str] | None = None,
        nan_policy: NanPolicy = "raise",
        lr: float | None = None,
    ) -> None:
        if finetune not in ("frozen", "partial", "full", "lora"):
            raise ValueError(
                f"TextClassifier(finetune={finetune!r}) must be 'frozen', 'partial', 'full' or 'lora'."
            )
        lora = {
            "lora_r": lora_r,
            "lora_alpha": lora_alpha,
            "lora_dropout": lora_dropout,
            "lora_target_modules": lora_target_modules,
        }
        if finetune != "lora":
            given = {k: v for k, v in lora.items() if v is not None}
            if given:
                raise ValueError(
                    f"TextClassifier({', '.join(f'{k}={v!r}' for k, v in given.items())}) only applies "
                    f"to finetune='lora', not finetune={finetune!r}; remove it or switch modes."
                )
        if frozen_layers is not None and (finetune != "partial" or trainable_groups is not None):
            raise ValueError(
                f"TextClassifier(frozen_layers={frozen_layers}) needs finetune='partial' and no "
                f"trainable_groups (got finetune={finetune!r}, trainable_groups={trainable_groups!r})."
            )
        if finetune == "lora":
            from lt_transfer.lora import _import_peft

            _import_peft()  # fail before loading any model
        if isinstance(backbone, str):
            if not backbone.startswith("hf/"):
                raise ValueError(
                    f"TextClassifier(backbone={backbone!r}) must be 'hf/<hub name | folder | "
                    "pkg://package/folder>'; use TransferClassifier for other backbones."
                )
            built = build_backbone(backbone, pooling=pooling, model_class=model_class or "auto")
        else:
            if pooling is not None or model_class is not None:
                raise ValueError(
                    "TextClassifier(pooling=..., model_class=...) only apply to a spec-string "
                    "backbone; build the Backbone with them instead."
                )
            built = backbone
        own_head = getattr(built, "pretrained_head", None)
        if own_head is not None and own_head.out_features != num_classes:
            raise ValueError(
                f"TextClassifier(num_classes={num_classes}) but the model's own classification head "
                f"has {own_head.out_features} labels; set num_classes={own_head.out_features}, or pass "
                "model_class='base' to start from a new head on the bare encoder."
            )
        groups_for_parent = trainable_groups
        if frozen_layers is not None:
            groups_for_parent = self._trainable_groups_for(built, frozen_layers)
        dropout = head_dropout if head_dropout is not None else (0.0 if own_head is not None else 0.1)
        super().__init__(
            backbone=built,
            num_classes=num_classes,
            finetune="frozen" if finetune == "lora" else finetune,
            trainable_groups=groups_for_parent,
            backbone_lr_scale=1.0 if backbone_lr_scale is None and finetune == "lora" else backbone_lr_scale,
            layer_decay=layer_decay,
            head_dropout=dropout,
            frozen_mode=frozen_mode,
            optimizer=optimizer, scheduler=scheduler, eval_names=eval_names,
            scheduler_interval=scheduler_interval, scheduler_monitor=scheduler_monitor,
            nan_policy=nan_policy, lr=lr,
        )
        # Record this class's own arguments (the parent recorded the built module, ignored), with
        # the parent's rule for what stays out of hparams.
        self.save_hyperparameters(ignore=self._hparams_ignored(backbone))
        if own_head is not None:
            linear = self.head if isinstance(self.head, nn.Linear) else self.head[-1]
            linear.load_state_dict(own_head.state_dict())
        if finetune == "lora":
            from lt_transfer.lora import apply_lora

            settings = {k: LORA_DEFAULTS[k] if lora[k] is None else lora[k] for k in LORA_DEFAULTS}
            apply_lora(
                self.backbone.model,
                int(settings["lora_r"]),
                settings["lora_alpha"],
                settings["lora_dropout"],
                lora_target_modules,
            )
        self.strict_loading = not save_trainable_only
        self.train()

    @staticmethod
    def _trainable_groups_for(backbone: Backbone, frozen_layers: int) -> int:
        names = [g.name for g in backbone.layer_groups()]
        layers = [n for n in names if n.startswith("layer.")]
        if isinstance(frozen_layers, bool) or not isinstance(frozen_layers, int) or frozen_layers < 0:
            raise ValueError(f"TextClassifier(frozen_layers={frozen_layers!r}) must be an int >= 0.")
        if frozen_layers > len(layers):
            raise ValueError(
                f"TextClassifier(frozen_layers={frozen_layers}): the encoder {backbone.name!r} has "
                f"only {len(layers)} layers; use at most {len(layers)} (or finetune='frozen')."
            )
        frozen = frozen_layers + (1 if names and names[0] == "embeddings" else 0)
        if frozen >= len(names):
            raise ValueError(
                f"TextClassifier(frozen_layers={frozen_layers}) freezes every layer group of "
                f"{backbone.name!r}; use finetune='frozen' to train the head only."
            )
        return len(names) - frozen

    # ------------------------------------------------------------- checkpoints
    def _trainable_keys(self) -> set[str]:
        return {name for name, param in self.named_parameters() if param.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """With ``save_trainable_only``: keep trainable weights and buffers only."""
        super().on_save_checkpoint(checkpoint)
        if not self.hparams.save_trainable_only:
            return
        keep = self._trainable_keys() | {name for name, _ in self.named_buffers()}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["lt_transfer_trainable_only"] = True

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check that a trainable-only checkpoint covers every trainable weight of this model."""
        super().on_load_checkpoint(checkpoint)
        if not checkpoint.get("lt_transfer_trainable_only"):
            return
        state = checkpoint["state_dict"]
        missing = sorted(self._trainable_keys() - set(state))
        unexpected = sorted(set(state) - set(self.state_dict()))
        if missing or unexpected:
            raise ValueError(
                f"trainable-only checkpoint does not fit this TextClassifier: missing {missing[:4]}, "
                f"unexpected {unexpected[:4]}; build the model with the checkpoint's hyper-parameters."
            )
