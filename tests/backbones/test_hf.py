"""build_backbone("hf/..."): loading by path, pooling, layer groups, own heads, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lt_transfer import build_backbone
from lt_transfer.backbones import HFBackbone, load_tokenizer, resolve_model_path
from lt_transfer.resources import MINILM_L6_V2
from tests.hf_tiny import save_tiny_bert


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("hf") / "bert")


@pytest.fixture(scope="module")
def tiny_bert_cls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("hf") / "bert_cls", sequence_classification=True)


def _batch(folder: Path, texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(load_tokenizer(str(folder))(texts, padding=True, return_tensors="pt"))


def test_tiny_bert_loads_by_path_with_layer_groups(tiny_bert: Path) -> None:
    backbone = build_backbone(f"hf/{tiny_bert}")
    assert isinstance(backbone, HFBackbone)
    assert backbone.num_features == 16
    assert [g.name for g in backbone.layer_groups()] == ["embeddings", "layer.0", "layer.1"]
    # the unused pooler was removed, so every parameter gets a gradient (DDP-safe)
    assert backbone.model.pooler is None
    out = backbone(_batch(tiny_bert, ["the flight was late", "great crew"]))
    assert out.shape == (2, 16)
    out.sum().backward()
    assert all(p.grad is not None for p in backbone.parameters())


def test_pooling_choices_compute_what_they_say(tiny_bert: Path) -> None:
    texts = ["lost bag again", "love the new seat very good"]
    batch = _batch(tiny_bert, texts)
    mean = build_backbone(f"hf/{tiny_bert}", pooling="mean").eval()
    cls = build_backbone(f"hf/{tiny_bert}", pooling="cls").eval()
    pooler = build_backbone(f"hf/{tiny_bert}", pooling="pooler").eval()
    with torch.no_grad():
        hidden = mean.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        torch.testing.assert_close(mean(batch), (hidden * mask).sum(1) / mask.sum(1))
        torch.testing.assert_close(cls(batch), hidden[:, 0])
        torch.testing.assert_close(pooler(batch), torch.tanh(pooler.model.pooler.dense(hidden[:, 0])))
        # mean pooling ignores padding: the short text alone gives the same features
        alone = mean(_batch(tiny_bert, texts[:1]))
    torch.testing.assert_close(alone[0], mean(batch)[0].detach(), atol=1e-5, rtol=1e-5)
    assert [g.name for g in pooler.layer_groups()][-1] == "pooler"


def test_sequence_classification_model_keeps_its_head(tiny_bert_cls: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    backbone = build_backbone(f"hf/{tiny_bert_cls}").eval()  # auto-detected from config.architectures
    assert backbone.pooling is None
    assert [g.name for g in backbone.layer_groups()] == ["embeddings", "layer.0", "layer.1", "pooler"]
    reference = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert_cls)).eval()
    batch = _batch(tiny_bert_cls, ["thanks for the great service", "awful"])
    with torch.no_grad():
        logits = backbone.pretrained_head(backbone(batch))
        torch.testing.assert_close(logits, reference(**batch).logits)
    # the removed head is not a parameter of the backbone
    assert not any("classifier" in name for name, _ in backbone.named_parameters())
    with pytest.raises(ValueError, match="pools with its own head"):
        build_backbone(f"hf/{tiny_bert_cls}", pooling="cls")
    bare = build_backbone(f"hf/{tiny_bert_cls}", model_class="base")
    assert bare.pretrained_head is None and bare.pooling == "mean"


def test_shipped_minilm_groups_cover_every_parameter_once() -> None:
    backbone = build_backbone("hf/" + MINILM_L6_V2)
    groups = backbone.layer_groups()
    assert [g.name for g in groups] == ["embeddings"] + [f"layer.{i}" for i in range(6)]
    names = [name for g in groups for name, _ in g.named_parameters]
    assert len(names) == len(set(names))
    assert set(names) == {f"model.{n}" for n, _ in backbone.model.named_parameters()}
    assert sum(g.num_parameters() for g in groups) == sum(p.numel() for p in backbone.parameters())
    assert backbone.num_features == 384
    assert 22_000_000 < sum(p.numel() for p in backbone.parameters()) < 23_000_000


def test_bad_input(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_backbone(f"hf/{tmp_path / 'nothing_here'}")
    with pytest.raises(ValueError, match="drop weights"):
        build_backbone(f"hf/{tiny_bert}", weights="DEFAULT")
    with pytest.raises(ValueError, match="pooling='max'"):
        build_backbone(f"hf/{tiny_bert}", pooling="max")
    no_tokenizer = save_tiny_bert(tmp_path / "bare", with_tokenizer=False)
    build_backbone(f"hf/{no_tokenizer}")  # the model itself loads
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_tokenizer(str(no_tokenizer))
    with pytest.raises(FileNotFoundError, match="not installed"):
        resolve_model_path("pkg://no_such_package_xyz/model")


def test_input_ids_tensor_equals_the_unpadded_tokenizer_dict(tiny_bert: Path) -> None:
    backbone = build_backbone(f"hf/{tiny_bert}").eval()
    batch = _batch(tiny_bert, ["lost bag"])
    with torch.no_grad():
        torch.testing.assert_close(backbone(batch["input_ids"]), backbone(batch))
    with pytest.raises(ValueError, match="input_ids \\(N, L\\)"):
        backbone(torch.zeros(2, 2, 4, dtype=torch.long))


def _save_other_architecture(kind: str, folder: Path) -> None:
    import transformers as tf

    small = dict(vocab_size=50, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    if kind == "distilbert":
        config = tf.DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32)
        tf.DistilBertModel(config).save_pretrained(folder)
    elif kind == "roberta_cls":
        config = tf.RobertaConfig(hidden_size=16, max_position_embeddings=40, num_labels=3, **small)
        tf.RobertaForSequenceClassification(config).save_pretrained(folder)
    else:
        config = tf.ElectraConfig(embedding_size=8, hidden_size=16, max_position_embeddings=32, **small)
        tf.ElectraModel(config).save_pretrained(folder)


@pytest.mark.parametrize(
    ("kind", "groups"),
    [
        ("distilbert", ["embeddings", "layer.0", "layer.1"]),
        ("roberta_cls", ["embeddings", "layer.0", "layer.1", "classifier"]),  # classifier.dense + tanh
        ("electra", ["embeddings", "layer.0", "layer.1"]),  # embeddings_project joins the embeddings
    ],
)
def test_other_architectures_split_into_groups(kind: str, groups: list[str], tmp_path: Path) -> None:
    _save_other_architecture(kind, tmp_path / kind)
    backbone = build_backbone(f"hf/{tmp_path / kind}")
    assert [g.name for g in backbone.layer_groups()] == groups
    ids = torch.randint(5, 50, (2, 7))
    assert backbone({"input_ids": ids, "attention_mask": torch.ones_like(ids)}).shape == (2, 16)
    assert (backbone.pretrained_head is not None) == (kind == "roberta_cls")
