import math

import pytest
import torch

from lt_transfer.ranking import SCORES, get_score, score_names


def test_registry_names_and_source_logit_needs():
    assert score_names() == ["logme", "leep", "nce", "h_score", "transrate", "knn", "linear_probe"]
    assert score_names(needs_source_logits=True) == ["leep", "nce"]
    assert "leep" not in score_names(needs_source_logits=False)
    assert all(callable(spec) and spec.paper for spec in SCORES.values())


def test_every_score_runs_on_its_inputs():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(24) % 3
    features = torch.randn(24, 5, generator=g) + torch.nn.functional.one_hot(labels, 5).float()
    source_logits = torch.randn(24, 7, generator=g)
    for name, spec in SCORES.items():
        value = spec(source_logits if spec.needs_source_logits else features, labels)
        assert isinstance(value, float) and math.isfinite(value), name


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"unknown transferability score 'logm'\. Did you mean \['logme'\]"):
        get_score("logm")
    assert get_score("transrate").name == "transrate"


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([2, 2, 2, 2]), r"a single class \(\[2\]\)"),
        (torch.tensor([0, 1, 3, 3]), r"classes \[2\] have no samples"),
        (torch.tensor([0.0, 1.0, 1.0, 0.0]), "integer class indices"),
        (torch.tensor([0, 1, 1]), "3 labels for 4 samples"),
        (torch.tensor([0, -1, 1, 1]), "class indices >= 0"),
        (torch.tensor([0, 1, 9, 9]), r"fewer samples \(4\) than classes \(10\)"),
    ],
)
def test_bad_labels_fail_every_score(labels, message):
    features = torch.randn(4, 3)
    for spec in SCORES.values():
        inputs = features.softmax(1) if spec.needs_source_logits else features
        with pytest.raises(ValueError, match=message):
            spec(inputs, labels)


def test_nan_features_fail_every_feature_score():
    features = torch.randn(6, 3)
    features[2, 1] = float("nan")
    for name in score_names(needs_source_logits=False):
        with pytest.raises(ValueError, match=f"{name if name != 'knn' else 'knn_accuracy'}.*1 NaN/Inf"):
            SCORES[name](features, torch.tensor([0, 1, 0, 1, 0, 1]))
