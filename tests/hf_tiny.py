"""A tiny BERT (model + WordPiece tokenizer) saved to a folder, for the Hugging Face tests.

Built from a config and a vocabulary written here: no download. Loading it goes through
the real ``from_pretrained`` path.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

WORDS = (
    "the a flight plane bag lost late great good bad awful love hate service crew seat "
    "delayed thanks car apple phone new old very not again today"
).split()


def write_vocab(folder: Path) -> Path:
    """Write a WordPiece vocabulary (special tokens, words, letters and ``##`` letters)."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokens += list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens += [f"##{c}" for c in string.ascii_lowercase + string.digits]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(tokens)) + "\n")
    return path


def tiny_config(vocab_size: int, **overrides: object):  # noqa: ANN201 - transformers type
    from transformers import BertConfig

    values = dict(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    values.update(overrides)
    return BertConfig(**values)


def save_tiny_bert(
    folder: Path, sequence_classification: bool = False, with_tokenizer: bool = True, num_labels: int = 2
) -> Path:
    """Save a randomly initialised tiny BERT (and its tokenizer) with ``save_pretrained``."""
    from transformers import BertForSequenceClassification, BertModel, BertTokenizer

    torch.manual_seed(0)
    vocab_dir = folder.parent / f"{folder.name}_vocab"
    vocab = write_vocab(vocab_dir)
    tokens = vocab.read_text().split()
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True)
    config = tiny_config(len(tokenizer), num_labels=num_labels)
    if sequence_classification:
        model = BertForSequenceClassification(config)
    else:
        model = BertModel(config)
    model.save_pretrained(folder)
    if with_tokenizer:
        tokenizer.save_pretrained(folder)
    return folder
