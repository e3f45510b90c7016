"""The model registry: specs parsed and validated, networks built per task, new models added."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import handgrad.nn as hnn
from handgrad.train import models
from handgrad.train.models import (
    ModelOption,
    ModelSpec,
    build_model,
    parse_model,
    register_model,
    resolve_model,
)
from handgrad.train.tasks import cubic_task, load_task


def layer_types(model: torch.nn.Module) -> list[str]:
    return [type(layer).__name__ for layer in model.children()]


def test_the_default_mlp_is_the_tasks_network() -> None:
    task = cubic_task()
    model = build_model("mlp", task, seed=0, backend="torch")
    assert layer_types(model) == ["Linear", "ReLU", "Linear"]
    assert [tuple(p.shape) for p in model.parameters()] == [(100, 1), (100,), (1, 100), (1,)]
    # Same weights as the task's own network (the one every earlier run trained).
    for ours, theirs in zip(model.parameters(), task.reference_model(0).parameters(),
                            strict=True):
        assert torch.equal(ours, theirs)
    assert str(resolve_model("mlp", task)) == "mlp:activation=relu,dropout=0,hidden=100"


def test_digits_default_width_is_256() -> None:
    task = load_task("digits")
    assert resolve_model("mlp", task).options["hidden"] == (256,)


def test_the_assignments_network_from_a_spec() -> None:
    task = cubic_task()
    spec = parse_model("mlp:hidden=100x100,activation=sigmoid,dropout=0.1")
    assert spec == ModelSpec("mlp", {"hidden": (100, 100), "activation": "sigmoid",
                                     "dropout": 0.1})
    model = build_model(spec, task, seed=3)
    assert layer_types(model) == ["Linear", "Sigmoid", "Dropout", "Linear", "Sigmoid",
                                  "Dropout", "Linear"]
    assert isinstance(model[0], hnn.Linear)
    assert model[2].p == 0.1
    twin = build_model(spec, task, seed=3, backend="torch")
    for ours, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_no_hidden_layer_is_a_linear_model() -> None:
    model = build_model("mlp:hidden=none", cubic_task(), seed=0, backend="torch")
    assert layer_types(model) == ["Linear"]


def test_a_table_from_toml_and_a_string_give_the_same_spec() -> None:
    table = {"name": "mlp", "hidden": [100, 100], "activation": "tanh"}
    assert parse_model(table) == parse_model("mlp:hidden=100x100,activation=tanh")
    assert parse_model(parse_model(table)) == parse_model(table)


def test_weights_follow_the_seed_and_leave_the_global_rng_alone() -> None:
    task = cubic_task()
    before = torch.get_rng_state()
    a, b, c = (build_model("mlp:hidden=8x8", task, seed=s, backend="torch") for s in (5, 5, 6))
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a[0].weight, c[0].weight)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cnnx", "unknown model 'cnnx'; expected one of: "),
        ("mlp:width=3", "model mlp has no option 'width'; its options are: activation, "
                        "dropout, hidden"),
        ("mlp:hidden=abc", "model mlp: hidden='abc': expected positive integer widths"),
        ("mlp:hidden=100x0", "model mlp: hidden='100x0': expected positive integer widths"),
        ("mlp:dropout=1", "model mlp: dropout='1': expected a probability 0 <= p < 1"),
        ("mlp:dropout=-0.1", "expected a probability"),
        ("mlp:activation=swish", "expected an activation, one of: elu, gelu, identity, "
                                 "leakyrelu, relu, sigmoid"),
        ("mlp:hidden", "expected NAME:key=value,key=value, got the item 'hidden'"),
        ("mlp:hidden=3,hidden=4", "option 'hidden' given twice"),
    ],
)
def test_bad_specs_are_one_line_errors_that_list_what_exists(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_model(spec)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_registered_model_is_built_and_listed() -> None:
    seen: dict[str, Any] = {}

    def wide_linear(task: Any, options: dict[str, Any]) -> torch.nn.Module:
        seen.update(options)
        return torch.nn.Sequential(torch.nn.Linear(task.num_inputs, task.num_outputs,
                                                   bias=options["bias"]))

    register_model(
        "test-linear", wide_linear,
        options={"bias": ModelOption(lambda v: str(v).lower() == "true", "a bias")},
        defaults=lambda task: {"bias": True}, help="one linear layer",
    )
    try:
        assert "test-linear" in models.model_names()
        assert "test-linear (bias): one linear layer" in models.describe_models()
        model = build_model("test-linear:bias=false", cubic_task(), seed=0)
        assert seen == {"bias": False}
        assert model[0].bias is None
        assert isinstance(model[0], hnn.Linear)
    finally:
        models._REGISTRY.pop("test-linear")


def test_register_model_refuses_odd_names() -> None:
    with pytest.raises(ValueError, match="model name must be lowercase"):
        register_model("My Model", models.mlp, options={}, defaults=dict, help="")
