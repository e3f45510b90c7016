"""Linear, activations, Dropout, Flatten, Sequential against torch.nn + autograd."""

from __future__ import annotations

import pytest
import torch

import handgrad.nn as hn
from tests.nn.helpers import assert_matches, assert_twins_agree, hand_grads, torch_grads

ACTIVATIONS = [
    (hn.ReLU(), torch.nn.ReLU()),
    (hn.Sigmoid(), torch.nn.Sigmoid()),
    (hn.Tanh(), torch.nn.Tanh()),
    (hn.LeakyReLU(), torch.nn.LeakyReLU()),
    (hn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
    (hn.ELU(), torch.nn.ELU()),
    (hn.ELU(0.5), torch.nn.ELU(0.5)),
    (hn.GELU(), torch.nn.GELU()),
    (hn.GELU("tanh"), torch.nn.GELU("tanh")),
    (hn.Softplus(), torch.nn.Softplus()),
    (hn.Softplus(beta=3.0, threshold=4.0), torch.nn.Softplus(beta=3.0, threshold=4.0)),
    (hn.Identity(), torch.nn.Identity()),
]


@pytest.mark.parametrize(("hand", "reference"), ACTIVATIONS, ids=lambda m: repr(m))
def test_activation_matches_autograd(hand, reference, device, dtype) -> None:
    # Spread 4 reaches both Softplus regimes and the flat tails of Sigmoid/Tanh.
    x = torch.randn(6, 9, device=device, dtype=dtype) * 4
    x[0, :3] = 0.0  # the kinks: autograd's subgradient at 0
    assert_twins_agree(hand, reference, x)


@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 5), (5,), (1, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_autograd(shape, bias, device, dtype) -> None:
    reference = torch.nn.Linear(5, 4, bias=bias, device=device, dtype=dtype)
    hand = hn.from_torch(reference)
    assert_twins_agree(hand, reference, torch.randn(shape, device=device, dtype=dtype))


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize(("fan_in", "fan_out"), [(1, 100), (100, 1), (7, 3), (0, 3)])
def test_linear_init_is_torchs_bit_for_bit(fan_in, fan_out, dtype) -> None:
    torch.manual_seed(3)
    reference = torch.nn.Linear(fan_in, fan_out, dtype=dtype)
    after_reference = torch.rand(4)
    torch.manual_seed(3)
    hand = hn.Linear(fan_in, fan_out, dtype=dtype)
    after_hand = torch.rand(4)
    assert torch.equal(hand.weight, reference.weight)
    assert torch.equal(hand.bias, reference.bias)
    assert torch.equal(after_hand, after_reference), "different RNG consumption"
    assert hand.weight.shape == (fan_out, fan_in)
    assert not hand.weight.requires_grad
    assert not hand.bias.requires_grad


def test_linear_without_bias_has_no_bias_parameter() -> None:
    layer = hn.Linear(3, 2, bias=False)
    assert layer.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]


def test_gradients_accumulate_over_two_backward_calls(dtype) -> None:
    reference = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    reference = reference.to(dtype)
    hand = hn.from_torch(reference)
    batches = [torch.randn(4, 3, dtype=dtype) for _ in range(2)]
    upstreams = [torch.randn(4, 2, dtype=dtype) for _ in range(2)]
    for x, g in zip(batches, upstreams, strict=True):
        reference(x).backward(g)  # autograd accumulates into .grad
        hand(x)
        hand.backward(g)
    for got, expected in zip(hand.parameters(), reference.parameters(), strict=True):
        assert_matches(got.grad, expected.grad, "accumulated gradient")
    # A second backward of one forward is refused (the first released what forward kept,
    # as autograd frees its graph); after a new forward, backward accumulates again.
    grad_before = hand[0].weight.grad.clone()
    with pytest.raises(ValueError, match="called twice for one forward"):
        hand.backward(upstreams[1])
    assert torch.equal(hand[0].weight.grad, grad_before)
    hand(batches[1])
    hand.backward(upstreams[1])
    assert not torch.equal(hand[0].weight.grad, grad_before)
    # zero_grad through an optimizer clears them (set_to_none).
    torch.optim.SGD(hand.parameters(), lr=0.1).zero_grad()
    assert all(p.grad is None for p in hand.parameters())


def test_input_grad_false_returns_none_and_still_fills_parameter_grads(dtype) -> None:
    reference = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    reference = reference.to(dtype)
    hand = hn.from_torch(reference)
    x = torch.randn(5, 3, dtype=dtype)
    g = torch.randn(5, 2, dtype=dtype)
    reference(x).backward(g)
    hand(x)
    assert hand.backward(g, input_grad=False) is None
    for got, expected in zip(hand.parameters(), reference.parameters(), strict=True):
        assert_matches(got.grad, expected.grad, "parameter gradient")
    for module in (hn.ReLU(), hn.Dropout(0.5), hn.Flatten(), hn.Linear(3, 3)):
        module(torch.randn(2, 3))
        assert module.backward(torch.ones(2, 3), input_grad=False) is None


def test_forward_and_backward_work_under_inference_mode() -> None:
    reference = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.GELU(), torch.nn.Linear(4, 1))
    hand = hn.from_torch(reference)
    x, target = torch.randn(6, 3), torch.randn(6, 1)
    torch.nn.functional.mse_loss(reference(x), target).backward()
    loss_fn = hn.MSELoss()
    with torch.inference_mode():
        loss_fn(hand(x), target)
        hand.backward(loss_fn.backward())
        hand(x)  # a second pass accumulates into the stored gradient inside inference mode
        loss_fn(hand(x), target)
        hand.backward(loss_fn.backward())
    for got, expected in zip(hand.parameters(), reference.parameters(), strict=True):
        assert not got.grad.is_inference()
        assert_matches(got.grad, 2 * expected.grad)
    # Outside inference mode, an optimizer can update the parameters and gradients.
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.1, momentum=0.9)
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)
    assert all(torch.count_nonzero(p.grad) == 0 for p in hand.parameters())


def test_no_autograd_graph_is_recorded() -> None:
    hand = hn.Sequential(hn.Linear(3, 4), hn.Sigmoid(), hn.Linear(4, 2))
    out = hand(torch.randn(2, 3))
    assert out.grad_fn is None
    assert not out.requires_grad
    assert all(not p.requires_grad for p in hand.parameters())


def test_sigmoid_does_not_overflow(dtype) -> None:
    x = torch.tensor([-1e4, -800.0, -100.0, 0.0, 100.0, 800.0, 1e4], dtype=dtype)
    layer = hn.Sigmoid()
    out = layer(x)
    grad = layer.backward(torch.ones_like(x))
    assert torch.isfinite(out).all()
    assert torch.isfinite(grad).all()
    assert out[0] == 0.0
    assert out[-1] == 1.0
    assert out[3] == 0.5
    assert_matches(out, torch.sigmoid(x))
    assert grad[3] == 0.25


def test_softplus_and_elu_stay_finite_at_extremes(dtype) -> None:
    x = torch.tensor([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=dtype)
    for hand, reference in ((hn.Softplus(), torch.nn.Softplus()), (hn.ELU(), torch.nn.ELU())):
        out = hand(x)
        grad = hand.backward(torch.ones_like(x))
        assert torch.isfinite(out).all()
        assert torch.isfinite(grad).all()
        assert_matches(out, reference(x))


# --------------------------------------------------------------------------- Dropout


def test_dropout_is_inverted_and_matches_torchs_mask(dtype) -> None:
    x = torch.randn(50, 40, dtype=dtype)
    torch.manual_seed(7)
    expected = torch.nn.Dropout(0.3)(x)
    torch.manual_seed(7)
    layer = hn.Dropout(0.3)
    out = layer(x)
    assert torch.equal(out, expected)
    kept = out != 0
    assert_matches(out[kept], x[kept] / 0.7)
    assert 0.6 < kept.double().mean() < 0.8
    g = torch.randn_like(x)
    grad = layer.backward(g)
    assert_matches(grad, torch.where(kept, g / 0.7, 0.0))
    assert torch.equal(grad != 0, kept)


def test_dropout_uses_a_given_generator(dtype) -> None:
    x = torch.ones(30, 30, dtype=dtype)
    layer = hn.Dropout(0.4, generator=torch.Generator().manual_seed(11))
    before = torch.get_rng_state()
    out = layer(x)
    assert torch.equal(torch.get_rng_state(), before), "the global RNG must not be used"
    mask = torch.empty_like(x).bernoulli_(0.6, generator=torch.Generator().manual_seed(11))
    assert torch.equal(out, mask / 0.6)
    # The same generator state gives the same mask; the next call a different one.
    assert not torch.equal(layer(x), out)


def test_dropout_is_the_identity_in_eval_and_at_p0() -> None:
    x = torch.randn(8, 8)
    for layer in (hn.Dropout(0.5).eval(), hn.Dropout(0.0)):
        before = torch.get_rng_state()
        assert torch.equal(layer(x), x)
        assert torch.equal(torch.get_rng_state(), before)
        g = torch.randn_like(x)
        assert torch.equal(layer.backward(g), g)


def test_dropout_p1_zeroes_everything() -> None:
    x = torch.randn(5, 5)
    layer = hn.Dropout(1.0)
    before = torch.get_rng_state()
    assert torch.equal(layer(x), torch.zeros_like(x))
    assert torch.equal(torch.get_rng_state(), before), "torch draws nothing at p=1 either"
    assert torch.equal(layer.backward(torch.ones_like(x)), torch.zeros_like(x))
    assert torch.equal(torch.nn.Dropout(1.0)(x), layer(x))


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_rejects_bad_probability(p) -> None:
    with pytest.raises(ValueError, match=rf"between 0 and 1, but got {p}"):
        hn.Dropout(p)


# --------------------------------------------------------------------------- Flatten, Sequential


@pytest.mark.parametrize(("start", "end"), [(1, -1), (0, -1), (1, 2), (2, 3)])
def test_flatten_matches_torch(start, end, dtype) -> None:
    x = torch.randn(2, 3, 4, 5, dtype=dtype)
    assert_twins_agree(hn.Flatten(start, end), torch.nn.Flatten(start, end), x)


def test_sequential_is_indexable_sized_and_iterable() -> None:
    layers = [hn.Linear(2, 3), hn.ReLU(), hn.Linear(3, 1)]
    net = hn.Sequential(*layers)
    assert len(net) == 3
    assert list(net) == layers
    assert net[0] is layers[0]
    assert net[-1] is layers[2]
    head = net[:2]
    assert isinstance(head, hn.Sequential)
    assert list(head) == layers[:2]
    assert [name for name, _ in net.named_parameters()] == [
        "0.weight", "0.bias", "2.weight", "2.bias"
    ]  # fmt: skip


def test_empty_sequential_passes_gradients_through() -> None:
    net = hn.Sequential()
    x = torch.randn(3)
    assert torch.equal(net(x), x)
    assert torch.equal(net.backward(x), x)
    net(x)
    assert net.backward(x, input_grad=False) is None


def test_deep_sequential_matches_autograd(device, dtype) -> None:
    nn = torch.nn
    reference = nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(),
        nn.Linear(8, 8), nn.ELU(), nn.Linear(8, 8), nn.Softplus(), nn.Linear(8, 2),
    ).to(device, dtype)  # fmt: skip
    hand = hn.from_torch(reference)
    assert_twins_agree(hand, reference, torch.randn(16, 4, device=device, dtype=dtype))


def test_modules_move_with_to_and_keep_working() -> None:
    hand = hn.Sequential(hn.Linear(3, 2), hn.Tanh()).to(torch.float64)
    assert hand[0].weight.dtype == torch.float64
    assert not hand[0].weight.requires_grad
    x = torch.randn(4, 3, dtype=torch.float64)
    out, dx, grads = hand_grads(hand, x, torch.ones(4, 2, dtype=torch.float64))
    expected_out, expected_dx, expected_grads = torch_grads(
        hn.to_torch(hand), x, torch.ones(4, 2, dtype=torch.float64)
    )
    assert_matches(out, expected_out)
    assert_matches(dx, expected_dx)
    for got, expected in zip(grads, expected_grads, strict=True):
        assert_matches(got, expected)
