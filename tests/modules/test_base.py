"""The shared skeleton (modules/_base.py): one batch contract, log keys, metrics, checks, in every module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer import DistillationModule, DomainAdaptationModule, TextClassifier, TransferClassifier
from lt_transfer.modules._base import ClassificationModule
from tests.conftest import make_tiny_backbone
from tests.hf_tiny import save_tiny_bert

#: The batch forms of lt_transfer.batches for image data: labelled and unlabelled.
FORMS: dict[str, Callable[[torch.Tensor, torch.Tensor | None], Any]] = {
    "tuple": lambda x, y: (x, y) if y is not None else (x,),
    "image_dict": lambda x, y: {"image": x, "label": y} if y is not None else {"image": x},
    "xy_dict": lambda x, y: {"x": x, "y": y} if y is not None else {"x": x},
}
TEXTS = ["bad service", "the flight was very late again", "good crew thanks", "lost bag", "love it", "awful"]


def _loader(form: str, n: int = 8, seed: int = 0, labelled: bool = True, shift: float = 0.0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=generator) + shift
    y = torch.randint(0, 3, (n,), generator=generator)

    def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
        xs = torch.stack([item[0] for item in items])
        ys = torch.stack([item[1] for item in items]) if labelled else None
        return FORMS[form](xs, ys)

    return DataLoader(TensorDataset(x, y), batch_size=4, collate_fn=collate)


def _batches(batches: list[Any]) -> DataLoader:
    """A loader that yields the given, already collated batches."""
    return DataLoader(batches, batch_size=None)


def _trainer(**kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = dict(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def _teacher() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(make_tiny_backbone(), nn.Linear(8, 3))


def _image_module(kind: str) -> tuple[pl.LightningModule, str]:
    """A module and the log key of its (single, unnamed) validation loader's accuracy."""
    torch.manual_seed(0)
    if kind == "classifier":
        return TransferClassifier(make_tiny_backbone(), num_classes=3), "val/acc"
    if kind == "domain_adaptation":
        model = DomainAdaptationModule(make_tiny_backbone(), num_classes=3, discriminator_hidden=8)
        return model, "val/0/acc"
    student = TransferClassifier(make_tiny_backbone(), num_classes=3)
    return DistillationModule(student, _teacher(), cache_teacher_outputs=False), "val/acc"


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("kind", ["classifier", "domain_adaptation", "distillation"])
def test_every_batch_form_in_training_validation_and_predict(kind: str, form: str) -> None:
    model, val_key = _image_module(kind)
    if kind == "domain_adaptation":
        train: Any = CombinedLoader(
            {"source": _loader(form), "target": _loader(form, seed=1, labelled=False, shift=1.0)},
            mode="min_size",
        )
    else:
        train = _loader(form)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    trainer = _trainer(limit_val_batches=1)
    trainer.fit(model, train, _loader(form, seed=2))
    assert trainer.global_step == 2
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)
    assert {"train/loss", val_key} <= set(trainer.callback_metrics)
    (probabilities, *_) = trainer.predict(model, _loader(form, seed=3, labelled=False))
    assert probabilities.shape == (4, 3)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(4))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("hf") / "bert")


def _tokenized(model: ClassificationModule, texts: list[str], labels: list[int] | None) -> dict:
    batch = dict(model.backbone.tokenizer()(texts, padding=True, return_tensors="pt"))
    if labels is not None:
        batch["labels"] = torch.tensor(labels)
    return batch


def test_tokenizer_dicts_in_every_module(tiny_bert: Path) -> None:
    spec = f"hf/{tiny_bert}"
    torch.manual_seed(0)
    classifier = TextClassifier(spec, num_classes=2)
    labelled = [_tokenized(classifier, TEXTS[i : i + 3], [0, 1, 0]) for i in (0, 3)]
    unlabelled = [_tokenized(classifier, TEXTS[i : i + 2], None) for i in (0, 2)]
    assert labelled[0]["input_ids"].shape[1] != labelled[1]["input_ids"].shape[1]
    teacher = TextClassifier(spec, num_classes=2).eval()
    modules = {
        "text": classifier,
        "distillation": DistillationModule(TextClassifier(spec, num_classes=2), teacher),
        "domain_adaptation": DomainAdaptationModule(spec, num_classes=2, method="coral"),
    }
    for name, model in modules.items():
        pairs = [{"source": s, "target": t} for s, t in zip(labelled, unlabelled, strict=True)]
        train = _batches(pairs if name == "domain_adaptation" else labelled)
        trainer = _trainer(limit_val_batches=1)
        trainer.fit(model, train, _batches(labelled[:1]))
        assert trainer.global_step == 2, name
        assert torch.isfinite(trainer.callback_metrics["train/loss"]), name
        assert ("val/0/acc" if name == "domain_adaptation" else "val/acc") in trainer.callback_metrics
        (probabilities, _) = trainer.predict(model, _batches(unlabelled))
        assert probabilities.shape == (2, 2), name


def test_domain_adaptation_joint_forward_pads_tokenizer_dicts(tiny_bert: Path) -> None:
    """Source and target tokenizer batches of different lengths share one padded forward pass."""
    torch.manual_seed(0)
    model = DomainAdaptationModule(f"hf/{tiny_bert}", num_classes=2, method="mmd", joint_forward=True).eval()
    source = _tokenized(model, ["lost bag", "the flight was very late again today"], [0, 1])
    target = _tokenized(model, ["love it", "awful crew"], None)
    assert source["input_ids"].shape[1] != target["input_ids"].shape[1]
    sizes: list[int] = []
    model.backbone.register_forward_hook(lambda m, inputs, out: sizes.append(len(out)))
    with torch.no_grad():
        joint = model.compute_losses({"source": source, "target": target}, coefficient=1.0)
        model.hparams.joint_forward = False
        separate = model.compute_losses({"source": source, "target": target}, coefficient=1.0)
    assert sizes == [4, 2, 2]  # one joint forward, then two separate ones
    for key in ("loss", "source_loss", "transfer_loss"):
        torch.testing.assert_close(joint[key], separate[key], rtol=1e-5, atol=1e-5)


def test_log_keys_metric_registry_and_loader_names() -> None:
    model = DomainAdaptationModule(make_tiny_backbone(), num_classes=3, method="coral")
    train = CombinedLoader({"source": _loader("tuple"), "target": _loader("tuple", labelled=False)})
    trainer = _trainer(limit_val_batches=1)
    trainer.fit(model, train, [_loader("tuple", seed=1), _loader("image_dict", seed=2)])
    assert {"val/0/acc", "val/1/acc", "val/0/loss", "val/1/loss"} <= set(trainer.callback_metrics)
    metric = model.stage_accuracy("val", 1)
    assert metric is not None and any(metric is m for m in model.modules())  # moves with the module
    assert metric.num_classes == 3 and model.stage_accuracy("test") is None
    named = TransferClassifier(make_tiny_backbone(), num_classes=3, eval_names=["source", "target"])
    assert [named.eval_prefix("test", i) for i in (0, 1)] == ["test/source", "test/target"]
    with pytest.raises(ValueError, match="names 2 dataloaders but got dataloader index 2"):
        named.eval_loader_name(2)

    class Named(pl.LightningDataModule):
        eval_names = ["in", "out"]

        def __init__(self) -> None:
            super().__init__()

        def train_dataloader(self) -> DataLoader:
            return _loader("xy_dict")

        def val_dataloader(self) -> list[DataLoader]:
            return [_loader("xy_dict", seed=1), _loader("xy_dict", seed=2)]

    distillation = DistillationModule(TransferClassifier(make_tiny_backbone(), num_classes=3), _teacher())
    trainer = _trainer(limit_val_batches=1)
    trainer.fit(distillation, datamodule=Named())
    assert {"val/in/acc", "val/out/loss", "train/acc", "train/agreement"} <= set(trainer.callback_metrics)


def test_label_and_class_count_checks_in_every_module() -> None:
    bad = DataLoader(TensorDataset(torch.randn(8, 3, 8, 8), torch.full((8,), 5)), batch_size=4)
    with pytest.raises(ValueError, match="num_classes=3 but got labels in \\[5, 5\\]"):
        _trainer().fit(TransferClassifier(make_tiny_backbone(), num_classes=3), bad)
    with pytest.raises(ValueError, match="num_classes=3 but got labels in \\[5, 5\\].*ignore_index=-1"):
        _trainer().fit(DistillationModule(TransferClassifier(make_tiny_backbone(), 3), _teacher()), bad)
    model = DomainAdaptationModule(make_tiny_backbone(), num_classes=3, method="coral")
    with pytest.raises(ValueError, match="num_classes=3 but got labels in \\[5, 5\\]"):
        _trainer().validate(model, bad, verbose=False)

    class Data(pl.LightningDataModule):
        num_classes = 4

        def __init__(self) -> None:
            super().__init__()

        def val_dataloader(self) -> DataLoader:
            return _loader("tuple")

    with pytest.raises(ValueError, match="DomainAdaptationModule\\(num_classes=3\\) but the datamodule Data"):
        _trainer().validate(model, datamodule=Data(), verbose=False)


# ----------------------------------------------------------------- lr / LR finder
def test_lr_finder_suggestion_becomes_the_lr_every_group_is_built_from(tmp_path: Path) -> None:
    from lightning.pytorch.tuner import Tuner

    from tests.conftest import make_loader

    torch.manual_seed(0)
    model = TransferClassifier(make_tiny_backbone(), num_classes=3, backbone_lr_scale=0.5, layer_decay=0.5)
    assert model.lr is None and model.hparams.lr is None  # None: the optimizer's own lr (AdamW: 1e-3)
    assert model.configure_optimizers().param_groups[0]["lr"] == pytest.approx(1e-3)
    trainer = _trainer(max_epochs=1, max_steps=-1, default_root_dir=tmp_path)
    loader = make_loader(n=96, batch_size=4)
    finder = Tuner(trainer).lr_find(model, train_dataloaders=loader, min_lr=1e-5, max_lr=1.0, num_training=24)
    suggestion = finder.suggestion()
    assert suggestion is not None and model.lr == suggestion and model.hparams.lr == suggestion
    trainer.fit(model, loader)
    lrs = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
    assert lrs["head"] == pytest.approx(suggestion)
    assert lrs["backbone.top"] == pytest.approx(suggestion * 0.5)  # the groups' lr_scale on top of it
    assert lrs["backbone.stem.no_decay"] == pytest.approx(suggestion * 0.5 * 0.25)


def test_lr_in_every_module_and_named_groups() -> None:
    modules: list[ClassificationModule] = [
        TransferClassifier(make_tiny_backbone(), num_classes=3, lr=0.02),
        DomainAdaptationModule(make_tiny_backbone(), num_classes=3, method="coral", lr=0.02),
        DistillationModule(nn.Sequential(nn.Flatten(), nn.Linear(192, 3)), _teacher(), lr=0.02),
    ]
    for model in modules:
        groups = model.configure_optimizers().param_groups
        assert groups[0]["lr"] == pytest.approx(0.02), type(model).__name__
        assert all(g["lr"] == pytest.approx(0.02 * g.get("lr_scale", 1.0)) for g in groups)

    class Unnamed(ClassificationModule):
        def __init__(self) -> None:
            super().__init__(num_classes=2, optimizer=torch.optim.SGD, lr=0.5)
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def param_groups(self) -> list[dict]:
            return [{"params": list(self.a.parameters())}, {"params": list(self.b.parameters()), "lr": 0.1}]

    groups = Unnamed().configure_optimizers().param_groups
    assert [(g["name"], g["lr"]) for g in groups] == [("pg1", 0.5), ("pg2", 0.1)]  # a group's own lr stays
