"""from_torch / to_torch, and torch.optim training a handgrad net exactly like its torch twin."""

from __future__ import annotations

import pytest
import torch

import handgrad.nn as hn
from tests.nn.helpers import assert_matches


def classroom_net() -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(1, 100), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(100, 1)
    )


def test_classroom_net_round_trips() -> None:
    reference = classroom_net()
    hand = hn.from_torch(reference)
    assert [type(m) for m in hand] == [hn.Linear, hn.ReLU, hn.Dropout, hn.Linear]
    assert hand[2].p == 0.1
    back = hn.to_torch(hand)
    assert [type(m) for m in back] == [type(m) for m in reference]
    for original, copied, returned in zip(
        reference.parameters(), hand.parameters(), back.parameters(), strict=True
    ):
        assert torch.equal(original, copied)
        assert torch.equal(original, returned)
        assert not copied.requires_grad
        assert returned.requires_grad
        assert copied.data_ptr() != original.data_ptr(), "weights are copied, not shared"
    x = torch.randn(9, 1)
    torch.manual_seed(4)
    expected = reference(x)
    torch.manual_seed(4)
    assert torch.equal(hand(x), expected)
    torch.manual_seed(4)
    assert torch.equal(back(x), expected)


def test_every_supported_layer_keeps_its_arguments() -> None:
    nn = torch.nn
    reference = nn.Sequential(
        nn.Flatten(0, 1), nn.Linear(4, 3, bias=False), nn.LeakyReLU(0.3), nn.ELU(0.4),
        nn.GELU("tanh"), nn.Softplus(2.0, 7.0), nn.Sigmoid(), nn.Tanh(), nn.Identity(),
        nn.Dropout(0.25), nn.Sequential(nn.ReLU()),
    ).double()  # fmt: skip
    hand = hn.from_torch(reference)
    assert hand[0].start_dim == 0 and hand[0].end_dim == 1  # noqa: PT018
    assert hand[1].bias is None
    assert hand[1].weight.dtype == torch.float64
    assert hand[2].negative_slope == 0.3
    assert hand[3].alpha == 0.4
    assert hand[4].approximate == "tanh"
    assert (hand[5].beta, hand[5].threshold) == (2.0, 7.0)
    assert hand[9].p == 0.25
    assert isinstance(hand[10], hn.Sequential)
    assert isinstance(hand[10][0], hn.ReLU)
    assert repr(hn.to_torch(hand)) == repr(reference)


def test_losses_convert_with_their_settings() -> None:
    weight = torch.tensor([1.0, 2.0, 0.5])
    ce = hn.from_torch(torch.nn.CrossEntropyLoss(weight, ignore_index=1, reduction="sum",
                                                 label_smoothing=0.2))  # fmt: skip
    assert isinstance(ce, hn.CrossEntropyLoss)
    assert torch.equal(ce.weight, weight)
    assert (ce.ignore_index, ce.reduction, ce.label_smoothing) == (1, "sum", 0.2)
    bce = hn.from_torch(torch.nn.BCEWithLogitsLoss(pos_weight=weight, reduction="none"))
    assert torch.equal(bce.pos_weight, weight)
    assert bce.weight is None
    huber = hn.to_torch(hn.HuberLoss(reduction="sum", delta=0.3))
    assert isinstance(huber, torch.nn.HuberLoss)
    assert (huber.reduction, huber.delta) == ("sum", 0.3)
    for hand_type in (hn.MSELoss, hn.L1Loss):
        assert hn.from_torch(hn.to_torch(hand_type(reduction="none"))).reduction == "none"


def test_conversion_keeps_train_or_eval_mode_and_draws_no_random_numbers() -> None:
    reference = classroom_net().eval()
    before = torch.get_rng_state()
    hand = hn.from_torch(reference)
    back = hn.to_torch(hand)
    assert torch.equal(torch.get_rng_state(), before)
    assert not hand.training
    assert not hand[2].training
    assert not back.training


@pytest.mark.parametrize(
    "module", [torch.nn.Conv1d(1, 1, 3), torch.nn.BatchNorm1d(3), torch.nn.Softmax(dim=1)]
)
def test_unsupported_layers_are_named(module) -> None:
    with pytest.raises(TypeError, match=rf"from_torch: .*{type(module).__name__} is not supported"):
        hn.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 3), module))


def test_subclasses_are_refused_not_mistranslated() -> None:
    class Scaled(torch.nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    with pytest.raises(TypeError, match=r"Scaled is not supported; supported layers: .*Linear"):
        hn.from_torch(Scaled(2, 2))


def test_to_torch_refuses_unknown_modules() -> None:
    class Mine(hn.Module):
        pass

    with pytest.raises(TypeError, match=r"to_torch: .*Mine is not supported"):
        hn.to_torch(Mine())


@pytest.mark.parametrize(
    ("optimizer_type", "kwargs"),
    [
        (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
        (torch.optim.Adam, {"lr": 0.01}),
        (torch.optim.RMSprop, {"lr": 0.01}),
    ],
)
def test_torch_optim_trains_a_handgrad_net_exactly_like_its_twin(
    optimizer_type, kwargs, dtype
) -> None:
    torch.manual_seed(0)
    reference = classroom_net().to(dtype)
    hand = hn.from_torch(reference)
    reference_opt = optimizer_type(reference.parameters(), **kwargs)
    hand_opt = optimizer_type(hand.parameters(), **kwargs)
    loss_fn = hn.MSELoss()
    x = torch.linspace(-2, 2, 32, dtype=dtype).unsqueeze(1)
    y = x**3
    losses = []
    for step in range(5):
        torch.manual_seed(100 + step)  # the same dropout mask in both
        reference_opt.zero_grad()
        expected = torch.nn.functional.mse_loss(reference(x), y)
        expected.backward()
        reference_opt.step()

        torch.manual_seed(100 + step)
        hand_opt.zero_grad()
        loss = loss_fn(hand(x), y)
        hand.backward(loss_fn.backward(), input_grad=False)
        hand_opt.step()

        assert_matches(loss, expected.detach(), f"loss at step {step}")
        losses.append(float(loss))
    for got, expected in zip(hand.parameters(), reference.parameters(), strict=True):
        assert torch.equal(got, expected.detach()), "parameters after 5 steps"
    assert losses[-1] < losses[0], "training did not lower the loss"


def test_a_shared_activation_becomes_one_twin_per_position() -> None:
    act = torch.nn.Tanh()
    reference = torch.nn.Sequential(torch.nn.Linear(2, 3), act, torch.nn.Linear(3, 2), act)
    reference = reference.double()
    hand = hn.from_torch(reference)
    assert len(hand) == 4
    assert isinstance(hand[3], hn.Tanh)
    assert hand[1] is not hand[3]
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    reference(x).sum().backward()
    out = hand(x.detach())
    assert_matches(out, reference(x).detach())
    assert_matches(hand.backward(torch.ones_like(out)), x.grad)


def test_tied_weights_are_refused() -> None:
    shared = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match=r"Linear appears more than once .*weight tying"):
        hn.from_torch(torch.nn.Sequential(shared, torch.nn.ReLU(), shared))
