"""Every metric class of ``lt_transfer.metrics`` gives the single-process value when its states are
gathered over 2 ranks (uneven shards, several batches per rank): the label-free validators, the
proxy A-distance and the forecast accuracies. Reference: the functional form on all the data
(for the validators that keep features) or the formula written out here (the others).
Tolerance rel=1e-5 (float32 sums in another order; measured below 1e-6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lt_transfer.metrics import (
    SMAPE,
    BatchNuclearNorm,
    ClassSilhouette,
    DeepEmbeddedValidation,
    DomainClassifierAccuracy,
    InformationMaximization,
    MeanAbsoluteScaledError,
    PredictionEntropy,
    ProxyADistance,
    SoftNeighborhoodDensity,
    batch_nuclear_norm,
    class_silhouette,
    deep_embedded_validation,
    proxy_a_distance,
    soft_neighborhood_density,
)

NUM_CLASSES = 4
TARGET_KEYS = ("features", "logits", "discriminator", "forecasts", "actuals", "scales")
SOURCE_KEYS = ("features", "losses", "discriminator")


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    target_features = torch.randn(47, 6, generator=g) + 0.5
    source_features = torch.randn(39, 6, generator=g)
    return {
        "target_features": target_features,
        "target_logits": 2 * target_features[:, :NUM_CLASSES] + torch.randn(47, NUM_CLASSES, generator=g),
        "source_features": source_features,
        "source_losses": torch.rand(39, generator=g),
        "source_discriminator": torch.randn(39, generator=g) + 0.3,
        "target_discriminator": torch.randn(47, generator=g) - 0.3,
        "target_forecasts": torch.randn(47, 3, generator=g) + 5,
        "target_actuals": torch.randn(47, 3, generator=g) + 5,
        "target_scales": torch.rand(47, generator=g) + 0.5,
    }


def _by_hand(data: dict[str, torch.Tensor]) -> dict[str, float]:
    """The metrics without a feature state, written out on all the data."""
    p = torch.softmax(data["target_logits"].double(), dim=1)
    entropy = -(p * p.log()).sum(1)
    mean_p = p.mean(0)
    preds, actual = data["target_forecasts"].double(), data["target_actuals"].double()
    return {
        "entropy": float(entropy.mean()),
        "im": float(-(mean_p * mean_p.log()).sum() - entropy.mean()),
        "domain_acc": float(
            0.5 * (data["source_discriminator"] > 0).double().mean()
            + 0.5 * (data["target_discriminator"] <= 0).double().mean()
        ),
        "mase": float(((preds - actual).abs().mean(1) / data["target_scales"].double()).mean()),
        "smape": float((200 * (preds - actual).abs() / (preds.abs() + actual.abs())).mean()),
    }


def _metrics() -> dict[str, object]:
    return {
        "snd": SoftNeighborhoodDensity(),
        "bnm": BatchNuclearNorm(num_classes=NUM_CLASSES),
        "dev": DeepEmbeddedValidation(),
        "silhouette": ClassSilhouette(),
        "pad": ProxyADistance(max_samples=None),
        "entropy": PredictionEntropy(),
        "im": InformationMaximization(num_classes=NUM_CLASSES),
        "domain_acc": DomainClassifierAccuracy(),
        "mase": MeanAbsoluteScaledError(),
        "smape": SMAPE(),
    }


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    data = _data()
    # uneven shards (rank 0 holds more), each fed in several batches
    cut = {"target": 30, "source": 15}
    mine = {}
    for key, value in data.items():
        n = cut[key.split("_")[0]]
        mine[key] = value[:n] if rank == 0 else value[n:]
    metrics = _metrics()
    target = zip(*(mine[f"target_{key}"].split(8) for key in TARGET_KEYS), strict=True)
    for features, logits, discriminator, forecasts, actuals, scales in target:
        metrics["snd"].update(logits)
        metrics["bnm"].update(logits)
        metrics["silhouette"].update(features, logits)
        metrics["dev"].update(target_features=features)
        metrics["pad"].update(target=features)
        metrics["entropy"].update(logits)
        metrics["im"].update(logits)
        metrics["domain_acc"].update(target_logits=discriminator)
        metrics["mase"].update(forecasts, actuals, scales)
        metrics["smape"].update(forecasts, actuals)
    source = zip(*(mine[f"source_{key}"].split(7) for key in SOURCE_KEYS), strict=True)
    for features, losses, discriminator in source:
        metrics["dev"].update(source_features=features, source_losses=losses)
        metrics["pad"].update(source=features)
        metrics["domain_acc"].update(source_logits=discriminator)
    values = {name: metric.compute().item() for name, metric in metrics.items()}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(values))
    dist.destroy_process_group()


def test_two_ranks_equal_the_single_process_value(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    data = _data()
    expected = {
        "snd": soft_neighborhood_density(data["target_logits"]).item(),
        "bnm": batch_nuclear_norm(data["target_logits"]).item(),
        "dev": deep_embedded_validation(
            data["source_features"], data["source_losses"], data["target_features"]
        ).item(),
        "silhouette": class_silhouette(data["target_features"], data["target_logits"]).item(),
        "pad": proxy_a_distance(data["source_features"], data["target_features"]).item(),
        **_by_hand(data),
    }
    for rank in (0, 1):
        values = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert values.keys() == expected.keys()
        for name, value in values.items():
            assert value == pytest.approx(expected[name], rel=1e-5), (rank, name)
