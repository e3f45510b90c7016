"""from_torch / to_torch, and torch.optim training a handgrad net exactly like its torch twin."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator

import pytest
import torch

import handgrad.nn as hn
from handgrad.nn import convert
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


class _UserNet(torch.nn.Module):
    """A user's torch module with its own forward: nothing to convert it to."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize("module", [torch.nn.LSTM(2, 2), torch.nn.Conv3d(1, 1, 1), _UserNet()])
def test_unsupported_layers_are_named_with_their_place_in_the_tree(module) -> None:
    name = type(module).__name__
    qualified = "tests.nn.test_convert._UserNet" if name == "_UserNet" else f"torch.nn.{name}"
    inner = torch.nn.Sequential(torch.nn.Linear(3, 3), module)
    with pytest.raises(
        TypeError, match=rf"^from_torch: model\.1\.1: {re.escape(qualified)} is not supported"
    ):
        hn.from_torch(torch.nn.Sequential(torch.nn.ReLU(), inner))
    with pytest.raises(TypeError, match=rf"^from_torch: model: {re.escape(qualified)} is not"):
        hn.from_torch(module)


def test_subclasses_are_refused_not_mistranslated() -> None:
    class Scaled(torch.nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    with pytest.raises(TypeError, match=r"Scaled is not supported \(supported: .*nn\.Linear"):
        hn.from_torch(Scaled(2, 2))


def test_to_torch_refuses_unknown_modules() -> None:
    class Mine(hn.Module):
        pass

    with pytest.raises(TypeError, match=r"^to_torch: model\.block: .*Mine is not supported"):
        hn.to_torch(hn.Residual(Mine()))
    with pytest.raises(TypeError, match=r"to_torch: model: torch\.nn\.Linear is not supported"):
        hn.to_torch(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"expected a torch\.nn\.Module, got int"):
        hn.from_torch(3)


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


def test_tied_weights_stay_tied_and_get_both_gradients() -> None:
    torch.manual_seed(0)
    shared = torch.nn.Linear(3, 3, dtype=torch.float64)
    reference = torch.nn.Sequential(shared, torch.nn.Tanh(), shared)
    hand = hn.from_torch(reference)
    assert hand[0] is not hand[2]  # a module keeps one ctx: one instance per position
    assert hand[0].weight is hand[2].weight
    assert hand[0].bias is hand[2].bias
    assert len(list(hand.parameters())) == 2
    assert hand[0].weight.data_ptr() != shared.weight.data_ptr()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(4, 3, dtype=torch.float64)
    reference(x).backward(upstream)
    out = hand(x.detach())
    assert_matches(out, reference(x).detach())
    assert_matches(hand.backward(upstream), x.grad)
    assert_matches(hand[0].weight.grad, shared.weight.grad, "weight used twice")
    assert_matches(hand[0].bias.grad, shared.bias.grad, "bias used twice")
    back = hn.to_torch(hand)
    assert back[0].weight is back[2].weight
    assert torch.equal(back[0].weight, shared.weight)


def _tree() -> torch.nn.Sequential:
    """A small tree: nested Sequential with names, residual blocks with and without a
    projection shortcut, in float64."""
    nn = torch.nn
    block = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    projected = hn.TorchResidual(
        nn.Sequential(nn.Linear(4, 3), nn.GELU()), shortcut=nn.Linear(4, 3, bias=False)
    )
    return nn.Sequential(
        OrderedDict(
            [
                ("stem", nn.Sequential(nn.Linear(2, 4), nn.ReLU())),
                ("res", hn.TorchResidual(block)),
                ("down", projected),
                ("head", nn.Sequential(nn.Dropout(0.0), nn.Sequential(nn.Linear(3, 1)))),
            ]
        )
    ).double()


def test_a_tree_converts_both_ways_with_the_same_names_values_and_gradients() -> None:
    torch.manual_seed(0)
    reference = _tree()
    hand = hn.from_torch(reference)
    assert isinstance(hand.res, hn.Residual)
    assert isinstance(hand.down.shortcut, hn.Linear)
    assert hand.res.shortcut is None
    assert isinstance(hand.head[1], hn.Sequential)
    assert list(hand.state_dict()) == list(reference.state_dict())
    for (name, got), expected in zip(
        hand.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(got, expected), name
        assert got.data_ptr() != expected.data_ptr(), f"{name} is shared, not copied"
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(5, 1, dtype=torch.float64)
    expected = reference(x)
    expected.backward(upstream)
    got = hand(x.detach())
    assert_matches(got, expected.detach(), "output")
    assert_matches(hand.backward(upstream), x.grad, "input gradient")
    for (name, param), reference_param in zip(
        hand.named_parameters(), reference.parameters(), strict=True
    ):
        assert_matches(param.grad, reference_param.grad, name)
    back = hn.to_torch(hand)
    assert repr(back) == repr(reference)
    assert list(back.state_dict()) == list(reference.state_dict())
    assert torch.equal(back(x.detach()), expected.detach())


def test_a_tree_keeps_each_modules_mode_and_draws_nothing() -> None:
    reference = _tree()
    reference.res.eval()
    reference.head[0].eval()
    state = torch.get_rng_state()
    hand = hn.from_torch(reference)
    back = hn.to_torch(hand)
    assert torch.equal(torch.get_rng_state(), state)
    for tree in (hand, back):
        modes = {name: m.training for name, m in tree.named_modules()}
        assert modes == {name: m.training for name, m in reference.named_modules()}
        assert modes["res.block.1"] is False
        assert modes["down.block.0"] is True


class _Scaled(torch.nn.Module):
    """A torch layer with a parameter and a buffer, and its handgrad twin below."""

    def __init__(self, size: int, device: str | None = None) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.randn(size, device=device))
        self.register_buffer("count", torch.zeros((), dtype=torch.long, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class _HandScaled(hn.Module):
    def __init__(self, size: int, device: str | None = None) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.randn(size, device=device), requires_grad=False)
        self.register_buffer("count", torch.zeros((), dtype=torch.long, device=device))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._remember((input,), input * self.scale)

    def backward(self, grad_output: torch.Tensor, input_grad: bool = True) -> torch.Tensor | None:
        (x,) = self._recall(grad_output)
        hn.accumulate_grad(self.scale, (grad_output * x).reshape(-1, x.shape[-1]).sum(0))
        return grad_output * self.scale if input_grad else None


class _Pair(torch.nn.Module):
    """A composite torch module holding a ModuleList: converted by a rule of its own."""

    def __init__(self, parts: list[torch.nn.Module]) -> None:
        super().__init__()
        self.parts = torch.nn.ModuleList(parts)


class _HandPair(hn.Module):
    def __init__(self, parts: list[torch.nn.Module]) -> None:
        super().__init__()
        self.parts = torch.nn.ModuleList(parts)


@pytest.fixture
def registered() -> Iterator[None]:
    """_Scaled <-> _HandScaled (from arguments) and _Pair <-> _Pair (its own rule)."""
    saved = dict(convert._TO_HANDGRAD), dict(convert._TO_TORCH)
    hn.register_conversion(
        _Scaled, _HandScaled, lambda m: {"size": m.scale.shape[0], "device": "meta"}
    )

    def pair(kind: type[torch.nn.Module]) -> convert.Build:
        def build(source: torch.nn.Module, convert_child: convert.Convert) -> torch.nn.Module:
            return kind(list(convert_child(source.parts, "parts")))

        return build

    hn.register_conversion(_Pair, _HandPair, to_handgrad=pair(_HandPair), to_torch=pair(_Pair))
    yield
    convert._TO_HANDGRAD.clear()
    convert._TO_HANDGRAD.update(saved[0])
    convert._TO_TORCH.clear()
    convert._TO_TORCH.update(saved[1])


@pytest.mark.usefixtures("registered")
def test_a_registered_layer_gets_its_parameters_and_buffers_copied() -> None:
    reference = _Scaled(3)
    reference.count.fill_(7)
    state = torch.get_rng_state()
    hand = hn.from_torch(torch.nn.Sequential(reference))[0]
    assert torch.equal(torch.get_rng_state(), state), "built on the meta device: nothing drawn"
    assert isinstance(hand, _HandScaled)
    assert torch.equal(hand.scale, reference.scale)
    assert not hand.scale.requires_grad
    assert hand.count.item() == 7
    assert hand.count.data_ptr() != reference.count.data_ptr()
    back = hn.to_torch(hand)
    assert isinstance(back, _Scaled)
    assert back.scale.requires_grad
    assert back.count.item() == 7


@pytest.mark.usefixtures("registered")
def test_a_composite_rule_converts_its_module_list_and_keeps_paths_in_errors() -> None:
    reference = _Pair([_Scaled(2), torch.nn.Sequential(torch.nn.ReLU())])
    hand = hn.to_torch(hn.from_torch(torch.nn.Sequential(reference)))[0]
    assert isinstance(hand, _Pair)
    assert isinstance(hand.parts, torch.nn.ModuleList)
    assert isinstance(hand.parts[0], _Scaled)
    assert torch.equal(hand.parts[0].scale, reference.parts[0].scale)
    twin = hn.from_torch(torch.nn.Sequential(reference))[0]
    assert isinstance(twin, _HandPair)
    assert isinstance(twin.parts[0], _HandScaled)
    assert isinstance(twin.parts[1][0], hn.ReLU)
    bad = _Pair([torch.nn.ReLU(), torch.nn.LSTM(2, 2)])
    with pytest.raises(TypeError, match=r"^from_torch: model\.0\.parts\.1: torch\.nn\.LSTM"):
        hn.from_torch(torch.nn.Sequential(bad))
    with pytest.raises(TypeError, match=r"ModuleList converts only as a part of a module"):
        hn.from_torch(torch.nn.ModuleList([torch.nn.ReLU()]))


@pytest.mark.usefixtures("registered")
def test_registration_mistakes_are_clear() -> None:
    with pytest.raises(ValueError, match=r"_Scaled already converts to .*_HandScaled, not"):
        hn.register_conversion(_Scaled, hn.Linear, lambda m: {})
    with pytest.raises(ValueError, match=r"give arguments, or to_torch"):
        hn.register_conversion(_Scaled, _HandScaled, to_handgrad=lambda m, c: m)
    with pytest.raises(TypeError, match=r"torch_type must be a torch\.nn\.Module class"):
        hn.register_conversion(int, _HandScaled, lambda m: {})  # type: ignore[arg-type]
    # A rule that builds a twin with other parameter names is caught at conversion.

    class Wrong(hn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(2), requires_grad=False)

    class Bare(torch.nn.Module):
        pass

    hn.register_conversion(Bare, Wrong, lambda m: {})
    with pytest.raises(ValueError, match=r"Wrong holds parameters \['weight'\] but .*Bare holds"):
        hn.from_torch(Bare())
