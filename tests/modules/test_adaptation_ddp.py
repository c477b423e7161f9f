"""Two-process DDP: every new adaptation method, SHOT, TENT and AdaBN, in one spawn of two processes.

Spawning the two processes once and running every trainer inside them (``strategy="ddp"`` with
the processes launched here, as a cluster launcher would) costs one start-up instead of one per
method. Each process saves what it ended with; the test compares the two exactly
(``torch.equal``, no tolerance).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from lt_transfer import TENT, AdaBN, SourceFreeAdaptationModule
from lt_transfer.data.domain_adaptation import DomainAdaptationDataModule
from tests.modules.test_domain_adaptation import _dm, _model
from tests.modules.test_domain_adaptation_methods import NEW_METHODS
from tests.modules.test_source_free import _AtFirstStep, _SourceThatMustNotBeRead, _target, _target_val


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_trainer(**kwargs: object) -> pl.Trainer:
    options: dict[str, object] = dict(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return pl.Trainer(**options)  # type: ignore[arg-type]


def _trained_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and the buffers every process must agree on (not BatchNorm's per-process statistics)."""
    state = {name: p.detach().clone() for name, p in module.named_parameters()}
    state.update((name, b.clone()) for name, b in module.named_buffers() if "random" in name)
    return state


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", NODE_RANK="0", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    results: dict[str, dict[str, torch.Tensor]] = {}
    for name, kwargs in NEW_METHODS.items():
        model = _model(**kwargs)
        _ddp_trainer(max_steps=2, limit_val_batches=0).fit(model, _dm())
        results[name] = _trained_state(model)
    source, target = _SourceThatMustNotBeRead(), _target()
    options = {"num_classes": 3, "batch_size": 4, "source_free": True}
    data = DomainAdaptationDataModule.from_datasets(source, target, **options)
    shot = SourceFreeAdaptationModule(_model(method="source_only"), beta=0.3)  # with centroid passes
    check = _AtFirstStep(_target())  # whole-set centroids from each process's shard (sums reduced)
    _ddp_trainer(max_steps=2, callbacks=[check], limit_val_batches=0).fit(shot, data)
    assert check.checked
    results["shot"] = {**_trained_state(shot), "centroids": shot.centroids.centroids}
    for callback in (TENT(keep=True), AdaBN(keep=True)):
        model = _model(method="source_only")
        _ddp_trainer(callbacks=[callback]).test(model, DataLoader(_target_val(), batch_size=2))
        results[type(callback).__name__] = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(results, Path(out) / f"rank{rank}.pt")


def test_ddp_two_processes_keep_ranks_identical(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1))
    assert set(first) == {*NEW_METHODS, "shot", "TENT", "AdaBN"}
    for name in [*NEW_METHODS, "shot"]:
        for key, value in first[name].items():
            assert torch.equal(value, second[name][key]), (name, key)
    # AdaBN: every process passes over the whole loader, so the statistics agree; TENT adapts each
    # process on its own share of the stream (documented), so only AdaBN is compared
    for key, value in first["AdaBN"].items():
        assert torch.equal(value, second["AdaBN"][key]), key
    before = _model(method="source_only").state_dict()
    mean = "backbone.model.stem.1.running_mean"
    assert not torch.equal(first["AdaBN"][mean], before[mean])
    weight = "backbone.model.stem.1.weight"
    assert not torch.equal(first["TENT"][weight], before[weight])
