import json
import struct
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer.callbacks import DomainShiftReport, NegativeTransferMonitor
from lt_transfer.callbacks.domain_report import extract_features, resolve_feature_fn


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def domain(n: int, shift: float, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    return TensorDataset(torch.randn(n, 6, generator=generator) + shift + y[:, None], y)


class Custom(pl.LightningModule):
    """Not one of ours: the features live in `encoder`, with a BatchNorm kept in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.classifier = nn.Linear(8, 3)
        self.encoder[1].eval()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.classifier(self.encoder(x)), y)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        acc = (self.classifier(self.encoder(x)).argmax(-1) == y).float().mean()
        name = ["source", "target"][dataloader_idx]
        self.log(f"val/{name}/acc", acc, add_dataloader_idx=False, sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TwoDomains(pl.LightningDataModule):
    eval_names = ["source", "target"]

    def __init__(self, shift: float = 4.0) -> None:
        super().__init__()
        self.shift = shift

    def train_dataloader(self):
        return DataLoader(domain(64, 0.0, 0), batch_size=16)

    def val_dataloader(self):
        return [
            DataLoader(domain(64, 0.0, 1), batch_size=32),
            DataLoader(domain(64, self.shift, 2), batch_size=32),
        ]


def trainer(tmp_path, callbacks, **kwargs):
    return pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_report_on_any_module_png_json_and_tensorboard(tmp_path):
    report = DomainShiftReport(
        backbone="encoder",
        source_dataloader=DataLoader(domain(48, 0.0, 1), batch_size=16),
        target_dataloader=DataLoader(domain(48, 6.0, 2), batch_size=16),
        methods=["pca"],
        figsize=(6.0, 3.0),
        dpi=50,
    )
    torch.manual_seed(0)  # a random encoder: unseeded, the PAD of this small sample dipped below 1.5
    model = Custom()
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer(tmp_path, [report], logger=logger).fit(model, DataLoader(domain(64, 0.0, 0), batch_size=16))

    out = Path(logger.log_dir) / "domain_report"
    assert [r.stage for r in report.results] == ["start", "end"]
    assert all(r.pad > 1.5 and r.num_source == 48 for r in report.results)  # shifted by 6: separable
    for stage in ("start", "end"):
        assert png_size(out / f"domain_report_{stage}.png") == (300, 150)
    summary = json.loads((out / "domain_report.json").read_text())
    assert [s["stage"] for s in summary] == ["start", "end"]
    assert model.training and not model.encoder[1].training  # modes restored exactly

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "domain_report/embedding" in events.Tags()["images"]
    assert "domain_report/pad" in events.Tags()["scalars"]


def test_datamodule_val_loaders_by_name_and_tsne(tmp_path):
    report = DomainShiftReport(
        backbone="encoder",
        source="source",
        target="target",
        methods=["pca", "tsne"],
        at_end=False,
        max_samples=64,
        dirpath=str(tmp_path / "out"),
        dpi=30,
    )
    torch.manual_seed(0)
    trainer(tmp_path, [report], logger=False).fit(Custom(), datamodule=TwoDomains(shift=0.0))
    (result,) = report.results
    assert result.pad < 0.5 and result.num_target == 64  # one distribution: near 0
    width, height = png_size(tmp_path / "out" / "domain_report_start.png")
    assert (width, height) == (270, 2 * 114 + 12)  # 9 x (2 rows x 3.8 + 0.4 title) inches at 30 dpi

    restored = DomainShiftReport(backbone="encoder", at_end=False, dirpath=str(tmp_path / "again"))
    restored.load_state_dict(report.state_dict())
    trainer(tmp_path, [restored], logger=False).fit(Custom(), datamodule=TwoDomains())
    assert len(restored.results) == 1 and not (tmp_path / "again").exists()  # start not redone


def test_clear_errors():
    with pytest.raises(ValueError, match=r"backbone='backbone'.*children are \['encoder', 'classifier'\]"):
        resolve_feature_fn(Custom(), "backbone")
    with pytest.raises(ValueError, match="methods"):
        DomainShiftReport(methods=["umap"])
    with pytest.raises(ValueError, match="nothing to report"):
        DomainShiftReport(at_start=False, at_end=False)


class RankRecordingReport(DomainShiftReport):
    """Records which ranks computed/wrote a report and what each rank ends up holding."""

    def _compute_and_write(self, trainer, pl_module, stage):
        Path(self.dirpath, f"computed_by_rank{trainer.global_rank}_{stage}").touch()
        return super()._compute_and_write(trainer, pl_module, stage)

    def on_train_end(self, trainer, pl_module):
        super().on_train_end(trainer, pl_module)
        pads = [r.pad for r in self.results]
        Path(self.dirpath, f"results_rank{trainer.global_rank}.json").write_text(json.dumps(pads))


def test_ddp_spawn_only_rank_zero_writes(tmp_path):
    """Exact (no tolerance): the files rank 0 alone writes, and equal results on both ranks."""
    out = tmp_path / "out"
    out.mkdir()
    report = RankRecordingReport(backbone="encoder", methods=["pca"], dirpath=str(out), dpi=30)
    monitor = NegativeTransferMonitor("val/target/acc", baseline=0.99, action="stop")
    trainer(
        tmp_path,
        [report, monitor],
        logger=False,
        accelerator="cpu",
        strategy="ddp_spawn",
        devices=2,
    ).fit(Custom(), datamodule=TwoDomains())
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "computed_by_rank0_end",
        "computed_by_rank0_start",
        "domain_report.json",
        "domain_report_end.png",
        "domain_report_start.png",
        "results_rank0.json",
        "results_rank1.json",
    ]
    pads = [json.loads((out / f"results_rank{r}.json").read_text()) for r in (0, 1)]
    assert pads[0] == pads[1] and len(pads[0]) == 2  # broadcast: every rank holds the same results


class ImageDicts(torch.utils.data.Dataset):
    """Dict samples keyed ``image`` and ``label`` (the batch contract's names)."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, y = self.data[i]
        return {"label": y, "image": x}


def test_image_keyed_dict_batches(tmp_path):
    source, target = ImageDicts(domain(48, 0.0, 1)), ImageDicts(domain(48, 6.0, 2))
    feats, labels = extract_features(nn.Identity(), DataLoader(source, batch_size=16))
    assert torch.equal(feats, source.data.tensors[0]) and torch.equal(labels, source.data.tensors[1])
    report = DomainShiftReport(
        backbone="encoder",
        source_dataloader=DataLoader(source, batch_size=16),
        target_dataloader=DataLoader(target, batch_size=16),
        methods=["pca"],
        at_end=False,
        dirpath=str(tmp_path / "out"),
        dpi=30,
    )
    torch.manual_seed(0)
    trainer(tmp_path, [report], logger=False).fit(Custom(), DataLoader(domain(64, 0.0, 0), batch_size=16))
    (result,) = report.results
    assert result.num_source == result.num_target == 48 and result.pad > 1.5


# ------------------------------------------------------------------ trainer limits
class Counted:
    """A loader that counts the batches read from it."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader, self.batches = loader, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.batches += 1
            yield batch


def counted_report(tmp_path, batch_size: int = 16, **kwargs) -> tuple[DomainShiftReport, Counted, Counted]:
    source = Counted(DataLoader(domain(48, 0.0, 1), batch_size=batch_size))
    target = Counted(DataLoader(domain(48, 6.0, 2), batch_size=batch_size))
    report = DomainShiftReport(
        backbone="encoder",
        source_dataloader=source,
        target_dataloader=target,
        methods=["pca"],
        dirpath=str(tmp_path / "out"),
        dpi=30,
        **kwargs,
    )
    return report, source, target


def test_fast_dev_run_checks_one_batch_per_domain_and_writes_nothing(tmp_path, caplog):
    report, source, target = counted_report(tmp_path)
    torch.manual_seed(0)
    with caplog.at_level("INFO"):
        trainer(tmp_path, [report], fast_dev_run=True).fit(
            Custom(), DataLoader(domain(64, 0.0, 0), batch_size=16)
        )
    assert (source.batches, target.batches) == (2, 2)  # start and end: one batch each, of 3
    assert report.results == [] and not (tmp_path / "out").exists()
    assert "fast_dev_run: features of 16 source and 16 target samples checked" in caplog.text


@pytest.mark.parametrize("limit", [1, 0.5], ids=["int", "float"])
def test_limit_val_batches_caps_the_samples_of_each_domain(tmp_path, limit):
    report, source, target = counted_report(tmp_path, at_end=False)
    torch.manual_seed(0)
    trainer(tmp_path, [report], logger=False, limit_val_batches=limit).fit(
        Custom(), DataLoader(domain(64, 0.0, 0), batch_size=16)
    )
    (result,) = report.results
    assert (source.batches, target.batches) == (1, 1)  # int(3 x 0.5) = 1 batch of 3
    assert result.num_source == result.num_target == 16


def test_limits_leaving_too_few_samples_skip_the_report(tmp_path, caplog):
    report, source, _ = counted_report(tmp_path, batch_size=2, at_end=False)
    with caplog.at_level("INFO"):
        trainer(tmp_path, [report], logger=False, limit_val_batches=1).fit(
            Custom(), DataLoader(domain(64, 0.0, 0), batch_size=16)
        )
    assert report.results == [] and source.batches == 1
    assert "needs 4 per domain, so no report" in caplog.text
    report, source, _ = counted_report(tmp_path, at_end=False)
    trainer(tmp_path, [report], logger=False, limit_val_batches=0).fit(
        Custom(), DataLoader(domain(64, 0.0, 0), batch_size=16)
    )
    assert report.results == [] and source.batches == 0
