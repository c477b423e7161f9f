"""TextClassifier / TransferClassifier on text: no-decay groups, freezing, layer decay, own head."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lt_transfer import TextClassifier, TransferClassifier
from lt_transfer.data.text import TextClassificationDataModule
from tests.hf_tiny import save_tiny_bert

TEXTS = ["bad service", "the flight was very late again", "good crew thanks", "lost bag", "love it", "awful"]
LABELS = [0, 0, 1, 0, 1, 0]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("hf") / "bert")


def _data(folder: Path, batch_size: int = 6) -> TextClassificationDataModule:
    return TextClassificationDataModule(
        str(folder),
        train_texts=TEXTS,
        train_labels=LABELS,
        val_texts=TEXTS,
        val_labels=LABELS,
        batch_size=batch_size,
    )


def _trainer(**kwargs: object) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def test_no_decay_groups_hold_exactly_biases_and_layernorm_weights(tiny_bert: Path) -> None:
    model = TextClassifier(f"hf/{tiny_bert}", num_classes=2)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {
        names[id(p)] for g in model.param_groups() if g.get("weight_decay") == 0.0 for p in g["params"]
    }
    decay = {names[id(p)] for g in model.param_groups() if "weight_decay" not in g for p in g["params"]}
    expected = {n for n in names.values() if n.endswith(".bias") or n.endswith("LayerNorm.weight")}
    assert no_decay == expected
    assert decay == set(names.values()) - expected
    assert any("word_embeddings" in n for n in decay)  # embedding matrices do decay


def test_freezing_n_layers_leaves_exactly_those_unchanged(tiny_bert: Path) -> None:
    torch.manual_seed(0)
    model = TextClassifier(
        f"hf/{tiny_bert}",
        num_classes=2,
        finetune="partial",
        frozen_layers=1,
        optimizer=partial(torch.optim.AdamW, lr=1e-2),
    )
    groups = {g.name: g for g in model.backbone.layer_groups()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _trainer().fit(model, _data(tiny_bert))
    frozen = {f"backbone.{n}" for g in ("embeddings", "layer.0") for n, _ in groups[g].named_parameters}
    after = dict(model.named_parameters())
    unchanged = {n for n in before if torch.equal(before[n], after[n])}
    assert unchanged == frozen
    # frozen groups were kept in eval mode (dropout off) during training
    assert [g.name for g in model.frozen_layer_groups()] == ["embeddings", "layer.0"]


def test_layerwise_decay_gives_the_expected_lr_per_layer(tiny_bert: Path) -> None:
    model = TextClassifier(
        f"hf/{tiny_bert}",
        num_classes=2,
        backbone_lr_scale=0.5,
        layer_decay=0.8,
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )
    optimizer = model.configure_optimizers()
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    expected = {
        "head": 1e-3,
        "backbone.layer.1": 5e-4,
        "backbone.layer.0": 4e-4,
        "backbone.embeddings": 3.2e-4,
    }
    for name, lr in expected.items():
        assert lrs[name] == pytest.approx(lr)
        assert lrs[f"{name}.no_decay"] == pytest.approx(lr)


def test_transfer_classifier_takes_a_hf_backbone_and_tokenizer_batches(tiny_bert: Path) -> None:
    model = TransferClassifier(f"hf/{tiny_bert}", num_classes=2, finetune="partial", trainable_groups=1)
    trainer = _trainer(max_steps=2, limit_val_batches=1)
    trainer.fit(model, _data(tiny_bert, batch_size=3))
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_sequence_classification_model_starts_from_its_own_head(tmp_path: Path) -> None:
    folder = save_tiny_bert(tmp_path / "cls", sequence_classification=True, num_labels=3)
    from transformers import AutoModelForSequenceClassification

    reference = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    model = TextClassifier(f"hf/{folder}", num_classes=3).eval()
    batch = model.backbone.tokenizer()(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(dict(batch)), reference(**batch).logits)
    assert model.hparams.head_dropout is None and isinstance(model.head, torch.nn.Linear)
    with pytest.raises(ValueError, match="own classification head has 3 labels"):
        TextClassifier(f"hf/{folder}", num_classes=2)
    assert TextClassifier(f"hf/{folder}", num_classes=2, model_class="base").head[-1].out_features == 2


def test_bad_input(tiny_bert: Path) -> None:
    spec = f"hf/{tiny_bert}"
    with pytest.raises(ValueError, match="frozen_layers=3\\): the encoder .* has only 2 layers"):
        TextClassifier(spec, finetune="partial", frozen_layers=3)
    with pytest.raises(ValueError, match="freezes every layer group"):
        TextClassifier(spec, finetune="partial", frozen_layers=2)
    with pytest.raises(ValueError, match="has 3 layer groups"):
        TextClassifier(spec, finetune="partial", trainable_groups=4)
    with pytest.raises(ValueError, match="only applies to finetune='lora'"):
        TextClassifier(spec, lora_r=4)
    with pytest.raises(ValueError, match="lora_r=8, lora_dropout=0.1\\) only applies to finetune='lora'"):
        TextClassifier(spec, lora_r=8, lora_dropout=0.1)  # the LoRA defaults are not silently accepted
    with pytest.raises(ValueError, match="model_class=...\\) only apply to a spec-string backbone"):
        TextClassifier(TextClassifier(spec).backbone, model_class="auto")
    with pytest.raises(ValueError, match="needs finetune='partial'"):
        TextClassifier(spec, frozen_layers=1)
    with pytest.raises(ValueError, match="must be 'hf/"):
        TextClassifier("torchvision/resnet18")


def test_progressive_unfreezing_works_on_text_layer_groups(tiny_bert: Path) -> None:
    from lt_transfer import ProgressiveUnfreezing

    callback = ProgressiveUnfreezing(unfreeze_at_epoch=[1], groups_per_step=1, backbone_lr_scale=1.0)
    model = TextClassifier(f"hf/{tiny_bert}", finetune="full", optimizer=partial(torch.optim.AdamW, lr=1e-2))
    assert callback.plan_for(model) == [(1, ["layer.1"])]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _trainer(max_steps=-1, max_epochs=2, callbacks=[callback]).fit(model, _data(tiny_bert))
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    layer1 = {n for n in before if n.startswith("backbone.model.encoder.layer.1.")}
    assert changed == layer1 | {"head.1.weight", "head.1.bias"}


def test_dann_on_text_with_the_tweet_shift(tiny_bert: Path) -> None:
    from lt_transfer import DomainAdaptationModule
    from lt_transfer.data.tweets import TweetShiftDataModule

    data = TweetShiftDataModule(
        tokenizer=str(tiny_bert),
        source_samples=8,
        target_samples=5,
        val_samples=4,
        test_samples=4,
        batch_size=4,
        max_length=16,
    )
    model = DomainAdaptationModule(f"hf/{tiny_bert}", num_classes=2, method="dann", discriminator_hidden=8)
    trainer = _trainer(max_steps=-1, max_epochs=1, limit_val_batches=1)
    trainer.fit(model, data)
    assert trainer.global_step == 2  # one pass over the 8 source tweets; target drawn alongside
    metrics = trainer.callback_metrics
    assert {"train/domain_acc", "val/source/acc", "val/target/acc"} <= set(metrics)


def test_bf16_mixed_training_step_is_finite(tiny_bert: Path) -> None:
    model = TextClassifier(f"hf/{tiny_bert}", num_classes=2, pooling="mean")
    trainer = _trainer(max_steps=2, precision="bf16-mixed", limit_val_batches=1)
    trainer.fit(model, _data(tiny_bert, batch_size=3))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["val/loss"])


def test_backbone_lr_scale_default_is_lower_for_the_pretrained_encoder(tiny_bert: Path) -> None:
    model = TextClassifier(f"hf/{tiny_bert}", num_classes=2)
    assert (model.hparams.backbone_lr_scale, model.backbone_lr_scale) == (None, 0.1)
    assert (model.hparams.lora_r, model.hparams.model_class) == (None, None)
    scales = {g["name"]: g["lr_scale"] for g in model.param_groups()}
    assert scales["backbone.layer.1"] == 0.1 and scales["head"] == 1.0
