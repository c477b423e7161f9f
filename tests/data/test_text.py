"""TextClassificationDataModule: lists, CSV, tables, dynamic padding, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lt_transfer.data.text import TextClassificationDataModule, TextSplit
from tests.hf_tiny import save_tiny_bert


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("hf") / "bert")


TEXTS = ["bad", "the flight was very late again today", "good crew", "lost bag"]
LABELS = [0, 1, 1, 0]


def test_batches_are_padded_per_batch_and_truncated(tiny_bert: Path) -> None:
    dm = TextClassificationDataModule(
        str(tiny_bert),
        train_texts=TEXTS,
        train_labels=LABELS,
        val_texts=TEXTS,
        val_labels=LABELS,
        max_length=6,
        batch_size=2,
    )
    dm.setup("fit")
    batches = list(dm.val_dataloader())
    # batch 1: "bad" (3 tokens) + the long text truncated to max_length=6; batch 2: both short
    assert [b["input_ids"].shape[1] for b in batches] == [6, 4]
    first = batches[0]
    assert first["attention_mask"].tolist()[0] == [1, 1, 1, 0, 0, 0]
    assert first["input_ids"][0, 3:].tolist() == [0, 0, 0]  # [PAD] id
    assert torch.equal(torch.cat([b["labels"] for b in batches]), torch.tensor(LABELS))
    assert set(first) == {"input_ids", "attention_mask", "token_type_ids", "labels"}


def test_csv_string_labels_and_tables(tiny_bert: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "train.csv"
    csv_path.write_text(
        "review,stars\n"
        + "".join(f'"{t}",{"pos" if y else "neg"}\n' for t, y in zip(TEXTS, LABELS, strict=True))
    )
    dm = TextClassificationDataModule(
        str(tiny_bert), train_csv=str(csv_path), text_column="review", label_column="stars"
    )
    assert dm.label_names == ["neg", "pos"] and dm.num_classes == 2
    assert dm.train_split == TextSplit(TEXTS, LABELS)

    class Table(dict):
        column_names = ["text", "label"]

    tables = TextClassificationDataModule.from_tables(
        str(tiny_bert), train=Table(text=TEXTS, label=LABELS), test=Table(text=TEXTS[:2], label=LABELS[:2])
    )
    tables.setup("test")
    assert len(tables.test_sets[0]) == 2 and tables.num_classes == 2


def test_bad_input(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="4 train texts but 3 train labels"):
        TextClassificationDataModule(str(tiny_bert), train_texts=TEXTS, train_labels=LABELS[:3])
    with pytest.raises(ValueError, match=r"labels span \[0, 2\], outside \[0, num_classes=2\)"):
        TextClassificationDataModule(
            str(tiny_bert), train_texts=TEXTS, train_labels=[0, 1, 2, 0], num_classes=2
        )
    with pytest.raises(ValueError, match="not in label_names"):
        TextClassificationDataModule(
            str(tiny_bert),
            train_texts=TEXTS[:2],
            train_labels=["neg", "pos"],
            val_texts=TEXTS[:1],
            val_labels=["meh"],
        )
    with pytest.raises(ValueError, match="needs train_labels"):
        TextClassificationDataModule(str(tiny_bert), train_texts=TEXTS)
    bare = save_tiny_bert(tmp_path / "no_tok", with_tokenizer=False)
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        TextClassificationDataModule(str(bare), train_texts=TEXTS, train_labels=LABELS)
    with pytest.raises(ValueError, match="max_length=1"):
        TextClassificationDataModule(str(tiny_bert), train_texts=TEXTS, train_labels=LABELS, max_length=1)
