"""rank_models: score every candidate model on a labelled target sample, before fine-tuning any.

For each candidate (see :mod:`lt_transfer.ranking.candidates`) :func:`rank_models` loads the
network, runs the target data through it **once** (eval mode, ``torch.no_grad``, batched; the
features, and the source logits when the candidate has a source head, are kept on the CPU,
optionally as float16) with :func:`lt_transfer.callbacks.domain_report.extract_features`,
computes every requested score of :data:`~lt_transfer.ranking.SCORES` and frees the network
before the next candidate. A candidate that fails to load or run is listed in the table with
its error; the others still run. A score that needs source logits is NaN (``n/a``) for
candidates without them, and the table's notes say which candidates have them.

The data are the datamodule's training split (or ``split="val"``/``"test"``), read in a
fixed order: a ``DataLoader`` is rebuilt without shuffling, and each candidate runs with the
same random seed, so every candidate sees the same samples (and the same random
augmentations, if the datamodule applies any: prefer a datamodule without augmentation).
Class labels are renumbered ``0..C-1`` over the classes the sample holds; when the
datamodule declares ``num_classes``, the sample must hold every class.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch import nn
from torch.utils.data import DataLoader

from lt_transfer.callbacks.domain_report.features import extract_features
from lt_transfer.ranking._inputs import as_labels
from lt_transfer.ranking.candidates import Candidate, LoadedCandidate, as_candidate, load_candidate
from lt_transfer.ranking.registry import SCORES, get_score
from lt_transfer.ranking.table import CandidateResult, RankingTable

__all__ = ["FeatureDtype", "Split", "rank_models"]

Split = Literal["train", "val", "test"]
FeatureDtype = Literal["float32", "float16"]
_WHERE = "rank_models"


def rank_models(
    candidates: Sequence[Candidate | str | nn.Module],
    datamodule: LightningDataModule | None = None,
    scores: Sequence[str] | None = None,
    *,
    dataloader: Iterable | None = None,
    split: Split = "train",
    max_samples: int | None = None,
    batch_size: int | None = None,
    feature_dtype: FeatureDtype = "float32",
    device: str | torch.device = "cpu",
    output_dir: str | Path | None = None,
    progress: bool = True,
    seed: int = 0,
    dpi: int = 100,
) -> RankingTable:
    """Rank pretrained candidates on a labelled target sample by transferability scores.

    Args:
        candidates: :class:`~lt_transfer.ranking.candidates.Candidate` objects, ``[name=]model[@weights]``
            strings (a backbone spec, a checkpoint path) or ``nn.Module`` objects.
        datamodule: the target task; its ``split`` loader is scored (``setup`` is called).
        scores: names in :data:`~lt_transfer.ranking.SCORES` (``None``: all of them).
        dataloader: a loader of labelled target batches, instead of ``datamodule``.
        split: the datamodule's ``"train"``, ``"val"`` or ``"test"`` loader.
        max_samples: most target samples scored (``None``: all).
        batch_size: batch size of feature extraction (``None``: the loader's).
        feature_dtype: storage type of the features, ``"float32"`` or ``"float16"`` (half the
            memory; the scores compute in float64 anyway).
        device: where the candidates run (``"cuda"``, ``"cpu"`` ...).
        output_dir: when given, ``ranking.csv``, ``ranking.md`` and ``ranking.png`` are written there.
        progress: a progress bar per candidate (tqdm, on stderr).
        seed: the random seed each candidate runs with (random initialisation, augmentation).
        dpi: resolution of the PNG.

    Returns:
        The :class:`~lt_transfer.ranking.table.RankingTable` (candidates in the given order;
        :meth:`~lt_transfer.ranking.table.RankingTable.ranked` orders them).

    Raises:
        ValueError: bad arguments (named), an unknown score, duplicate candidate names, or
            target data that cannot be scored: no labels, a single class, fewer classes in the
            sample than the datamodule's ``num_classes`` (fewer samples than classes, a small
            ``max_samples``). A candidate's own failure is not raised: it is listed in the table.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> g = torch.Generator().manual_seed(0)
        >>> y = torch.arange(60) % 3
        >>> x = torch.nn.functional.one_hot(y).float() * 4 + torch.randn(60, 3, generator=g)
        >>> loader = DataLoader(TensorDataset(x, y), batch_size=16)
        >>> good, noise = torch.nn.Identity(), torch.nn.Linear(3, 3)
        >>> with torch.no_grad():
        ...     _ = noise.weight.copy_(torch.zeros(3, 3)), noise.bias.copy_(torch.zeros(3))
        >>> table = rank_models([Candidate("good", good), Candidate("blind", noise)], dataloader=loader,
        ...                     scores=["logme", "knn", "leep"], progress=False)
        >>> [r.name for r in table.ranked("logme")], table.best("knn").name
        (['good', 'blind'], 'good')
        >>> table.notes()
        ['leep: source-classifier logits needed; none of the candidates gave them (n/a for the others).']
    """
    names = _score_names(scores)
    parsed = [as_candidate(c) for c in candidates]
    _check_arguments(parsed, max_samples, batch_size, feature_dtype, split, datamodule, dataloader)
    loader = _ordered_loader(datamodule, dataloader, split, batch_size)
    dtype = torch.float16 if feature_dtype == "float16" else torch.float32
    declared = getattr(datamodule, "num_classes", None)
    num_classes = declared if isinstance(declared, int) and not isinstance(declared, bool) else None
    results = []
    for candidate in parsed:
        start = time.perf_counter()
        loaded = features = logits = None
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                loaded = load_candidate(candidate)
                torch.manual_seed(seed)
                restore = isinstance(candidate.model, nn.Module)  # the caller's module goes back where it was
                features, logits, labels = _extract(
                    loaded, loader, max_samples, device, dtype, candidate, restore, progress
                )
        except Exception as error:  # noqa: BLE001 - listed in the table; the other candidates still run
            message = f"{type(error).__name__}: {error}"
            nan_scores = {name: math.nan for name in names}
            results.append(
                CandidateResult(
                    candidate.name, candidate.describe(), nan_scores, seconds=_since(start), error=message
                )
            )
            continue
        finally:
            loaded = None  # free the network before the next candidate
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        labels = _target_labels(labels, num_classes)
        values, errors = _scores(names, features, logits, labels)
        results.append(
            CandidateResult(
                candidate.name,
                candidate.describe(),
                values,
                source_logits=logits is not None,
                num_samples=len(labels),
                feature_dim=features.shape[1],
                seconds=_since(start),
                score_errors=errors,
            )
        )
    table = RankingTable(tuple(results), tuple(names))
    if output_dir is not None:
        table.save(output_dir, dpi=dpi)
    return table


def _since(start: float) -> float:
    return time.perf_counter() - start


def _score_names(scores: Sequence[str] | None) -> list[str]:
    if scores is None:
        return list(SCORES)
    if isinstance(scores, str):
        scores = [scores]
    names = [get_score(name).name for name in scores]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"rank_models(scores={list(scores)!r}): give each score once, at least one.")
    return names


def _check_arguments(
    candidates: list[Candidate],
    max_samples: int | None,
    batch_size: int | None,
    feature_dtype: str,
    split: str,
    datamodule: Any,
    dataloader: Any,
) -> None:
    if not candidates:
        raise ValueError("rank_models(candidates=[]): give at least one candidate.")
    seen = [c.name for c in candidates]
    duplicates = sorted({n for n in seen if seen.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"rank_models: candidate names {duplicates} appear more than once; name them "
            "('name=model@weights' or Candidate(name, ...))."
        )
    for argument, value in (("max_samples", max_samples), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"rank_models({argument}={value!r}) must be an int >= 1 or None.")
    if feature_dtype not in ("float32", "float16"):
        raise ValueError(f"rank_models(feature_dtype={feature_dtype!r}) must be 'float32' or 'float16'.")
    if split not in ("train", "val", "test"):
        raise ValueError(f"rank_models(split={split!r}) must be 'train', 'val' or 'test'.")
    if (datamodule is None) == (dataloader is None):
        raise ValueError(
            "rank_models: pass either datamodule= (the target task) or dataloader=, not both or none."
        )


def _ordered_loader(datamodule: Any, dataloader: Any, split: str, batch_size: int | None) -> Iterable:
    if dataloader is None:
        datamodule.setup("fit" if split in ("train", "val") else "test")
        dataloader = getattr(datamodule, f"{split}_dataloader")()
    if not isinstance(dataloader, DataLoader):
        return dataloader
    return DataLoader(
        dataloader.dataset,
        batch_size=batch_size or dataloader.batch_size or 1,
        shuffle=False,
        num_workers=dataloader.num_workers,
        collate_fn=dataloader.collate_fn,
        pin_memory=dataloader.pin_memory,
    )


def _extract(
    loaded: LoadedCandidate,
    loader: Iterable,
    max_samples: int | None,
    device: str | torch.device,
    dtype: torch.dtype,
    candidate: Candidate,
    restore: bool,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    net = loaded.net
    first = next(net.parameters(), None)
    home = first.device if first is not None else torch.device("cpu")
    modes = {m: m.training for m in net.modules()}
    net.to(device).eval()
    width: list[int] = []

    def features_then_logits(x: Any) -> torch.Tensor:
        features, logits = loaded.features_and_logits(x)
        width[:] = [features.shape[1]]
        return features if logits is None else torch.cat([features.float(), logits.float()], dim=1)

    batches = _progress(loader, candidate.name, max_samples, progress)
    try:
        joined, labels = extract_features(features_then_logits, batches, max_samples, device, dtype, _WHERE)
    finally:
        for module, mode in modes.items():
            module.train(mode)
        if restore:
            net.to(home)
        if hasattr(batches, "close"):
            batches.close()
    if not loaded.has_source_logits:
        return joined, None, labels
    return joined[:, : width[0]].contiguous(), joined[:, width[0] :].contiguous(), labels


def _progress(loader: Iterable, name: str, max_samples: int | None, enabled: bool) -> Iterable:
    if not enabled:
        return loader
    from tqdm.auto import tqdm

    total = len(loader) if hasattr(loader, "__len__") else None
    batch = getattr(loader, "batch_size", None)
    if total is not None and max_samples is not None and batch:
        total = min(total, math.ceil(max_samples / batch))
    return tqdm(loader, desc=f"rank {name}", total=total, unit="batch", leave=False)


def _target_labels(labels: torch.Tensor | None, num_classes: int | None) -> torch.Tensor:
    if labels is None:
        raise ValueError(
            "rank_models: the target batches have no class labels; transferability is scored on a labelled "
            "target sample: yield (x, y) batches or dicts with labels under 'y'/'label'/'labels'."
        )
    present = torch.unique(labels)
    if num_classes is not None and len(present) < num_classes:
        raise ValueError(
            f"rank_models: the {len(labels)} target samples hold {len(present)} of the datamodule's "
            f"{num_classes} classes (fewer samples than classes, or max_samples too small); score a sample "
            "with every class: raise max_samples or the labels per class."
        )
    relabelled = torch.searchsorted(present, labels)  # 0..C-1 over the classes present
    as_labels(relabelled, len(relabelled), _WHERE)  # a single class: raise
    return relabelled


def _scores(
    names: list[str], features: torch.Tensor, logits: torch.Tensor | None, labels: torch.Tensor
) -> tuple[dict[str, float], dict[str, str]]:
    values: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name in names:
        spec = SCORES[name]
        inputs = logits if spec.needs_source_logits else features
        if inputs is None:
            values[name] = math.nan
            continue
        try:
            values[name] = float(spec(inputs, labels))
        except (ValueError, RuntimeError) as error:  # NaN/Inf features, a failed decomposition
            values[name] = math.nan
            errors[name] = str(error)
    return values, errors
