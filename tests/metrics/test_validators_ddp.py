"""Every label-free validator (and the proxy A-distance) gives the single-process value when its states are
gathered over 2 ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lt_transfer.metrics import (
    BatchNuclearNorm,
    ClassSilhouette,
    DeepEmbeddedValidation,
    ProxyADistance,
    SoftNeighborhoodDensity,
    batch_nuclear_norm,
    class_silhouette,
    deep_embedded_validation,
    proxy_a_distance,
    soft_neighborhood_density,
)

NUM_CLASSES = 4


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    target_features = torch.randn(47, 6, generator=g) + 0.5
    source_features = torch.randn(39, 6, generator=g)
    return {
        "target_features": target_features,
        "target_logits": 2 * target_features[:, :NUM_CLASSES] + torch.randn(47, NUM_CLASSES, generator=g),
        "source_features": source_features,
        "source_losses": torch.rand(39, generator=g),
    }


def _metrics() -> dict[str, object]:
    return {
        "snd": SoftNeighborhoodDensity(),
        "bnm": BatchNuclearNorm(num_classes=NUM_CLASSES),
        "dev": DeepEmbeddedValidation(),
        "silhouette": ClassSilhouette(),
        "pad": ProxyADistance(max_samples=None),
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
    target = zip(mine["target_features"].split(8), mine["target_logits"].split(8), strict=True)
    for features, logits in target:
        metrics["snd"].update(logits)
        metrics["bnm"].update(logits)
        metrics["silhouette"].update(features, logits)
        metrics["dev"].update(target_features=features)
        metrics["pad"].update(target=features)
    source = zip(mine["source_features"].split(7), mine["source_losses"].split(7), strict=True)
    for features, losses in source:
        metrics["dev"].update(source_features=features, source_losses=losses)
        metrics["pad"].update(source=features)
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
    }
    for rank in (0, 1):
        values = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert values.keys() == expected.keys()
        for name, value in values.items():
            assert value == pytest.approx(expected[name], rel=1e-5), (rank, name)
