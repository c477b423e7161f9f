"""SourceFreeAdaptationModule (SHOT): no source batch read, frozen head, centroids, checkpoints, resume."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lt_transfer import DomainAdaptationModule, SourceFreeAdaptationModule
from lt_transfer.data.domain_adaptation import DomainAdaptationDataModule
from lt_transfer.losses import nearest_centroid_labels, shot_centroids, shot_pseudo_labels
from tests.label_guard import ReadyBatches, untouchable_labels
from tests.modules.test_domain_adaptation import _model, _trainer


class _SourceThatMustNotBeRead(Dataset):
    """A labelled source set that fails the test when any sample is read."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise AssertionError("a source sample was read")


def _target(n: int = 24, labels: torch.Tensor | None = None) -> TensorDataset:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 3, 8, 8, generator=g) + 1
    return TensorDataset(x) if labels is None else TensorDataset(x, labels)


def _target_val() -> TensorDataset:
    g = torch.Generator().manual_seed(4)
    return TensorDataset(torch.randn(8, 3, 8, 8, generator=g) + 1, torch.randint(0, 3, (8,), generator=g))


def _source_model() -> DomainAdaptationModule:
    """A tiny source-only model (random weights are enough for the mechanics)."""
    return _model(method="source_only")


def _shot(**kwargs: object) -> SourceFreeAdaptationModule:
    """SHOT with the paper's pseudo-labels (beta 0.3, not the default 0) unless told otherwise, so
    the centroid passes, their DDP reduction and their checkpointing are exercised."""
    torch.manual_seed(0)
    kwargs.setdefault("beta", 0.3)
    return SourceFreeAdaptationModule(_source_model(), optimizer=torch.optim.SGD, **kwargs)  # type: ignore[arg-type]


def _data(**kwargs: object) -> DomainAdaptationDataModule:
    return DomainAdaptationDataModule.from_datasets(
        _SourceThatMustNotBeRead(), _target(), val=[_target_val()], eval_names=["target"], num_classes=3,
        batch_size=4, source_free=True, **kwargs,  # type: ignore[arg-type]
    )


def test_fast_dev_run() -> None:
    trainer = _trainer(fast_dev_run=True)
    trainer.fit(_shot(), _data())
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/im_loss", "train/pseudo_label_loss", "val/target/acc"):
        assert math.isfinite(float(metrics[key])), key


def test_no_source_batch_is_ever_read() -> None:
    """The source training set raises when read: SHOT trains two epochs without touching it."""
    model = _shot()
    trainer = _trainer(max_epochs=2)
    trainer.fit(model, _data())
    assert trainer.global_step == 12 and model.centroids is not None
    # a training loader that would yield source batches is refused before it is iterated
    with_source = DomainAdaptationDataModule.from_datasets(
        _SourceThatMustNotBeRead(), _target(), num_classes=3, batch_size=4
    )
    with pytest.raises(ValueError, match="reads target data only"):
        _trainer(max_epochs=1).fit(_shot(), with_source)
    raising = DataLoader(_SourceThatMustNotBeRead(), batch_size=4)
    combined = CombinedLoader({"source": raising, "target": DataLoader(_target(), batch_size=4)})
    with pytest.raises(ValueError, match="DomainAdaptationDataModule\\(source_free=True\\)"):
        _trainer(max_epochs=1).fit(_shot(), train_dataloaders=combined)


def test_target_labels_are_never_read() -> None:
    batches = ReadyBatches([{"x": torch.randn(4, 3, 8, 8), "y": untouchable_labels(4)} for _ in range(3)])
    trainer = _trainer(max_epochs=2)
    trainer.fit(_shot(), train_dataloaders=batches)  # the centroid pass reads these batches too
    assert math.isfinite(float(trainer.callback_metrics["train/pseudo_label_loss"]))
    nan_labels = _target(labels=torch.full((24,), float("nan")))
    trainer = _trainer(max_epochs=1)
    trainer.fit(_shot(), train_dataloaders=DataLoader(nan_labels, batch_size=4))
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))


def test_head_is_frozen_and_must_stay_so() -> None:
    source = _source_model()
    model = SourceFreeAdaptationModule(source)
    assert model.head is source.head and model.backbone is source.backbone
    assert not any(p.requires_grad for p in model.head.parameters())
    assert all(p.requires_grad for p in model.backbone.parameters())
    model.train()
    assert not model.head.training and model.backbone.training
    group_ids = {id(p) for group in model.param_groups() for p in group["params"]}
    assert group_ids == {id(p) for p in model.backbone.parameters()}
    model.head.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="head 'head' has trainable parameters \\['weight'\\]"):
        _trainer(max_epochs=1).fit(model, _data())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="source_model=None.*adapts a model trained on the source domain"):
        SourceFreeAdaptationModule()
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        SourceFreeAdaptationModule("missing.ckpt")
    with pytest.raises(ValueError, match="backbone='features'.*children are \\["):
        SourceFreeAdaptationModule(_source_model(), backbone="features")
    with pytest.raises(ValueError, match="num_classes=5.*num_classes=3"):
        SourceFreeAdaptationModule(_source_model(), num_classes=5)
    with pytest.raises(ValueError, match="beta=-1"):
        SourceFreeAdaptationModule(_source_model(), beta=-1)
    with pytest.raises(ValueError, match="refinement_rounds=-1"):
        SourceFreeAdaptationModule(_source_model(), refinement_rounds=-1)
    with pytest.raises(ValueError, match="source_class='x.Y'.*only applies to a checkpoint"):
        SourceFreeAdaptationModule(_source_model(), source_class="x.Y")


class _AtFirstStep(Callback):
    """Compares the module's centroids with SHOT's over the whole target set, at the first step."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data
        self.checked = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step:
            return
        pl_module.eval()
        with torch.no_grad():
            features = pl_module.backbone(self.data.tensors[0])
            logits = pl_module.head(features)
        pl_module.train()
        expected = shot_centroids(features, logits, refinement_rounds=1)
        torch.testing.assert_close(pl_module.centroids.centroids, expected.centroids)
        assert pl_module.centroids.candidates.tolist() == expected.candidates.tolist()
        labels = nearest_centroid_labels(features, *pl_module.centroids)
        assert labels.tolist() == shot_pseudo_labels(features, logits).tolist()
        self.checked = True


def test_centroids_are_shots_over_the_whole_target_set() -> None:
    check = _AtFirstStep(_target())
    _trainer(max_steps=2, callbacks=[check], limit_val_batches=0).fit(_shot(), _data())
    assert check.checked


@pytest.mark.parametrize("beta", [0.0, None], ids=["beta=0", "default"])
def test_beta_zero_trains_information_maximisation_alone_without_passes(beta: float | None) -> None:
    """beta=0 (SHOT-IM) is also the default: no centroid pass, no pseudo-label term."""
    if beta is None:
        torch.manual_seed(0)
        model = SourceFreeAdaptationModule(_source_model(), optimizer=torch.optim.SGD)  # type: ignore[arg-type]
    else:
        model = _shot(beta=beta)
    trainer = _trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(model, _data())
    assert model.centroids is None and "train/pseudo_label_loss" not in trainer.callback_metrics


def test_source_from_a_checkpoint(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(8, 3, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)
    target_data = TensorDataset(torch.randn(8, 3, 28, 28, generator=g))
    data = DomainAdaptationDataModule.from_datasets(TensorDataset(images, labels), target_data, batch_size=4)
    source = DomainAdaptationModule("lenet", method="source_only")
    trainer = _trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(source, data)
    path = tmp_path / "source.ckpt"
    trainer.save_checkpoint(path)
    for source_class in (None, "lt_transfer.DomainAdaptationModule"):
        model = SourceFreeAdaptationModule(str(path), source_class=source_class)
        for key, value in source.backbone.state_dict().items():
            torch.testing.assert_close(model.backbone.state_dict()[key], value)
        assert model.hparams.source_model == str(path) and model(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="source_class='torch.nn.Linear' is not a LightningModule class"):
        SourceFreeAdaptationModule(str(path), source_class="torch.nn.Linear")
    tiny = _trainer(max_steps=1, limit_val_batches=0)
    tiny_source = TensorDataset(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,)))
    tiny_target = TensorDataset(torch.randn(8, 3, 8, 8))
    tiny_data = DomainAdaptationDataModule.from_datasets(tiny_source, tiny_target, num_classes=3)
    tiny.fit(_source_model(), tiny_data)
    tiny.save_checkpoint(tmp_path / "tiny.ckpt")  # built from a Backbone instance: not rebuildable alone
    with pytest.raises(ValueError, match=r"(?s)\['backbone'\] were module objects.*pass backbone="):
        SourceFreeAdaptationModule(str(tmp_path / "tiny.ckpt"))

    class Other(pl.LightningModule):
        def __init__(self, width: int = 3) -> None:
            super().__init__()
            self.save_hyperparameters()

    other = tmp_path / "other.ckpt"
    torch.save({"hyper_parameters": {"width": 3}, "state_dict": {}}, other)
    with pytest.raises(ValueError, match="does not record its LightningModule class.*source_class="):
        SourceFreeAdaptationModule(str(other))


class _Centroids(Callback):
    def __init__(self) -> None:
        self.seen: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.seen[trainer.global_step] = pl_module.centroids.centroids.clone()


def _loader() -> DataLoader:
    return DataLoader(_target(), batch_size=4)  # in order: a resumed epoch sees the same batches


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """Resume at an epoch's end gives the same weights; resume inside an epoch, the same centroids."""
    full = _Centroids()
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, save_on_train_epoch_end=True)
    uninterrupted = _shot()
    _trainer(max_epochs=3, callbacks=[ckpt, full], enable_checkpointing=True).fit(uninterrupted, _loader())
    path = next(p for p in tmp_path.iterdir() if p.name.startswith("epoch=0"))
    resumed = _shot()
    record = _Centroids()
    _trainer(max_epochs=3, callbacks=[record]).fit(resumed, _loader(), ckpt_path=path)
    assert sorted(record.seen) == list(range(6, 18))
    for step, centroids in record.seen.items():
        torch.testing.assert_close(centroids, full.seen[step])
    expected = uninterrupted.state_dict()
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)
    # inside an epoch: the checkpoint's centroids, not ones recomputed from the weights at step 2
    mid = tmp_path / "mid"
    step_ckpt = ModelCheckpoint(dirpath=mid, every_n_train_steps=2, save_top_k=-1)
    _trainer(max_steps=3, callbacks=[step_ckpt], enable_checkpointing=True).fit(_shot(), _loader())
    mid_record = _Centroids()
    restarted = _shot()
    mid_path = mid / "epoch=0-step=2.ckpt"
    _trainer(max_epochs=1, callbacks=[mid_record]).fit(restarted, _loader(), ckpt_path=mid_path)
    first = min(mid_record.seen)
    torch.testing.assert_close(mid_record.seen[first], full.seen[0])
    recomputed = restarted._pass_centroids(_loader())  # what a fresh pass would have given instead
    assert not torch.allclose(recomputed.centroids, full.seen[0])


def test_cli_recipe_adapts_a_source_checkpoint(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(8, 3, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)
    data = DomainAdaptationDataModule.from_datasets(
        TensorDataset(images, labels), TensorDataset(torch.randn(8, 3, 28, 28, generator=g)), batch_size=4
    )
    trainer = _trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(DomainAdaptationModule("lenet", method="source_only"), data)
    source = tmp_path / "source.ckpt"
    trainer.save_checkpoint(source)
    root = Path(__file__).resolve().parents[2]
    cli = Path(sys.executable).parent / "lt-transfer"
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "lt_transfer.cli"]
    sizes = [f"--data.init_args.{key}=64" for key in ("source_samples", "target_samples", "val_samples")]
    result = subprocess.run(
        [
            *command,
            "fit",
            "--config",
            str(root / "configs" / "shot_mnist_to_mnistm.yaml"),
            f"--model.init_args.source_model={source}",
            "--trainer.fast_dev_run=true",
            "--data.init_args.target_val_samples=64",
            "--data.init_args.test_samples=64",
            *sizes,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
