"""Sequential's fast path (handgrad.nn.fast_chain) against its per-module path: the same bits.

"plain" is the same network with the fast path switched off (``chain_of`` answering None), so
every child runs through its own module call and backward.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator

import pytest
import torch

import handgrad.nn as hn
from handgrad.nn import container
from handgrad.nn.fast_chain import Chain
from handgrad.optim import Adam


@contextlib.contextmanager
def per_module_path() -> Iterator[None]:
    """Sequential without its fast path, for the duration."""
    original = container.chain_of
    container.chain_of = lambda modules, cached: None  # type: ignore[assignment]
    try:
        yield
    finally:
        container.chain_of = original


def _net(dtype: torch.dtype) -> hn.Sequential:
    torch.manual_seed(0)
    return hn.Sequential(
        hn.Linear(3, 8, dtype=dtype), hn.Sigmoid(),
        hn.Linear(8, 6, dtype=dtype), hn.Tanh(),
        hn.Linear(6, 5, bias=False, dtype=dtype), hn.ReLU(), hn.Identity(),
        hn.Linear(5, 2, dtype=dtype),
    )  # fmt: skip


def _ran_fast(net: hn.Sequential) -> bool:
    saved = net._saved
    return saved is not None and type(saved[0][0]) is Chain


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return (a is None and b is None) or (
        a is not None and b is not None and a.dtype == b.dtype and torch.equal(a, b)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("flat", [False, True], ids=["separate", "flat"])
def test_the_fast_path_gives_the_per_module_bits(dtype, flat) -> None:
    fast, plain = _net(dtype), _net(dtype)
    if flat:
        hn.flatten_parameters(fast)
        hn.flatten_parameters(plain)
    loss_fast, loss_plain = hn.MSELoss(), hn.MSELoss()
    opt_fast, opt_plain = Adam(fast.parameters(), lr=1e-2), Adam(plain.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    for step in range(6):
        x = torch.randn(4, 3, dtype=dtype, generator=generator)
        y = torch.randn(4, 2, dtype=dtype, generator=generator)
        if step % 2 == 0:  # even steps: two backwards accumulate before the update
            opt_fast.zero_grad()
            opt_plain.zero_grad()
        out_fast = fast(x)
        assert _ran_fast(fast)
        with per_module_path():
            out_plain = plain(x)
            assert not _ran_fast(plain)
        assert _same(out_fast, out_plain)
        loss_fast(out_fast, y)
        loss_plain(out_plain, y)
        input_grad = step % 3 == 0
        dx_fast = fast.backward(loss_fast.backward(), input_grad=input_grad)
        with per_module_path():
            dx_plain = plain.backward(loss_plain.backward(), input_grad=input_grad)
        assert _same(dx_fast, dx_plain)
        for (name, p), q in zip(fast.named_parameters(), plain.parameters(), strict=True):
            assert _same(p.grad, q.grad), name
        if step % 2 == 1:
            opt_fast.step()
            opt_plain.step()
            for (name, p), q in zip(fast.named_parameters(), plain.parameters(), strict=True):
                assert _same(p, q), name


def test_the_per_sample_loop_of_bench_train_gives_the_per_module_bits() -> None:
    """The benchmark's 1-100-1 sigmoid loop at batch 1 (the case the fast path is for)."""
    nets = []
    for fast in (True, False):
        torch.manual_seed(0)
        net = hn.Sequential(hn.Linear(1, 100), hn.Sigmoid(), hn.Linear(100, 1))
        hn.flatten_parameters(net)
        loss_fn, optimizer = hn.MSELoss(), Adam(net.parameters(), lr=1e-3)
        xs = torch.linspace(-2, 2, 30).reshape(30, 1, 1)
        with contextlib.nullcontext() if fast else per_module_path():
            for xi in xs:
                optimizer.zero_grad()
                loss_fn(net(xi), xi**3)
                net.backward(loss_fn.backward(), input_grad=False)
                optimizer.step()
        nets.append(net)
    for p, q in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert _same(p, q)


@pytest.mark.parametrize("per_sample", [True, "factored"], ids=str)
def test_per_sample_gradients_through_the_fast_path(per_sample) -> None:
    fast, plain = _net(torch.float64), _net(torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    grad = torch.randn(5, 2, dtype=torch.float64)
    fast(x)
    assert _ran_fast(fast)
    fast.backward(grad, input_grad=False, per_sample=per_sample)
    with per_module_path():
        plain(x)
        plain.backward(grad, input_grad=False, per_sample=per_sample)
    for (name, p), q in zip(fast.named_parameters(), plain.parameters(), strict=True):
        assert _same(p.grad, q.grad), name
        got, expected = p.grad_sample, q.grad_sample
        if not isinstance(got, torch.Tensor):  # factored: compare the full tensors
            got, expected = got.materialize(), expected.materialize()
        assert _same(got, expected), name


def test_a_hook_on_a_child_takes_the_per_module_path() -> None:
    net = _net(torch.float64)
    seen = []
    net[1].register_forward_hook(lambda module, args, out: seen.append(out))
    out = net(torch.randn(2, 3, dtype=torch.float64))
    assert not _ran_fast(net)
    assert len(seen) == 1
    net.backward(torch.ones_like(out))


@pytest.mark.parametrize(
    "make",
    [
        lambda: hn.Sequential(hn.Linear(2, 2), hn.Dropout(0.5)),  # a layer outside the chain
        lambda: hn.Sequential(type("MyLinear", (hn.Linear,), {})(2, 2)),  # a subclass
        lambda: hn.Sequential(),
    ],
    ids=["dropout", "subclass", "empty"],
)
def test_other_children_take_the_per_module_path(make) -> None:
    net = make()
    net(torch.randn(3, 2))
    assert not _ran_fast(net)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_gives_the_per_module_bits(dtype) -> None:
    """The modules' own kernels, which compute a half input in float32 (half_in_float32)."""
    fast, plain = _net(torch.float32).to(dtype), _net(torch.float32).to(dtype)
    x = torch.randn(4, 3).to(dtype)
    grad = torch.randn(4, 2).to(dtype)
    out = fast(x)
    assert _ran_fast(fast)
    dx = fast.backward(grad)
    with per_module_path():
        assert _same(out, plain(x))
        assert _same(dx, plain.backward(grad))
    for (name, p), q in zip(fast.named_parameters(), plain.parameters(), strict=True):
        assert _same(p.grad, q.grad), name


def test_bad_inputs_raise_the_layers_errors() -> None:
    net = _net(torch.float32)
    with pytest.raises(ValueError, match=r"expected input of shape \(\.\.\., 3\)"):
        net(torch.randn(2, 4))  # the Linear's own error, not the kernel's
    with pytest.raises(ValueError, match=r"dtype torch\.float64"):
        net(torch.randn(2, 3, dtype=torch.float64))


def test_a_replaced_weight_and_a_new_child_are_seen() -> None:
    net = _net(torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    net(x)
    reference = copy.deepcopy(net)
    new_weight = torch.nn.Parameter(torch.randn(8, 3, dtype=torch.float64), requires_grad=False)
    net[0].weight = new_weight
    reference[0].weight = copy.deepcopy(new_weight)
    with per_module_path():
        expected = reference(x)
    assert _same(net(x), expected)
    assert _ran_fast(net)
    net.add_module("8", hn.Sigmoid())
    assert _same(net(x), torch.sigmoid(expected))
    assert _ran_fast(net)


def test_backward_twice_after_a_fast_forward_is_refused() -> None:
    net = _net(torch.float64)
    out = net(torch.randn(2, 3, dtype=torch.float64))
    net.backward(torch.ones_like(out))
    with pytest.raises(ValueError, match="called twice"):
        net.backward(torch.ones_like(out))
    out = net(torch.randn(2, 3, dtype=torch.float64))
    net[7].backward(torch.ones_like(out))  # a child's own backward takes its ctx ...
    with pytest.raises(ValueError, match=r"Linear\.backward\(\) called twice"):
        net.backward(torch.ones_like(out))  # ... and the container's says so


def test_a_network_after_a_fast_forward_copies_and_pickles() -> None:
    net = _net(torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    expected = net(x)
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    for other in (copy.deepcopy(net), torch.load(buffer, weights_only=False)):
        assert _same(other(x), expected)
        assert _ran_fast(other)
        chain = other._saved[0][0]
        assert all(a is b for a, b in zip(chain.modules, other, strict=True))  # its own layers
        other[0].weight.data.zero_()
        assert not _same(other(x), expected)
