"""The batch contract's optional strong view (self-training's second, strongly augmented input)."""

from __future__ import annotations

import torch

from lt_transfer.batches import STRONG_VIEW_KEYS, split_batch


def test_strong_view_under_each_key_and_left_out_of_tokenizer_inputs() -> None:
    for key in STRONG_VIEW_KEYS:
        labels = torch.tensor([0, 1])
        batch = split_batch({"image": torch.zeros(2, 3), key: torch.ones(2, 3), "label": labels})
        assert batch.strong is not None and float(batch.strong.sum()) == 6.0 and batch.y.tolist() == [0, 1]
    ids = torch.ones(2, 4, dtype=torch.long)
    strong = {"input_ids": ids}
    text = split_batch({"input_ids": ids, "attention_mask": ids, "x_strong": strong, "labels": ids[:, 0]})
    assert sorted(text.x) == ["attention_mask", "input_ids"] and sorted(text.strong) == ["input_ids"]
    assert split_batch((torch.zeros(2, 3), torch.tensor([0, 1]))).strong is None
