"""L2-SP against a hand computation; names and identity decide, never values; frozen is free."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lt_transfer.losses import L2SPLoss, l2sp_loss, parameter_snapshot


def _model() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.5]]))
        model[0].bias.copy_(torch.tensor([0.3, 0.3]))
        model[1].weight.copy_(torch.tensor([[2.0, -1.0]]))
        model[1].bias.copy_(torch.tensor([1.0]))
    return model


SNAPSHOT = {"0.weight": torch.tensor([[0.5, -1.0], [1.0, 0.5]]), "0.bias": torch.tensor([0.3, 0.3])}
HEAD = ("1.weight", "1.bias")


def test_l2sp_matches_hand_computation_and_gradient() -> None:
    model = _model()
    # hand: ||w - w0||^2 = 0.5^2 + 0 + 1^2 + 0 = 1.25 (bias unchanged: 0); head ||h||^2 = 4 + 1 + 1 = 6
    #       0.1 / 2 * 1.25 + 0.01 / 2 * 6 = 0.0625 + 0.03 = 0.0925
    loss = l2sp_loss(model.named_parameters(), SNAPSHOT, HEAD, alpha=0.1, beta=0.01)
    assert loss.item() == pytest.approx(0.0925)
    loss.backward()
    # d/dw alpha/2 ||w - w0||^2 = alpha (w - w0); d/dh beta/2 ||h||^2 = beta h
    torch.testing.assert_close(model[0].weight.grad, 0.1 * torch.tensor([[0.5, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(model[1].weight.grad, 0.01 * torch.tensor([[2.0, -1.0]]))
    torch.testing.assert_close(model[0].bias.grad, torch.zeros(2))


def test_frozen_parameters_carry_no_penalty() -> None:
    model = _model()
    model[0].weight.requires_grad_(False)  # a frozen layer group
    loss = l2sp_loss(model.named_parameters(), SNAPSHOT, HEAD, alpha=0.1, beta=0.01)
    assert loss.item() == pytest.approx(0.03)  # the head only
    model.requires_grad_(False)
    assert l2sp_loss(model.named_parameters(), SNAPSHOT, HEAD).item() == 0.0


def test_names_decide_not_values_and_a_shared_parameter_counts_once() -> None:
    model = _model()
    with torch.no_grad():  # the head now holds exactly the values of a pretrained snapshot entry
        model[1].weight.copy_(torch.tensor([[0.3, 0.3]]))
        model[0].weight.copy_(SNAPSHOT["0.weight"])
    # the head is still "new" (plain L2: 0.3² + 0.3² + 1²), the backbone sits at w0 (0)
    loss = l2sp_loss(model.named_parameters(), SNAPSHOT, HEAD, alpha=1.0, beta=1.0)
    assert loss.item() == pytest.approx(0.5 * (0.09 + 0.09 + 1.0))
    pairs = list(model.named_parameters())
    twice = l2sp_loss([*pairs, ("1.weight", model[1].weight)], SNAPSHOT, HEAD, alpha=1.0, beta=1.0)
    assert twice.item() == pytest.approx(loss.item())


def test_l2sp_bad_inputs_name_the_parameter() -> None:
    model = _model()
    with pytest.raises(ValueError, match="'1.bias' is neither in the snapshot nor in new_parameters"):
        l2sp_loss(model.named_parameters(), SNAPSHOT, ["1.weight"])
    with pytest.raises(ValueError, match="were not passed"):
        l2sp_loss(model[1].named_parameters(prefix="1"), SNAPSHOT, HEAD)
    with pytest.raises(ValueError, match="also have a pretrained snapshot"):
        l2sp_loss(model.named_parameters(), SNAPSHOT, [*HEAD, "0.bias"])
    with pytest.raises(ValueError, match="shape"):
        l2sp_loss(model.named_parameters(), {**SNAPSHOT, "0.bias": torch.zeros(3)}, HEAD)
    with pytest.raises(ValueError, match="alpha=-1"):
        l2sp_loss(model.named_parameters(), SNAPSHOT, HEAD, alpha=-1)
    with pytest.raises(ValueError, match="got no parameter"):
        L2SPLoss([], HEAD)


def test_module_snapshot_is_a_copy_and_survives_a_restart_bit_exactly() -> None:
    model = _model()
    loss_fn = L2SPLoss(model[0].named_parameters(prefix="0"), HEAD, alpha=0.1, beta=0.01)
    start = {name: value.clone() for name, value in loss_fn.snapshot().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):  # train: the snapshot must not follow the weights
        optimizer.zero_grad()
        (model(torch.randn(4, 2)).pow(2).mean() + loss_fn(model.named_parameters())).backward()
        optimizer.step()
    assert all(torch.equal(loss_fn.snapshot()[n], start[n]) for n in start)
    assert not torch.equal(model[0].weight, start["0.weight"])
    state = loss_fn.state_dict()
    assert sorted(state) == ["w0:0:bias", "w0:0:weight"]
    rebuilt = L2SPLoss(model[0].named_parameters(prefix="0"), HEAD, alpha=0.1, beta=0.01)  # current weights
    rebuilt.load_state_dict(state)
    assert all(torch.equal(rebuilt.snapshot()[n], start[n]) for n in start)
    assert rebuilt(model.named_parameters()).item() == loss_fn(model.named_parameters()).item()
    assert parameter_snapshot(model.named_parameters())["1.bias"].requires_grad is False


def test_l2sp_is_float32_for_half_parameters() -> None:
    model = _model().bfloat16()
    snapshot = parameter_snapshot(model[0].named_parameters(prefix="0"))
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = l2sp_loss(model.named_parameters(), snapshot, HEAD, alpha=1.0, beta=0.0)
    assert value.dtype == torch.float32 and value.item() == pytest.approx(0.5 * 4)
