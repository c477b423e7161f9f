"""finetune="lora": only adapters (and the head) train; trainable-only checkpoints are small."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lt_transfer import TextClassifier
from lt_transfer.data.text import TextClassificationDataModule
from lt_transfer.lora import apply_lora, lora_parameter_names
from lt_transfer.resources import MINILM_L6_V2
from tests.hf_tiny import save_tiny_bert

pytest.importorskip("peft")

TEXTS = ["bad service", "the flight was very late again", "good crew thanks", "lost bag", "love it", "awful"]
LABELS = [0, 0, 1, 0, 1, 0]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("hf") / "bert")


def test_lora_trains_only_adapters_and_head_and_reloads_from_a_small_checkpoint(
    tiny_bert: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = TextClassifier(
        f"hf/{tiny_bert}",
        num_classes=2,
        finetune="lora",
        lora_r=2,
        lora_alpha=4.0,
        save_trainable_only=True,
        optimizer=partial(torch.optim.AdamW, lr=1e-2),
    )
    # hparams keep what was passed; new adapters train at the head's lr unless told otherwise
    assert model.hparams.lora_dropout is None and model.hparams.backbone_lr_scale is None
    assert model.backbone_lr_scale == 1.0
    assert {g["lr_scale"] for g in model.param_groups()} == {1.0}
    adapters = {f"backbone.model.{n}" for n in lora_parameter_names(model.backbone.model)}
    assert len(adapters) == 2 * 2 * 2  # 2 layers x (query, value) x (A, B)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == adapters | {"head.1.weight", "head.1.bias"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = TextClassificationDataModule(str(tiny_bert), train_texts=TEXTS, train_labels=LABELS, batch_size=3)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, data)
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == trainable  # lora_B starts at 0 and moved; nothing else in the encoder did

    path = tmp_path / "lora.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # our checkpoints are plain data
    buffers = set(model.state_dict()) - {n for n, _ in model.named_parameters()}  # persistent ones
    assert set(checkpoint["state_dict"]) == trainable | buffers
    restored = TextClassifier.load_from_checkpoint(path, weights_only=True).eval()
    batch = dict(model.backbone.tokenizer()(TEXTS, padding=True, return_tensors="pt"))
    with torch.no_grad():
        torch.testing.assert_close(restored(batch), model.eval()(batch))


def test_minilm_lora_checkpoint_is_small(tmp_path: Path) -> None:
    model = TextClassifier("hf/" + MINILM_L6_V2, finetune="lora", save_trainable_only=True)
    full = model.state_dict()
    checkpoint = {"state_dict": dict(full)}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "small.ckpt")
    torch.save({"state_dict": full}, tmp_path / "full.ckpt")
    small_mb = (tmp_path / "small.ckpt").stat().st_size / 2**20
    full_mb = (tmp_path / "full.ckpt").stat().st_size / 2**20
    assert full_mb > 80 and small_mb < 1.0, (small_mb, full_mb)


def test_lora_without_peft_names_the_extra(tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'lt_transfer\[lora\]'"):
        TextClassifier(f"hf/{tiny_bert}", finetune="lora")


def test_apply_lora_bad_input() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="lora_r=0"):
        apply_lora(net, r=0, target_modules=["0"])
    with pytest.raises(ValueError, match="no default LoRA targets"):
        apply_lora(net)
    with pytest.raises(ValueError, match="matched no Linear"):
        apply_lora(net, target_modules=["nothing"])
