"""backward(..., per_sample=True): every parameter's p.grad_sample against torch.func's
vmap(grad) on the torch twin of the network, in float64."""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

import handgrad.nn as hn
from handgrad.nn.per_sample import (
    FactoredGradSample,
    clear_grad_sample,
    held_grad_sample_storage,
    per_sample_gradients,
    release_grad_sample_storage,
)
from tests.nn.helpers import assert_matches

ACTIVATIONS: list[Callable[[], hn.Module]] = [
    hn.ReLU, hn.Sigmoid, hn.Tanh, hn.GELU, hn.ELU, hn.Softplus, hn.Identity,
    lambda: hn.LeakyReLU(0.1), lambda: hn.GELU(approximate="tanh"),
]  # fmt: skip


def network(widths: list[int], activation: Callable[[], hn.Module], residual: bool) -> hn.Module:
    """Linear layers with activations between, an eval-mode Dropout, and optionally a
    residual block with a Linear shortcut."""
    layers: list[hn.Module] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [hn.Linear(fan_in, fan_out, dtype=torch.float64), activation()]
    layers.pop()
    if residual:
        width = widths[-1]
        block = hn.Sequential(hn.Linear(width, 3, dtype=torch.float64), activation(),
                              hn.Linear(3, width, bias=False, dtype=torch.float64))  # fmt: skip
        layers.append(hn.Residual(block, hn.Linear(width, width, dtype=torch.float64)))
    layers.insert(1, hn.Dropout(0.3))
    model = hn.Sequential(*layers)
    model.eval()  # dropout is then the identity, as in the torch twin under vmap
    return model


def losses_and_targets(out_features: int, batch: int, reduction: str) -> list:
    """(loss module, target, the mean's denominator) for each loss handgrad has."""
    real = torch.randn(batch, out_features, dtype=torch.float64)
    labels = torch.randint(0, out_features, (batch,))
    probabilities = torch.softmax(torch.randn(batch, out_features, dtype=torch.float64), 1)
    elements = batch * out_features
    return [
        (hn.MSELoss(reduction), real, elements),
        (hn.L1Loss(reduction), real, elements),
        (hn.HuberLoss(reduction, delta=0.5), real, elements),
        (hn.BCEWithLogitsLoss(reduction=reduction), torch.rand_like(real), elements),
        (hn.CrossEntropyLoss(reduction=reduction), labels, batch),
        (hn.CrossEntropyLoss(reduction=reduction, label_smoothing=0.2), labels, batch),
        (hn.CrossEntropyLoss(reduction=reduction), probabilities, batch),
    ]


def vmap_grad_samples(model: hn.Module, loss: hn.Module, x: Tensor, target: Tensor,
                      denominator: int) -> dict[str, Tensor]:  # fmt: skip
    """Each example's contribution to the batch loss's gradient, by torch.func on the torch
    twins: vmap over examples of grad of (summed loss of the example) / denominator."""
    torch_model, torch_loss = hn.to_torch(model), hn.to_torch(loss)
    torch_loss.reduction = "sum"
    params = {name: p.detach() for name, p in torch_model.named_parameters()}

    def example_loss(params: dict[str, Tensor], x_i: Tensor, t_i: Tensor) -> Tensor:
        out = torch.func.functional_call(torch_model, params, (x_i.unsqueeze(0),))
        return torch_loss(out, t_i.unsqueeze(0)) / denominator

    return torch.func.vmap(torch.func.grad(example_loss), (None, 0, 0))(params, x, target)


def check_against_vmap(model: hn.Module, x: Tensor, loss_fn: hn.Module, target: Tensor,
                       denominator: int, per_sample: bool | str = True) -> None:  # fmt: skip
    expected = vmap_grad_samples(model, loss_fn, x, target, denominator)
    loss_fn(model(x), target)
    model.backward(loss_fn.backward(), input_grad=False, per_sample=per_sample)
    batch_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = None
    loss_fn(model(x), target)
    model.backward(loss_fn.backward())
    for name, param in model.named_parameters():
        sample = param.grad_sample
        if isinstance(sample, FactoredGradSample):
            assert per_sample == "factored"
            sample = sample.materialize()
        assert_matches(sample, expected[name], f"{name}.grad_sample")
        # They sum to .grad, which is what a plain backward gives.
        assert_matches(batch_grads[name], param.grad, f"{name}.grad")
        assert_matches(sample.sum(0), param.grad, f"Σ {name}.grad_sample", scale_floor=1e-3)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("per_sample", [True, "factored"])
def test_every_loss_both_reductions(
    reduction: str, batch: int, per_sample: bool | str, device: torch.device
) -> None:
    """Every loss, each behind a network with another activation (the four cases together
    cover every activation, with and without a residual block)."""
    offset = 2 * (reduction == "sum") + (batch == 5)
    for index, (loss_fn, target, denominator) in enumerate(losses_and_targets(3, batch, reduction)):
        choice = (index + 7 * offset) % len(ACTIVATIONS)
        torch.manual_seed(choice)
        model = network([4, 6, 3], ACTIVATIONS[choice], residual=choice % 2 == 0).to(device)
        x = torch.randn(batch, 4, dtype=torch.float64, device=device)
        target = target.to(device)
        check_against_vmap(model, x, loss_fn, target,
                           denominator if reduction == "mean" else 1, per_sample)  # fmt: skip


@given(
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    batch=st.integers(1, 7),
    activation=st.sampled_from(ACTIVATIONS),
    residual=st.booleans(),
    sequence=st.lists(st.integers(1, 3), max_size=2),
    seed=st.integers(0, 2**16),
)
def test_random_networks(widths: list[int], batch: int, activation: Callable[[], hn.Module],
                         residual: bool, sequence: list[int], seed: int) -> None:  # fmt: skip
    """Random widths and depths, inputs with middle dimensions (a sequence: the Linear
    layers act on the last), odd batch sizes; MSE, mean-reduced."""
    torch.manual_seed(seed)
    model = network(widths, activation, residual)
    x = torch.randn(batch, *sequence, widths[0], dtype=torch.float64)
    target = torch.randn(batch, *sequence, widths[-1], dtype=torch.float64)
    check_against_vmap(model, x, hn.MSELoss(), target, target.numel())
    for p in model.parameters():
        p.grad = p.grad_sample = None
    check_against_vmap(model, x, hn.MSELoss(), target, target.numel(), "factored")


def test_grad_sample_accumulates_like_grad() -> None:
    model = network([3, 4, 2], hn.Tanh, residual=False)
    x = torch.randn(5, 3, dtype=torch.float64)
    model(x)
    model.backward(torch.ones(5, 2, dtype=torch.float64), per_sample=True)
    first = {name: p.grad_sample.clone() for name, p in model.named_parameters()}
    kept = [p.grad_sample for p in model.parameters()]
    model(x)
    model.backward(torch.ones(5, 2, dtype=torch.float64), per_sample=True)
    for (name, p), buffer in zip(model.named_parameters(), kept, strict=True):
        assert p.grad_sample is buffer  # added in place
        assert_matches(p.grad_sample, 2 * first[name])
    model(x[:3])
    with pytest.raises(ValueError, match="clear grad_sample between batches"):
        model.backward(torch.ones(3, 2, dtype=torch.float64), per_sample=True)


def test_a_leaf_layer_and_the_context_manager() -> None:
    """Linear.backward(per_sample=True) alone; per_sample_gradients() around any backward
    (for a module whose own backward does not take per_sample)."""
    layer = hn.Linear(3, 2, dtype=torch.float64)
    x, g = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    layer(x)
    layer.backward(g, per_sample=True)
    assert_matches(layer.weight.grad_sample, g[:, :, None] * x[:, None, :])
    assert_matches(layer.bias.grad_sample, g)
    layer.weight.grad_sample = layer.bias.grad_sample = None
    layer(x)
    with per_sample_gradients(factored=True):
        layer.backward(g)
    assert isinstance(layer.weight.grad_sample, FactoredGradSample)
    layer.weight.grad_sample = layer.bias.grad_sample = None
    layer(x)
    layer.backward(g)  # the mode is off again
    assert layer.weight.grad_sample is None


class Scale(hn.Module):
    """A layer with a parameter and no per_sample_grads."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = torch.nn.Parameter(torch.ones(3), requires_grad=False)

    def forward(self, input: Tensor) -> Tensor:
        return self._remember((input,), input * self.gamma)

    def backward(self, grad_output: Tensor, input_grad: bool = True) -> Tensor | None:
        (x,) = self._recall(grad_output)
        hn.accumulate_grad(self.gamma, (grad_output * x).sum(0))
        return grad_output * self.gamma


def test_a_layer_that_cannot_give_them_refuses() -> None:
    model = hn.Sequential(hn.Linear(3, 3), Scale())
    model(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"Scale cannot give per-sample gradients.*gamma"):
        model.backward(torch.ones(2, 3), per_sample=True)
    model(torch.randn(2, 3))
    model.backward(torch.ones(2, 3))  # without per_sample it trains as before


def test_bad_per_sample_values_and_unbatched_inputs() -> None:
    layer = hn.Linear(3, 2)
    layer(torch.randn(4, 3))
    with pytest.raises(ValueError, match="per_sample must be False, True or 'factored', got 'yes'"):
        layer.backward(torch.ones(4, 2), per_sample="yes")  # type: ignore[arg-type]
    layer(torch.randn(3))
    with pytest.raises(ValueError, match="per-sample gradients need a batch dimension"):
        layer.backward(torch.ones(2), per_sample=True)


def test_norm_only_path_never_allocates_batch_times_parameters() -> None:
    """backward(per_sample="factored") of a fully connected network, then the examples'
    gradient norms: no operator allocates anything near batch × (a layer's parameters)
    (every allocation of every operator is recorded by the profiler)."""
    from handgrad.privacy import per_sample_norms

    batch, widths = 64, (300, 200, 100)
    model = hn.Sequential(
        hn.Linear(widths[0], widths[1]), hn.ReLU(), hn.Linear(widths[1], widths[2])
    )
    loss_fn = hn.CrossEntropyLoss()
    x, y = torch.randn(batch, widths[0]), torch.randint(0, widths[2], (batch,))
    smallest_layer = batch * widths[1] * widths[2] * 4  # bytes of the smaller dW_i stack

    def largest_allocation(per_sample: bool | str) -> int:
        for p in model.parameters():
            p.grad = p.grad_sample = None
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                    profile_memory=True) as prof:  # fmt: skip
            loss_fn(model(x), y)
            model.backward(loss_fn.backward(), input_grad=False, per_sample=per_sample)
            norms = per_sample_norms(model.parameters())
        assert norms.shape == (batch,)
        return max(event.cpu_memory_usage for event in prof.events())

    assert largest_allocation("factored") < smallest_layer / 20
    assert largest_allocation(True) >= smallest_layer  # the check sees a materialised one


def test_dropout_in_training_mode_uses_the_forward_mask() -> None:
    """Each example's gradient through its own dropout mask (the one its forward drew; handgrad
    draws it as torch.nn.Dropout does, so the same seed gives it here)."""
    first, second = hn.Linear(4, 6, dtype=torch.float64), hn.Linear(6, 2, dtype=torch.float64)
    model = hn.Sequential(first, hn.ReLU(), hn.Dropout(0.4), second)
    x, target = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    torch.manual_seed(3)
    mask = torch.nn.functional.dropout(torch.ones(7, 6, dtype=torch.float64), 0.4)
    torch.manual_seed(3)
    loss_fn = hn.MSELoss()
    loss_fn(model(x), target)
    model.backward(loss_fn.backward(), per_sample=True)

    def example_loss(w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, x_i: Tensor,
                     m_i: Tensor, t_i: Tensor) -> Tensor:  # fmt: skip
        hidden = torch.relu(x_i @ w1.t() + b1) * m_i
        return ((hidden @ w2.t() + b2 - t_i) ** 2).sum() / target.numel()

    params = [p.detach() for p in (first.weight, first.bias, second.weight, second.bias)]
    expected = torch.func.vmap(
        torch.func.grad(example_loss, argnums=(0, 1, 2, 3)), (None, None, None, None, 0, 0, 0)
    )(*params, x, mask, target)
    for param, reference in zip(
        (first.weight, first.bias, second.weight, second.bias), expected, strict=True
    ):
        assert_matches(param.grad_sample, reference)


@pytest.mark.parametrize("per_sample", [True, "factored"])
def test_flatten_then_layers(per_sample: bool | str) -> None:
    """(N, 2, 3, 4) inputs through Flatten(2) (a sequence of 2 positions), then Linear layers
    acting on each position, then Flatten again."""
    model = hn.Sequential(
        hn.Flatten(2),
        hn.Linear(12, 5, dtype=torch.float64),
        hn.Tanh(),
        hn.Flatten(),
        hn.Linear(10, 3, dtype=torch.float64),
    )
    x = torch.randn(4, 2, 3, 4, dtype=torch.float64)
    target = torch.randint(0, 3, (4,))
    check_against_vmap(model, x, hn.CrossEntropyLoss(), target, 4, per_sample)


def test_grad_sample_of_mixed_modes_adds_up() -> None:
    """A factored backward then a tensor one (and the other way): the sum either way."""
    layer = hn.Linear(3, 2, dtype=torch.float64)
    x, g = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    single = g[:, :, None] * x[:, None, :]
    for first, second in (("factored", True), (True, "factored"), ("factored", "factored")):
        layer.weight.grad_sample = layer.bias.grad_sample = None
        for mode in (first, second):
            layer(x)
            layer.backward(g, per_sample=mode)
        grad_sample = layer.weight.grad_sample
        if isinstance(grad_sample, FactoredGradSample):
            assert second == "factored"
            assert first == "factored"
            grad_sample = grad_sample.materialize()
        assert_matches(grad_sample, 2 * single)
        assert_matches(layer.bias.grad_sample, 2 * g)


# --------------------------------------------------------------- storage kept between batches


def _per_sample_step(model: hn.Module, x: Tensor, target: Tensor) -> Tensor:
    """clear_grad_sample (set_to_none), then a per-sample backward; the first weight's."""
    clear_grad_sample(model.parameters())
    loss_fn = hn.CrossEntropyLoss()
    loss_fn(model(x), target)
    model.backward(loss_fn.backward(), input_grad=False, per_sample=True)
    return model[0].weight.grad_sample


def test_cleared_storage_is_reused_and_the_values_match_vmap() -> None:
    """After clear_grad_sample(set_to_none=True) the next backward writes into the cleared
    tensor (the same one: a weak reference to it still reaches it; no fresh pages), and the
    values are vmap(grad)'s."""
    torch.manual_seed(0)
    model = network([4, 6, 3], hn.Tanh, residual=False)
    x, target = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    last = weakref.ref(_per_sample_step(model, x, target))
    assert held_grad_sample_storage(model.parameters()) == 0  # in use, not spare
    for _ in range(3):
        x = torch.randn(5, 4, dtype=torch.float64)
        expected = vmap_grad_samples(model, hn.CrossEntropyLoss(), x, target, 5)
        clear_grad_sample(model.parameters())
        assert held_grad_sample_storage(model.parameters()) == 5 * (6 * 4 + 3 * 6) * 8
        assert _per_sample_step(model, x, target) is last()
        for name, param in model.named_parameters():
            assert_matches(param.grad_sample, expected[name], f"{name}.grad_sample")
    clear_grad_sample(model.parameters())
    release_grad_sample_storage(model.parameters())
    assert held_grad_sample_storage(model.parameters()) == 0
    _per_sample_step(model, x, target)
    clear_grad_sample(model.parameters())
    release_grad_sample_storage()  # every parameter's
    assert held_grad_sample_storage() == 0


def _on_storage(storage: torch.UntypedStorage) -> Tensor:
    return torch.empty(0, dtype=torch.float64).set_(storage)


KEEPERS: dict[str, tuple[Callable[[Tensor], Any], Callable[[Any], Tensor]]] = {
    # what a user keeps of the old grad_sample, and how to read its values back
    "reference": (lambda t: t, lambda kept: kept),
    "slice": (lambda t: t[1:], lambda kept: kept),
    "view": (lambda t: t.view(-1), lambda kept: kept),
    "detach": (lambda t: t.detach(), lambda kept: kept),
    "numpy": (lambda t: t.numpy(), torch.from_numpy),
    "storage": (lambda t: t.untyped_storage(), _on_storage),
    "list": (lambda t: [t], lambda kept: kept[0]),
}


@pytest.mark.parametrize("kind", list(KEEPERS))
def test_a_kept_grad_sample_is_never_overwritten(kind: str) -> None:
    """Whatever still reaches an old grad_sample's memory when the next backward runs — the
    tensor itself, a view, a NumPy array, its storage — that memory is left alone and
    fresh memory is used; once let go, the reuse resumes."""
    keep, read = KEEPERS[kind]
    torch.manual_seed(1)
    model = network([4, 6, 3], hn.Tanh, residual=False)
    x, target = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    old = _per_sample_step(model, x, target)
    address, last = old.data_ptr(), weakref.ref(old)
    kept = keep(old)
    before = read(kept).clone()
    del old
    new = _per_sample_step(model, 2 * x, target)
    assert new.data_ptr() != address
    assert torch.equal(read(kept), before)  # untouched
    assert not torch.equal(new.reshape(-1)[: before.numel()], before.reshape(-1))
    last = weakref.ref(new)
    del kept, new
    assert _per_sample_step(model, x, target) is last()  # let go of: refilled again


def test_spare_storage_that_does_not_fit_is_dropped() -> None:
    """Another batch size, or a factored backward: the spare is not used and not kept."""
    torch.manual_seed(2)
    model = network([4, 6, 3], hn.Tanh, residual=False)
    x, target = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    _per_sample_step(model, x, target)
    expected = vmap_grad_samples(model, hn.CrossEntropyLoss(), x[:3], target[:3], 3)
    _per_sample_step(model, x[:3], target[:3])
    for name, param in model.named_parameters():
        assert_matches(param.grad_sample, expected[name], f"{name}.grad_sample")
    clear_grad_sample(model.parameters())
    loss_fn = hn.CrossEntropyLoss()
    loss_fn(model(x), target)
    model.backward(loss_fn.backward(), input_grad=False, per_sample="factored")
    assert held_grad_sample_storage(model.parameters()) == 0
    clear_grad_sample(model.parameters())  # factored ones: nothing to keep
    assert held_grad_sample_storage(model.parameters()) == 0


def test_spare_from_inference_mode_or_made_a_leaf_is_not_refilled() -> None:
    """A spare formed under torch.inference_mode (an inference tensor, read-only outside)
    or one someone marked requires_grad would refuse an in-place write: fresh memory."""
    torch.manual_seed(3)
    model = network([4, 6, 3], hn.Tanh, residual=False)
    x, target = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    expected = vmap_grad_samples(model, hn.CrossEntropyLoss(), x, target, 5)
    with torch.inference_mode():
        assert _per_sample_step(model, x, target).is_inference()
    assert not _per_sample_step(model, x, target).is_inference()
    model[0].weight.grad_sample.requires_grad_()
    _per_sample_step(model, x, target)
    for name, param in model.named_parameters():
        assert not param.grad_sample.requires_grad
        assert_matches(param.grad_sample, expected[name], f"{name}.grad_sample")
