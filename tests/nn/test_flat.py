"""flatten_parameters: one buffer for the parameters, one for their gradients (a FlatLayout),
the same training."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import Tensor

import handgrad.nn as hn
import handgrad.optim as ho
from handgrad.optim._base import flat_updates


def make_net(dtype: torch.dtype = torch.float64, seed: int = 0) -> hn.Sequential:
    torch.manual_seed(seed)
    return hn.Sequential(
        hn.Linear(3, 7, dtype=dtype),
        hn.Sigmoid(),
        hn.Linear(7, 5, dtype=dtype),
        hn.ReLU(),
        hn.Linear(5, 1, dtype=dtype),
    )


def data(dtype: torch.dtype = torch.float64, batch: int = 8) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, generator=generator, dtype=dtype)
    return x, torch.randn(batch, 1, generator=generator, dtype=dtype)


def backward(net: hn.Sequential, x: Tensor, y: Tensor) -> Tensor:
    loss_fn = hn.MSELoss()
    loss = loss_fn(net(x), y)
    net.backward(loss_fn.backward(), input_grad=False)
    return loss


def assert_tiles(tensors: list[Tensor], buffer: Tensor) -> None:
    """The tensors are consecutive views into ``buffer``, in order, covering all of it."""
    offset = 0
    for tensor in tensors:
        assert tensor.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()
        assert tensor.data_ptr() == buffer.data_ptr() + offset * buffer.element_size()
        assert tensor.is_contiguous()
        offset += tensor.numel()
    assert offset == buffer.numel()


def flat_grad_buffer(net: torch.nn.Module) -> Tensor:
    """The 1-D tensor over the memory the first parameter's gradient starts."""
    first = next(net.parameters()).grad
    assert first is not None
    total = sum(p.numel() for p in net.parameters())
    return first.new_empty(0).set_(first.untyped_storage(), first.storage_offset(), (total,))


def test_parameters_become_views_of_one_buffer_with_values_unchanged() -> None:
    net = make_net()
    before = [(p, p.detach().clone()) for p in net.parameters()]
    (layout,) = hn.flatten_parameters(net)
    flat = layout.data
    assert flat.dim() == 1
    assert flat.numel() == 7 * 3 + 7 + 5 * 7 + 5 + 5 + 1
    params = list(net.parameters())
    assert [id(p) for p in params] == [id(p) for p, _ in before]  # the same Parameter objects
    for param, value in before:
        assert torch.equal(param, value)
        assert not param.requires_grad
    assert_tiles(params, flat)
    assert torch.equal(flat, torch.cat([v.reshape(-1) for _, v in before]))


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda params: torch.optim.Adam(params, lr=0.05),
        lambda params: torch.optim.Adam(params, lr=0.05, foreach=True),
        lambda params: ho.Adam(params, lr=0.05),
        lambda params: ho.SGD(params, lr=0.1, momentum=0.9),
    ],
    ids=["torch-Adam", "torch-Adam-foreach", "handgrad-Adam", "handgrad-SGD"],
)
def test_training_is_bitwise_unchanged(make_optimizer) -> None:
    plain, flat_net = make_net(), make_net()
    (layout,) = hn.flatten_parameters(flat_net)
    flat = layout.data
    x, y = data()
    opt_plain, opt_flat = make_optimizer(plain.parameters()), make_optimizer(flat_net.parameters())
    for _ in range(4):
        for net, opt in ((plain, opt_plain), (flat_net, opt_flat)):
            opt.zero_grad()
            backward(net, x, y)
        for p, q in zip(plain.parameters(), flat_net.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)
        opt_plain.step()
        opt_flat.step()
    for p, q in zip(plain.parameters(), flat_net.parameters(), strict=True):
        assert torch.equal(p, q)
    assert_tiles(list(flat_net.parameters()), flat)  # the optimizers updated in place
    if isinstance(opt_flat, ho.Optimizer):  # its flat step gathered the last gradients
        assert torch.equal(layout.grad, gathered(flat_net))


def gathered(net: torch.nn.Module) -> Tensor:
    """The parameters' gradients end to end, as a flat step gathers them."""
    return torch.cat([p.grad.reshape(-1) for p in net.parameters()])


def test_gradients_are_stored_as_without_a_layout_and_the_flat_step_gathers_them() -> None:
    net, plain = make_net(), make_net()
    (layout,) = hn.flatten_parameters(net)
    x, y = data()
    backward(net, x, y)
    backward(plain, x, y)
    for p, q in zip(net.parameters(), plain.parameters(), strict=True):
        assert p.grad._base is None  # a tensor of its own, as without flattening
        assert torch.equal(p.grad, q.grad)
    first = [p.grad.clone() for p in net.parameters()]

    backward(net, x, y)  # accumulates in place, as autograd: twice the gradient
    for p, value in zip(net.parameters(), first, strict=True):
        assert torch.equal(p.grad, 2 * value)

    optimizer = ho.SGD(net.parameters(), lr=0.1)
    optimizer.step()  # one flat step: the gradients gathered into the layout's buffer
    assert flat_updates(optimizer) == 1
    assert torch.equal(layout.grad, gathered(net))
    assert torch.equal(layout.grad, 2 * torch.cat([g.reshape(-1) for g in first]))


def test_zero_grad_without_set_to_none_accumulates_in_place() -> None:
    net = make_net()
    (layout,) = hn.flatten_parameters(net)
    optimizer = ho.SGD(net.parameters(), lr=0.0)
    x, y = data()
    backward(net, x, y)
    expected = [p.grad.clone() for p in net.parameters()]
    grads = [p.grad for p in net.parameters()]
    optimizer.zero_grad(set_to_none=False)
    assert all(torch.count_nonzero(g) == 0 for g in grads)
    backward(net, x, y)
    assert all(p.grad is g for p, g in zip(net.parameters(), grads, strict=True))
    for p, value in zip(net.parameters(), expected, strict=True):
        assert torch.equal(p.grad, value)
    optimizer.step()
    assert flat_updates(optimizer) == 1
    assert torch.equal(layout.grad, gathered(net))


def test_gradients_match_autograd() -> None:
    net = make_net()
    hn.flatten_parameters(net)
    reference = hn.to_torch(net)
    x, y = data()
    backward(net, x, y)
    torch.nn.functional.mse_loss(reference(x), y).backward()
    for p, q in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14)


def test_existing_gradients_move_into_the_buffer() -> None:
    net = make_net()
    x, y = data()
    backward(net, x, y)
    expected = [p.grad.clone() for p in net.parameters()]
    hn.flatten_parameters(net)
    assert_tiles([p.grad for p in net.parameters()], flat_grad_buffer(net))
    for p, value in zip(net.parameters(), expected, strict=True):
        assert torch.equal(p.grad, value)


def test_backward_under_inference_mode_fills_the_buffer_with_normal_tensors() -> None:
    net = make_net()
    hn.flatten_parameters(net)
    x, y = data()
    with torch.inference_mode():
        backward(net, x, y)
    expected = [p.grad.clone() for p in net.parameters()]
    for p in net.parameters():
        assert not p.grad.is_inference()
        p.grad.add_(1.0)  # would raise for an inference tensor outside inference mode
    for p, value in zip(net.parameters(), expected, strict=True):
        assert torch.equal(p.grad, value + 1.0)


def test_flattening_under_inference_mode_leaves_trainable_parameters() -> None:
    net = make_net()
    with torch.inference_mode():
        (layout,) = hn.flatten_parameters(net)
        flat = layout.data
    assert not flat.is_inference()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    backward(net, *data())
    optimizer.step()  # in-place updates outside inference mode


def test_to_another_dtype_drops_the_layout_and_stays_correct() -> None:
    net, reference = make_net(torch.float32), make_net(torch.float32)
    hn.flatten_parameters(net)
    x, y = data()
    backward(net, x.float(), y.float())  # float32 gradients in the buffer
    net.to(torch.float64)
    reference.to(torch.float64)
    for p in net.parameters():
        p.grad = None
    backward(net, x, y)
    backward(reference, x, y)
    for p, q in zip(net.parameters(), reference.parameters(), strict=True):
        assert p.dtype == torch.float64
        assert p.grad.dtype == torch.float64
        assert torch.equal(p, q)
        assert torch.equal(p.grad, q.grad)
    # Back on its own memory: the float32 slot is forgotten, not written into.
    pointers = {p.grad.data_ptr() for p in net.parameters()}
    assert len(pointers) == len(list(net.parameters()))
    (layout,) = hn.flatten_parameters(net)
    flat = layout.data  # and flattening again restores the layout
    assert flat.dtype == torch.float64
    assert_tiles([p.grad for p in net.parameters()], flat_grad_buffer(net))


def test_assigning_data_drops_the_layout_for_that_parameter() -> None:
    net = make_net()
    hn.flatten_parameters(net)
    weight = net[0].weight
    weight.data = weight.detach().clone()
    x, y = data()
    backward(net, x, y)
    assert (
        weight.grad.untyped_storage().data_ptr() != net[2].weight.grad.untyped_storage().data_ptr()
    )
    reference = make_net()
    backward(reference, x, y)
    for p, q in zip(net.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)


def test_load_state_dict_keeps_the_layout() -> None:
    net, source = make_net(seed=0), make_net(seed=5)
    (layout,) = hn.flatten_parameters(net)
    flat = layout.data
    net.load_state_dict(source.state_dict())
    assert_tiles(list(net.parameters()), flat)
    for p, q in zip(net.parameters(), source.parameters(), strict=True):
        assert torch.equal(p, q)
    x, y = data()
    backward(net, x, y)
    backward(source, x, y)
    for p, q in zip(net.parameters(), source.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)
    assert layout.holds()


def test_deepcopy_is_an_independent_correct_network() -> None:
    net = make_net()
    (layout,) = hn.flatten_parameters(net)
    flat = layout.data
    twin = copy.deepcopy(net)
    x, y = data()
    backward(net, x, y)
    backward(twin, x, y)
    for p, q in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
        assert torch.equal(p.grad, q.grad)
        assert q.data_ptr() != p.data_ptr()
        assert q.grad.data_ptr() != p.grad.data_ptr()
    with torch.no_grad():
        next(twin.parameters()).add_(1.0)
    assert_tiles(list(net.parameters()), flat)
    assert torch.equal(next(net.parameters()), make_net()[0].weight)


def test_mixed_dtypes_get_one_layout_each() -> None:
    torch.manual_seed(0)
    net = hn.Sequential(hn.Linear(2, 3), hn.ReLU(), hn.Linear(3, 1, dtype=torch.float64))
    layout, second_layout = hn.flatten_parameters(net)
    flat = layout.data
    assert second_layout.params == (net[2].weight, net[2].bias)
    assert flat.dtype == torch.float32
    assert flat.numel() == 2 * 3 + 3
    assert_tiles([net[0].weight, net[0].bias], flat)
    second = net[2].weight
    assert second.data_ptr() + second.numel() * 8 == net[2].bias.data_ptr()


def test_a_torch_network_flattened_trains_as_before() -> None:
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    flat_net = copy.deepcopy(plain)
    (layout,) = hn.flatten_parameters(flat_net)
    flat = layout.data
    x, y = data(torch.float32)
    optimizers = [ho.Adam(plain.parameters(), lr=0.1), ho.Adam(flat_net.parameters(), lr=0.1)]
    for _ in range(3):
        for net, opt in zip((plain, flat_net), optimizers, strict=True):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            opt.step()
    for p, q in zip(plain.parameters(), flat_net.parameters(), strict=True):
        assert q.requires_grad
        assert torch.equal(p, q)
    assert_tiles(list(flat_net.parameters()), flat)


def test_a_module_without_parameters_has_no_layout() -> None:
    assert hn.flatten_parameters(hn.ReLU()) == ()


def test_a_sparse_parameter_is_refused() -> None:
    module = torch.nn.Module()
    module.table = torch.nn.Parameter(torch.eye(3).to_sparse(), requires_grad=False)
    with pytest.raises(TypeError, match=r"parameter 'table' has layout torch\.sparse_coo"):
        hn.flatten_parameters(module)


def test_parameters_sharing_memory_are_refused() -> None:
    module = torch.nn.Module()
    base = torch.zeros(10)
    module.a = torch.nn.Parameter(base[:6], requires_grad=False)
    module.b = torch.nn.Parameter(base[4:], requires_grad=False)
    with pytest.raises(ValueError, match=r"parameters 'a' and 'b' share memory"):
        hn.flatten_parameters(module)


def test_a_gradient_of_the_wrong_shape_is_still_refused() -> None:
    net = make_net()
    hn.flatten_parameters(net)
    weight = net[0].weight
    with pytest.raises(
        RuntimeError, match=r"gradient of size .\[3, 7\]. to a tensor of size .\[7, 3\]."
    ):
        hn.accumulate_grad(weight, torch.zeros(3, 7, dtype=torch.float64))
    assert weight.grad is None
    backward(net, *data())  # and the next gradient is stored
    assert weight.grad is not None
    assert weight.grad.shape == (7, 3)


def test_a_gradient_already_in_its_slot_is_gathered_in_place() -> None:
    """Gradients that are the layout's slots (flatten_parameters moved them there) are
    used where they are; the flat step reads the buffer they tile."""
    net = make_net()
    backward(net, *data())
    (layout,) = hn.flatten_parameters(net)
    assert all(p.grad is s for p, s in zip(net.parameters(), layout.slots, strict=True))
    expected = gathered(net)
    optimizer = ho.SGD(net.parameters(), lr=0.1)
    optimizer.step()
    assert flat_updates(optimizer) == 1
    assert torch.equal(layout.grad, expected)


def test_benchmark_steps_with_and_without_flattening_agree() -> None:
    from benchmarks import bench_train

    for config in bench_train.GRID[:2]:
        flat, plain = bench_train.handgrad_step(config), bench_train.handgrad_step(config, False)
        for _ in range(3):
            assert torch.equal(flat(), plain())


def test_a_sparse_gradient_is_stored_as_is() -> None:
    net = make_net()
    hn.flatten_parameters(net)
    bias = net[0].bias
    grad = torch.zeros(7, dtype=torch.float64)
    grad[2] = 1.5
    sparse = grad.to_sparse()
    hn.accumulate_grad(bias, sparse)
    assert bias.grad is sparse


def test_a_saved_and_loaded_network_is_correct() -> None:
    net = make_net()
    hn.flatten_parameters(net)
    saved = io.BytesIO()
    torch.save(net, saved)
    saved.seek(0)
    loaded = torch.load(saved, weights_only=False)
    x, y = data()
    backward(net, x, y)
    backward(loaded, x, y)
    for p, q in zip(net.parameters(), loaded.parameters(), strict=True):
        assert torch.equal(p, q)
        assert torch.equal(p.grad, q.grad)
    (layout,) = hn.flatten_parameters(loaded)
    flat = layout.data  # flattening again restores the layout
    assert_tiles(list(loaded.parameters()), flat)


def test_the_layout_names_its_parameters_buffers_and_slots() -> None:
    net = make_net()
    (layout,) = hn.flatten_parameters(net)
    assert isinstance(layout, hn.FlatLayout)
    assert layout.params == tuple(net.parameters())
    assert len(layout) == 6
    assert layout.data.shape == layout.grad.shape == (7 * 3 + 7 + 5 * 7 + 5 + 5 + 1,)
    assert_tiles(list(layout.slots), layout.grad)
    assert "6 parameters" in repr(layout)
    assert layout.holds()
    net[0].weight.data = net[0].weight.detach().clone()
    assert not layout.holds()


def test_tensors_can_be_flattened_without_a_module() -> None:
    params = [torch.ones(2, 3), torch.zeros(4)]
    (layout,) = hn.flatten_parameters(params)
    assert layout.params == tuple(params)
    assert_tiles(params, layout.data)
    with pytest.raises(ValueError, match="parameters 'parameter 0' and 'parameter 1' share"):
        hn.flatten_parameters([params[0], params[0]])
