"""L2SP, DELTA and BSS give exactly the gradients of ``loss + penalty``: fp32, AMP, accumulation, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision

from lt_transfer.callbacks import BSS, DELTA, L2SP
from tests.callbacks.regularized import (
    DELTA_LAYERS,
    GatherParams,
    GradRecorder,
    LossForm,
    Plain,
    loader,
    trainer,
)

L2SP_ARGS = (0.5, 0.1)
DELTA_ALPHA = 0.5
BSS_ARGS = (0.1, 1)


def _callbacks(kinds: list[str]) -> list:
    made = {
        "l2sp": lambda: L2SP(*L2SP_ARGS, backbone="encoder", head="classifier"),
        "delta": lambda: DELTA(DELTA_ALPHA, layers=DELTA_LAYERS, backbone="encoder", attention=False),
        "bss": lambda: BSS(*BSS_ARGS, backbone="encoder"),
    }
    return [made[kind]() for kind in kinds]


def _loss_form(kinds: list[str]) -> LossForm:
    return LossForm(
        l2sp=L2SP_ARGS if "l2sp" in kinds else None,
        delta=DELTA_ALPHA if "delta" in kinds else None,
        bss=BSS_ARGS if "bss" in kinds else None,
    )


def _compare(tmp_path: Path, kinds: list[str], rtol: float, atol: float, **kwargs: object) -> None:
    by_callback, by_loss = GradRecorder(), GradRecorder()
    model = Plain()
    trainer(tmp_path, [*_callbacks(kinds), by_callback], **kwargs).fit(model, loader())
    reference = _loss_form(kinds)
    trainer(tmp_path, [by_loss], **kwargs).fit(reference, loader())
    assert len(by_callback.steps) == len(by_loss.steps) == 4
    for step, (ours, theirs) in enumerate(zip(by_callback.steps, by_loss.steps, strict=True)):
        for name, grad in theirs.items():
            assert grad is not None and ours[name] is not None, (step, name)
            torch.testing.assert_close(ours[name], grad, rtol=rtol, atol=atol, msg=f"step {step}, {name}")
    for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("kinds", [["l2sp"], ["delta"], ["bss"], ["l2sp", "delta", "bss"]])
def test_gradients_equal_the_loss_form(tmp_path: Path, kinds: list[str]) -> None:
    _compare(tmp_path, kinds, rtol=1e-5, atol=1e-6)


def test_penalties_change_training(tmp_path: Path) -> None:
    plain, regularised = Plain(), Plain()
    trainer(tmp_path, []).fit(plain, loader())
    trainer(tmp_path, _callbacks(["l2sp", "delta", "bss"])).fit(regularised, loader())
    assert not torch.equal(plain.encoder[0].weight, regularised.encoder[0].weight)


def test_gradscaler_16_mixed_with_gradient_accumulation(tmp_path: Path) -> None:
    # the activation penalties must be scaled like the loss (GradScaler scale / accumulation);
    # L2SP adds after unscaling, once per optimizer step
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    plugin = MixedPrecision("16-mixed", "cpu", scaler)
    _compare(
        tmp_path,
        ["l2sp", "delta", "bss"],
        rtol=2e-3,
        atol=2e-4,
        plugins=[plugin],
        accumulate_grad_batches=2,
        max_steps=4,
        deterministic=False,
    )


def test_bf16_mixed(tmp_path: Path) -> None:
    _compare(tmp_path, ["l2sp", "delta", "bss"], rtol=2e-2, atol=2e-3, precision="bf16-mixed")


def test_ddp_ranks_stay_identical_and_match_the_loss_form(tmp_path: Path) -> None:
    """Ranks exact (difference 0.0); against the loss form, also under ddp_spawn, rtol=1e-5 and
    atol=1e-6 (the penalty's gradient added in another order than autograd's sum)."""
    kinds = ["l2sp", "delta", "bss"]
    out = tmp_path / "diffs.json"
    options = dict(strategy="ddp_spawn", devices=2, max_steps=4, deterministic=False)
    model = Plain()
    trainer(tmp_path, [*_callbacks(kinds), GatherParams(str(out))], **options).fit(model, loader(64))
    assert json.loads(out.read_text()) == [0.0]  # one epoch: 32 samples per rank, batch 8
    reference = _loss_form(kinds)
    trainer(tmp_path, [], **options).fit(reference, loader(64))
    for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------------- resume
def _resumable_run(tmp_path: Path, folder: str, ckpt: str | None, seed: int) -> tuple[Plain, list]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lt_transfer.callbacks import WeightInterpolation
    from tests.callbacks.regularized import DataModule

    callbacks = [
        L2SP(*L2SP_ARGS, backbone="encoder", head="classifier"),
        DELTA(DELTA_ALPHA, layers=DELTA_LAYERS, backbone="encoder", attention_batches=2),
        BSS(*BSS_ARGS, backbone="encoder"),
        WeightInterpolation([0.0, 0.5, 1.0], backbone="encoder", apply="finetuned", test=False),
    ]
    saver = ModelCheckpoint(dirpath=tmp_path / folder, filename="{epoch}", save_top_k=-1)
    model = Plain(seed=seed)
    options = dict(max_epochs=3, max_steps=-1, enable_checkpointing=True, limit_val_batches=0)
    trainer(tmp_path, [*callbacks, saver], **options).fit(model, datamodule=DataModule(), ckpt_path=ckpt)
    return model, callbacks


def test_resume_uses_the_snapshots_bit_exactly_and_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    reference, ref_callbacks = _resumable_run(tmp_path, "full", None, seed=0)
    # another initialisation: a snapshot retaken at the resumed fit start would hold other values
    resumed, callbacks = _resumable_run(tmp_path, "resumed", str(tmp_path / "full" / "epoch=0.ckpt"), seed=1)
    l2sp, delta, _, wise = callbacks
    ref_l2sp, ref_delta, _, ref_wise = ref_callbacks
    for ours, theirs in [
        (l2sp.snapshot, ref_l2sp.snapshot),
        (delta.snapshot, ref_delta.snapshot),
        (delta.channel_weights, ref_delta.channel_weights),
        (wise.snapshot, ref_wise.snapshot),
    ]:
        assert ours is not None and theirs is not None and sorted(ours) == sorted(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    start = Plain(seed=0)
    assert all(torch.equal(l2sp.snapshot[f"encoder.{n}"], p) for n, p in start.encoder.named_parameters())
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_resuming_from_a_checkpoint_without_the_callbacks_state_is_an_error(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    saver = ModelCheckpoint(dirpath=tmp_path / "plain", filename="{epoch}", save_top_k=-1)
    trainer(tmp_path, [saver], max_steps=4, enable_checkpointing=True).fit(Plain(), loader())
    ckpt = str(tmp_path / "plain" / "epoch=0.ckpt")
    for callback in (L2SP(backbone="encoder", head="classifier"), DELTA(backbone="encoder", layers=["4"])):
        with pytest.raises(ValueError, match="holds no"):
            trainer(tmp_path, [callback], max_steps=8).fit(Plain(), loader(), ckpt_path=ckpt)


# ------------------------------------------------------------------- progressive unfreezing
def test_frozen_groups_carry_no_penalty_under_progressive_unfreezing(tmp_path: Path) -> None:
    from lt_transfer.callbacks import ProgressiveUnfreezing

    kinds = ["l2sp", "delta", "bss"]
    ours, theirs = GradRecorder(), GradRecorder()
    model, reference = Plain(), _loss_form(kinds)
    start = [p.detach().clone() for p in model.encoder.parameters()]
    options = dict(max_steps=8)  # 4 steps with the encoder frozen, 4 after it unfreezes
    unfreeze = dict(unfreeze_at_epoch=1, backbone="encoder", backbone_lr_scale=0.5)
    trainer(tmp_path, [ProgressiveUnfreezing(**unfreeze), *_callbacks(kinds), ours], **options).fit(
        model, loader()
    )
    trainer(tmp_path, [ProgressiveUnfreezing(**unfreeze), theirs], **options).fit(reference, loader())
    for step in range(4):  # frozen: no gradient at all on the encoder, the penalties included
        assert all(ours.steps[step][f"encoder.{n}"] is None for n, _ in model.encoder.named_parameters())
    for step, (a, b) in enumerate(zip(ours.steps, theirs.steps, strict=True)):
        for name, grad in b.items():
            if grad is None:
                assert a[name] is None, (step, name)
            else:
                torch.testing.assert_close(a[name], grad, rtol=1e-5, atol=1e-6, msg=f"step {step}, {name}")
    moved = [not torch.equal(a, b) for a, b in zip(start, model.encoder.parameters(), strict=True)]
    assert moved == [True, False, True, True, True, True]  # a bias right before BatchNorm gets no gradient


# ----------------------------------------------------------------------------------- text
def test_text_classifier_takes_l2sp_and_bss_and_delta_says_what_it_needs(tmp_path: Path) -> None:
    from lt_transfer import TextClassifier
    from lt_transfer.data.text import TextClassificationDataModule
    from tests.hf_tiny import save_tiny_bert

    folder = save_tiny_bert(tmp_path / "bert")
    texts = ["bad service", "the flight was very late", "good crew thanks", "lost bag", "love it", "awful"]

    def fit(callbacks: list) -> TextClassifier:
        data = TextClassificationDataModule(str(folder), train_texts=texts, train_labels=[0, 0, 1, 0, 1, 0])
        model = TextClassifier(f"hf/{folder}", num_classes=2)
        trainer(tmp_path, callbacks, max_steps=2, limit_val_batches=0).fit(model, data)
        return model

    l2sp = L2SP()
    fit([l2sp, BSS(k=1)])
    assert any(name.startswith("backbone.") for name in l2sp.snapshot)
    with pytest.raises(
        ValueError, match=r"is a transformer; DELTA needs the feature maps of a convolutional layer"
    ):
        fit([DELTA(attention=False)])


# ------------------------------------------------------------------------------------ CLI
def test_configured_from_yaml(tmp_path: Path) -> None:
    from lightning.pytorch.cli import LightningCLI

    from lt_transfer.callbacks import WeightInterpolation

    config = tmp_path / "config.yaml"
    config.write_text(
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: lt_transfer.L2SP\n"
        "      init_args: {alpha: 0.2, beta: 0.0, backbone: encoder, head: null}\n"
        "    - class_path: lt_transfer.DELTA\n"
        "      init_args: {alpha: 0.05, layers: ['2', '4'], backbone: encoder, attention: false}\n"
        "    - class_path: lt_transfer.BSS\n"
        "      init_args: {eta: 0.01, k: 2, backbone: encoder}\n"
        "    - class_path: lt_transfer.WeightInterpolation\n"
        "      init_args: {alphas: [0.0, 0.5, 1.0], backbone: encoder, apply: finetuned}\n"
    )
    cli = LightningCLI(
        Plain,
        args=["--config", str(config), "--trainer.logger=false", "--trainer.enable_checkpointing=false"],
        run=False,
        save_config_callback=None,
    )
    found = {type(c).__name__: c for c in cli.trainer.callbacks}
    assert (found["L2SP"].alpha, found["L2SP"].head) == (0.2, None)
    assert (found["DELTA"].layers, found["DELTA"].attention) == (["2", "4"], False)
    assert (found["BSS"].k, found["BSS"].eta) == (2, 0.01)
    assert isinstance(found["WeightInterpolation"], WeightInterpolation)
    assert found["WeightInterpolation"].alphas == [0.0, 0.5, 1.0]
