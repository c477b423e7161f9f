"""rank_models on tiny candidates: ordering, n/a source scores, failures listed, bad data, files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_transfer import DigitsDataModule
from lt_transfer.ranking import Candidate, RankingTable, rank_models
from tests.conftest import make_tiny_backbone


def labelled(n: int = 60, classes: int = 3, seed: int = 0, shuffle: bool = False) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.nn.functional.one_hot(y, 6).float() * 3 + torch.randn(n, 6, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=shuffle)


class Scrambler(nn.Module):
    """Features that ignore the input: a candidate that transfers nothing."""

    def forward(self, x):
        return torch.randn(len(x), 6, generator=torch.Generator().manual_seed(len(x)))


class SourceClassifier(nn.Module):
    """A classifier whose source classes are the target classes: LEEP/NCE near their maximum."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Identity()
        self.head = nn.Linear(6, 6)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(6) * 5)
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.backbone(x))


class Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("this candidate cannot run")


class NaNFeatures(nn.Module):
    def forward(self, x):
        return torch.full((len(x), 6), float("nan"))


def test_informative_features_rank_first_and_source_scores_only_where_available():
    candidates = [
        Candidate("scrambler", Scrambler()),
        Candidate("identity", nn.Identity()),
        SourceClassifier(),
    ]
    table = rank_models(
        candidates, dataloader=labelled(), scores=["logme", "knn", "leep", "nce"], progress=False
    )
    assert [r.name for r in table.results] == ["scrambler", "identity", "SourceClassifier"]  # given order
    assert table.ranked("logme")[-1].name == "scrambler"
    assert table.best("knn").name in ("identity", "SourceClassifier")
    by_name = {r.name: r for r in table.results}
    assert math.isnan(by_name["identity"].score("leep")) and math.isnan(by_name["scrambler"].score("nce"))
    assert by_name["SourceClassifier"].source_logits and -0.5 < by_name["SourceClassifier"].score("nce") <= 0
    assert table.best("leep").name == "SourceClassifier"
    assert table.notes() == [
        "leep, nce: source-classifier logits needed; only SourceClassifier gave them (n/a for the others)."
    ]
    assert all(r.num_samples == 60 and r.feature_dim == 6 and r.seconds > 0 for r in table.results)


def test_failures_are_listed_and_the_others_still_run():
    candidates = [
        Candidate("broken", Broken()),
        Candidate("typo", "torchvision/resnet1"),
        Candidate("nan", NaNFeatures()),
        Candidate("good", nn.Identity()),
    ]
    table = rank_models(candidates, dataloader=labelled(), scores=["logme", "h_score"], progress=False)
    by_name = {r.name: r for r in table.results}
    assert by_name["broken"].error == "RuntimeError: this candidate cannot run"
    assert (
        "torchvision has no model 'resnet1'" in by_name["typo"].error and "resnet18" in by_name["typo"].error
    )
    assert by_name["nan"].ok and set(by_name["nan"].score_errors) == {"logme", "h_score"}
    assert "NaN/Inf" in by_name["nan"].score_errors["logme"]
    assert math.isnan(by_name["nan"].score("logme"))
    assert by_name["good"].ok and math.isfinite(by_name["good"].score("logme"))
    assert [r.name for r in table.ranked()][0] == "good"
    notes = "\n".join(table.notes())
    assert "broken failed: RuntimeError" in notes and "nan: logme failed" in notes


def test_every_candidate_sees_the_same_samples_in_the_same_order():
    loader = labelled(shuffle=True)  # rank_models reads it in dataset order, with the same seed
    table = rank_models(
        [Candidate("a", nn.Identity()), Candidate("b", nn.Identity())],
        dataloader=loader,
        scores=["knn", "linear_probe", "logme"],
        max_samples=40,
        progress=False,
    )
    a, b = table.results
    assert a.scores == b.scores and a.num_samples == 40


def test_float16_storage_and_batch_size_keep_the_scores():
    kwargs = {"dataloader": labelled(), "scores": ["logme", "h_score", "transrate"], "progress": False}
    full = rank_models([Candidate("a", nn.Identity())], **kwargs).results[0]
    half = rank_models(
        [Candidate("a", nn.Identity())], feature_dtype="float16", batch_size=7, **kwargs
    ).results[0]
    for name in kwargs["scores"]:
        assert half.score(name) == pytest.approx(full.score(name), rel=1e-2, abs=1e-3), name


@pytest.mark.parametrize(
    ("y", "message"),
    [(None, "have no class labels"), (torch.full((12,), 4), r"a single class \(\[0\]\)")],
)
def test_target_data_that_cannot_be_scored(y, message):
    x = torch.randn(12, 6)
    data = TensorDataset(x) if y is None else TensorDataset(x, y)
    with pytest.raises(ValueError, match=message):
        rank_models(
            [nn.Identity()], dataloader=DataLoader(data, batch_size=4), scores=["knn"], progress=False
        )


def test_fewer_samples_than_the_datamodule_classes():
    dm = DigitsDataModule("sklearn_digits", image_size=8, labels_per_class=1, batch_size=4)
    with pytest.raises(ValueError, match=r"the 6 target samples hold 6 of the datamodule's 10 classes"):
        rank_models([nn.Flatten()], dm, ["logme"], max_samples=6, progress=False)


def test_classes_are_renumbered_and_a_one_sample_class_fails_only_knn():
    y = torch.tensor([3, 3, 3, 7, 7, 7, 9])  # class 9 has a single sample: no held-out k-NN split
    data = TensorDataset(torch.randn(7, 4), y)
    result = rank_models(
        [nn.Identity()], dataloader=DataLoader(data), scores=["nce", "knn", "logme"], progress=False
    ).results[0]
    assert math.isfinite(result.score("logme")) and math.isnan(result.score("knn"))
    assert "class 2 has 1 sample" in result.score_errors["knn"]


def test_argument_errors():
    loader = labelled()
    with pytest.raises(ValueError, match=r"appear more than once"):
        rank_models([nn.Identity(), nn.Identity()], dataloader=loader)
    with pytest.raises(ValueError, match="unknown transferability score 'logem'"):
        rank_models([nn.Identity()], dataloader=loader, scores=["logem"])
    with pytest.raises(ValueError, match="either datamodule= .* or dataloader="):
        rank_models([nn.Identity()])
    with pytest.raises(ValueError, match=r"max_samples=0\) must be an int >= 1"):
        rank_models([nn.Identity()], dataloader=loader, max_samples=0)
    with pytest.raises(ValueError, match="feature_dtype='bfloat16'"):
        rank_models([nn.Identity()], dataloader=loader, feature_dtype="bfloat16")
    with pytest.raises(ValueError, match=r"candidates=\[\]"):
        rank_models([], dataloader=loader)


def test_datamodule_train_split_and_output_files(tmp_path: Path):
    dm = DigitsDataModule("sklearn_digits", image_size=16, labels_per_class=3, batch_size=8)
    torch.manual_seed(0)
    table = rank_models(
        [Candidate("tiny", make_tiny_backbone()), "resnet=torchvision/resnet18"],
        dm,
        ["logme", "leep", "knn"],
        output_dir=tmp_path / "out",
        progress=True,
    )
    assert isinstance(table, RankingTable) and [r.num_samples for r in table.results] == [30, 30]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["ranking.csv", "ranking.md", "ranking.png"]
    assert (out / "ranking.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((out / "ranking.csv").open()))
    assert [row["name"] for row in rows] == [r.name for r in table.ranked()]
    assert {row["leep"] for row in rows} == {"n/a"} and rows[0]["rank"] == "1"
    assert "| rank | candidate | logme | leep | knn | seconds |" in (out / "ranking.md").read_text()


def test_a_callers_module_keeps_its_mode_and_runs_in_eval_mode():
    class Recorder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(6, 4)
            self.dropout = nn.Dropout(0.9)
            self.modes: set[bool] = set()

        def forward(self, x):
            self.modes.add(self.training)
            return self.dropout(self.linear(x))

    module = Recorder().train()
    before = module.linear.weight.detach().clone()
    rank_models([module], dataloader=labelled(), scores=["logme"], progress=False)
    assert module.modes == {False} and module.training and module.dropout.training
    assert torch.equal(module.linear.weight, before)
