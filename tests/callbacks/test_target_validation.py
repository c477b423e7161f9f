"""TargetValidation: logged values equal the functionals, target labels ignored, errors, DDP, monitoring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer import DomainAdaptationDataModule, DomainAdaptationModule, TargetValidation
from lt_transfer.callbacks.target_validation import DEFAULT_MONITOR, DEFAULT_VALIDATOR, VALIDATOR_MODES
from lt_transfer.metrics import (
    batch_nuclear_norm,
    class_silhouette,
    deep_embedded_validation,
    information_maximization,
    prediction_entropy,
    soft_neighborhood_density,
)
from tests.conftest import make_tiny_backbone

ALL = list(VALIDATOR_MODES)


def _data(target_labels: str = "random", n: int = 24) -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(0)
    source = TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % 3)
    x_t = torch.randn(n, 3, 8, 8, generator=g) + 0.5
    if target_labels == "none":
        target = TensorDataset(x_t)
    elif target_labels == "out_of_range":  # any use in a loss or an accuracy would fail
        target = TensorDataset(x_t, torch.full((n,), 999))
    else:
        target = TensorDataset(x_t, torch.randint(0, 3, (n,), generator=g))
    return source, target


def _dm(target_labels: str = "random", n: int = 24) -> DomainAdaptationDataModule:
    source, target = _data(target_labels, n)
    unlabelled = TensorDataset(target.tensors[0])
    return DomainAdaptationDataModule.from_datasets(
        source, unlabelled, val=[source, target], num_classes=3, batch_size=8
    )


def _model(cls: type[DomainAdaptationModule] = DomainAdaptationModule) -> DomainAdaptationModule:
    torch.manual_seed(0)
    return cls(make_tiny_backbone(), num_classes=3, method="dann")


def _trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    options = dict(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    options.update(kwargs)
    return pl.Trainer(**options)


class _OwnValidationOnly(DomainAdaptationModule):
    """Its own validation step reads labels of the source loader only (so target labels are never needed)."""

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        if dataloader_idx == 0:
            return super().validation_step(batch, batch_idx, dataloader_idx)
        return None


def _expected(model: nn.Module, source: TensorDataset, target: TensorDataset) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        x_s, y_s = source.tensors
        x_t = target.tensors[0]
        logits_t, features_t = model(x_t), model.backbone(x_t)
        logits_s, features_s = model(x_s), model.backbone(x_s)
    return {
        "snd": soft_neighborhood_density(logits_t).item(),
        "bnm": batch_nuclear_norm(logits_t).item(),
        "im": information_maximization(logits_t).item(),
        "entropy": prediction_entropy(logits_t).item(),
        "dev": deep_embedded_validation(
            features_s, F.cross_entropy(logits_s, y_s, reduction="none"), features_t
        ).item(),
        "silhouette": class_silhouette(features_t, logits_t).item(),
        "source_acc": (logits_s.argmax(1) == y_s).float().mean().item(),
    }


def test_logged_values_equal_the_functionals_on_named_loaders(tmp_path: Path):
    model = _model()
    results = _trainer(tmp_path).validate(model, datamodule=_dm(), verbose=False)[0]
    expected = _expected(model, *_data())
    for name in ALL:
        assert f"val/target/{name}" not in results
    callback = TargetValidation(ALL)
    results = _trainer(tmp_path, callbacks=[callback]).validate(model, datamodule=_dm(), verbose=False)[0]
    for name, value in expected.items():
        assert results[f"val/target/{name}"] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert results["val/source/acc"] == pytest.approx(expected["source_acc"])


def test_target_labels_are_ignored(tmp_path: Path):
    values = []
    for labels in ("random", "none", "out_of_range"):
        model = _model(_OwnValidationOnly)
        trainer = _trainer(tmp_path, callbacks=[TargetValidation(ALL)])
        values.append(trainer.validate(model, datamodule=_dm(labels), verbose=False)[0])
    assert values[0] == values[1] == values[2]


class Poisoned(torch.Tensor):
    """Labels that fail on any read of their values (moving and dtype/shape queries are allowed)."""

    ALLOWED = {"to", "__get__", "is_floating_point", "size", "dim", "__len__", "numel", "__repr__", "cpu"}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") not in cls.ALLOWED:
            raise AssertionError(f"the target labels were read ({getattr(func, '__name__', func)})")
        return super().__torch_function__(func, types, args, kwargs or {})


def _poisoned_collate(samples):
    x = torch.stack([s[0] for s in samples])
    y = torch.stack([s[1] for s in samples]).as_subclass(Poisoned)
    return {"image": x, "label": y}


class UserModule(pl.LightningModule):
    """Not one of ours: features in `encoder`, one unnamed validation loader, no label reads in validation."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU())
        self.classifier = nn.Linear(8, 3)

    def forward(self, x):
        return self.classifier(self.encoder(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _user_data(n: int = 30, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    return TensorDataset(torch.randn(n, 12, generator=g) + 2 * F.one_hot(y, 12).float(), y)


def test_user_module_with_poisoned_target_labels(tmp_path: Path):
    torch.manual_seed(0)
    target = DataLoader(_user_data(), batch_size=10, collate_fn=_poisoned_collate)
    callback = TargetValidation(["snd", "silhouette", "entropy"], target=0, backbone="encoder")
    model = UserModule()
    results = _trainer(tmp_path, callbacks=[callback]).validate(model, target, verbose=False)[0]
    x = _user_data().tensors[0]
    with torch.no_grad():
        logits, features = model(x), model.encoder(x)
    snd, silhouette = soft_neighborhood_density(logits).item(), class_silhouette(features, logits).item()
    assert results["val/target/snd"] == pytest.approx(snd, rel=1e-5)
    assert results["val/target/silhouette"] == pytest.approx(silhouette, rel=1e-5)


def test_monitored_by_model_checkpoint(tmp_path: Path):
    torch.manual_seed(0)
    callback = TargetValidation(["im", "entropy"], target=0, backbone="encoder", normalize=True)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor=callback.monitor("im"), mode=callback.mode("im"))
    trainer = _trainer(tmp_path, callbacks=[callback, checkpoint], max_epochs=3, enable_checkpointing=True)
    train = DataLoader(_user_data(seed=1), batch_size=10, shuffle=True)
    trainer.fit(UserModule(), train, DataLoader(_user_data(), batch_size=10))
    assert Path(checkpoint.best_model_path).is_file()
    assert 0.0 <= float(checkpoint.best_model_score) <= 1.0
    assert set(trainer.callback_metrics) >= {"val/target/im", "val/target/entropy"}


def test_argument_errors():
    with pytest.raises(ValueError, match=r"validators=\['snd', 'accuracy'\]\): give each validator once"):
        TargetValidation(["snd", "accuracy"])
    with pytest.raises(ValueError, match=r"snd_temperature=0.1\) only applies to the validators \['snd'\]"):
        TargetValidation(["bnm"], snd_temperature=0.1)
    with pytest.raises(ValueError, match=r"source=0\) only applies to the validators \['dev', 'source_acc"):
        TargetValidation(["snd"], source=0)
    with pytest.raises(ValueError, match="temperature"):
        TargetValidation(["snd"], snd_temperature=0.0)
    with pytest.raises(ValueError, match="distance"):
        TargetValidation(["silhouette"], silhouette_distance="manhattan")
    with pytest.raises(ValueError, match="unknown validator"):
        TargetValidation.mode("acc")


def test_validation_errors(tmp_path: Path):
    loader = DataLoader(_user_data(), batch_size=10)
    missing = r"TargetValidation\(source='source'\): no validation loader of that name \(validators \['dev'\]"
    with pytest.raises(ValueError, match=missing):
        _trainer(tmp_path, callbacks=[TargetValidation(["dev"], target=0, backbone="encoder")]).validate(
            UserModule(), loader, verbose=False
        )
    with pytest.raises(ValueError, match=r"TargetValidation\(target='target'\): no validation loader of"):
        trainer = _trainer(tmp_path, callbacks=[TargetValidation(["snd"])])
        trainer.validate(UserModule(), loader, verbose=False)
    with pytest.raises(ValueError, match=r"2 target validation samples for 3 classes"):
        _trainer(tmp_path, callbacks=[TargetValidation(["im"], target=0)]).validate(
            UserModule(), DataLoader(_user_data(n=2)), verbose=False
        )
    with pytest.raises(ValueError, match=r"UserModule has no attribute 'backbone'"):
        _trainer(tmp_path, callbacks=[TargetValidation(["silhouette"], target=0)]).validate(
            UserModule(), loader, verbose=False
        )
    unlabelled = DataLoader(TensorDataset(_user_data().tensors[0]), batch_size=10)
    callback = TargetValidation(["source_acc"], target=0, source=1)
    with pytest.raises(ValueError, match="need labelled source validation batches"):
        _trainer(tmp_path, callbacks=[callback]).validate(UserModule(), [loader, unlabelled], verbose=False)


class _WriteValues(TargetValidation):
    def __init__(self, out: str) -> None:
        super().__init__(ALL)
        self.out = out

    def on_validation_end(self, trainer, pl_module):
        names = {self.monitor(name) for name in self.validators}
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k in names}
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps(values))


def test_ddp_spawn_two_ranks_log_the_single_process_values(tmp_path: Path):
    """24 samples per domain, batch 8, 2 ranks: no padding, the gathered samples are exactly the data set.

    Tolerance rel=1e-4, abs=1e-6: the same samples in another order (float32 sums, and DEV's
    logistic regression fitted on reordered rows)."""
    model = _model()
    expected = _expected(model, *_data())
    trainer = _trainer(tmp_path, strategy="ddp_spawn", devices=2, callbacks=[_WriteValues(str(tmp_path))])
    trainer.validate(model, datamodule=_dm(), verbose=False)
    for rank in (0, 1):
        values = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert set(values) == {f"val/target/{name}" for name in ALL}
        for name, value in expected.items():
            assert values[f"val/target/{name}"] == pytest.approx(value, rel=1e-4, abs=1e-6), (rank, name)


def test_one_line_in_a_cli_recipe(tmp_path: Path):
    """`--trainer.callbacks+=lt_transfer.TargetValidation` on the DANN recipe: EarlyStopping monitors it."""
    recipe = Path(__file__).resolve().parents[2] / "configs" / "dann_mnist_to_mnistm.yaml"
    command = [
        sys.executable, "-m", "lt_transfer.cli", "fit", "--config", str(recipe),
        "--trainer.fast_dev_run=true", "--trainer.callbacks+=lt_transfer.TargetValidation",
        "--trainer.callbacks.validators=[snd, im, dev]",
        "--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping",
        "--trainer.callbacks.monitor=val/target/dev", "--trainer.callbacks.mode=min",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "`Trainer.fit` stopped" in result.stdout + result.stderr


RECIPES = sorted((Path(__file__).resolve().parents[2] / "configs").glob("dann_*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_dann_recipes_checkpoint_on_the_default_validator(recipe: Path):
    """The recipes follow DEFAULT_VALIDATOR: change the constant and this test names the recipes to update."""
    callbacks = yaml.safe_load(recipe.read_text())["trainer"]["callbacks"]
    [validation] = [c for c in callbacks if c["class_path"] == "lt_transfer.TargetValidation"]
    [checkpoint] = [c for c in callbacks if c["class_path"] == "lightning.pytorch.callbacks.ModelCheckpoint"]
    assert DEFAULT_VALIDATOR in validation["init_args"]["validators"]
    assert checkpoint["init_args"] == {"monitor": DEFAULT_MONITOR, "mode": VALIDATOR_MODES[DEFAULT_VALIDATOR]}
    assert DEFAULT_MONITOR == TargetValidation([DEFAULT_VALIDATOR]).monitor(DEFAULT_VALIDATOR)


def test_dann_recipe_keeps_the_best_label_free_checkpoint(tmp_path: Path):
    """A short real run of the recipe: ModelCheckpoint finds val/target/<default> and saves its best."""
    command = [
        sys.executable, "-m", "lt_transfer.cli", "fit", "--config", str(RECIPES[0].with_name(
            "dann_mnist_to_mnistm.yaml")), "--trainer.accelerator=cpu", "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
        "--data.init_args.source_samples=256", "--data.init_args.target_samples=256",
        "--data.init_args.val_samples=128", "--data.init_args.target_val_samples=128",
        "--data.init_args.test_samples=64",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    [checkpoint] = (tmp_path / "lightning_logs").rglob("*.ckpt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["callbacks"]
    [(key, saved)] = [(k, v) for k, v in state.items() if k.startswith("ModelCheckpoint")]
    assert f"'monitor': '{DEFAULT_MONITOR}'" in key
    assert torch.isfinite(torch.as_tensor(saved["best_model_score"]))
