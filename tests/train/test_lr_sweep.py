"""The learning-rate sweep before a comparison: the grid, the held-out split, the choice, the
sentence that says how it was made, and the comparison run at the chosen rates."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from handgrad.train.compare import TrainConfig, compare_optimizers
from handgrad.train.lr_sweep import (
    SWEEP_FACTORS,
    SweepResult,
    starting_rate,
    sweep_learning_rates,
    validation_task,
    with_chosen_rates,
)
from tests.train.test_compare import small_task

CONFIG = TrainConfig(epochs=3, batch_size=16, seed=4, backend="handgrad")


def test_the_validation_split_is_the_end_of_the_training_split() -> None:
    task = small_task()
    held = validation_task(task)
    assert len(held.x_train) + len(held.x_test) == len(task.x_train)
    assert len(held.x_test) == round(0.2 * len(task.x_train))
    assert torch.equal(held.x_test, task.x_train[-len(held.x_test):])
    with pytest.raises(ValueError, match="fraction"):
        validation_task(task, 1.0)


def test_the_starting_rate_is_the_given_then_the_tuned_then_the_own() -> None:
    task = small_task()
    assert starting_rate("adam", task, 0.5) == 0.5
    assert starting_rate("adam", task) == task.default_lr("adam")
    assert starting_rate("lion", task) == task.default_lr("lion")
    assert starting_rate("rprop", task) == 0.01  # no tuned rate: torch's own default


def test_the_sweep_chooses_the_lowest_validation_loss_and_says_so() -> None:
    task = small_task()
    config = dataclasses.replace(CONFIG, lr=0.01)
    (result,) = sweep_learning_rates(task, ["adam"], config)
    rates = [lr for lr, _ in result.candidates]
    assert rates == pytest.approx([0.01 * f for f in SWEEP_FACTORS])
    losses = [loss for _, loss in result.candidates]
    assert result.chosen == rates[losses.index(min(losses))]
    # each score is the run's loss on the held-out part of the training split
    run = compare_optimizers(validation_task(task), ["adam"],
                             dataclasses.replace(config, lr=rates[2])).runs[0]  # fmt: skip
    assert losses[2] == run.history[-1].test_loss
    text = result.describe()
    assert text.startswith(f"adam: lr {result.chosen:.3g}, the lowest validation loss")
    assert "3 epochs with seed 4 on 80% of the training split" in text


def test_a_diverging_rate_scores_infinity_and_is_named() -> None:
    (result,) = sweep_learning_rates(small_task(), ["sgd"], dataclasses.replace(CONFIG, lr=30.0),
                                     factors=(0.001, 100.0))  # fmt: skip
    assert math.isinf(result.candidates[1][1])
    assert result.chosen == pytest.approx(0.03)
    assert "(3e+03 diverged)" in result.describe()


def test_the_comparison_then_runs_each_optimizer_at_its_chosen_rate() -> None:
    results = [SweepResult("adam", ((0.02, 1.0),), 0.02, 3, 4),
               SweepResult("lion", ((0.003, 1.0),), 0.003, 3, 4)]
    task = with_chosen_rates(small_task(), results, batch_size=16)
    assert task.defaults.batch_size == 16
    comparison = compare_optimizers(task, "adam,lion", CONFIG)
    assert [run.lr for run in comparison.runs] == [0.02, 0.003]


def test_a_sweep_round_trips_through_json_with_diverged_as_null() -> None:
    result = SweepResult("sgd", ((0.1, 0.5), (1.0, math.inf)), 0.1, 3, 4)
    document = result.as_dict()
    assert document["candidates"] == [{"lr": 0.1, "validation_loss": 0.5},
                                      {"lr": 1.0, "validation_loss": None}]
    assert document["validation_fraction"] == 0.2
    assert SweepResult.from_dict(document) == result
    with pytest.raises(ValueError, match="not a learning-rate sweep"):
        SweepResult.from_dict({"optimizer": "sgd"})


def test_a_choice_at_the_edge_of_the_grid_is_said() -> None:
    edge = SweepResult("sgd", ((0.1, 0.5), (1.0, 0.4)), 1.0, 3, 4)
    inside = SweepResult("sgd", ((0.1, 0.5), (0.3, 0.3), (1.0, 0.4)), 0.3, 3, 4)
    assert "at the edge of the grid" in edge.describe()
    assert "edge" not in inside.describe()


def test_the_sweep_keeps_each_optimizers_own_arguments_and_refuses_a_given_rate() -> None:
    task = small_task()
    options = {"sgd": {"momentum": 0.5}, "adam": {"betas": (0.8, 0.9)}}
    config = dataclasses.replace(CONFIG, lr=0.01, options=options)
    (result,) = sweep_learning_rates(task, ["adam"], config, factors=(1.0,))
    alone = dataclasses.replace(config, options={"adam": {"betas": (0.8, 0.9)}})
    run = compare_optimizers(validation_task(task), ["adam"], alone).runs[0]
    assert result.candidates[0][1] == run.history[-1].test_loss
    given = dataclasses.replace(CONFIG, options={"sgd": {"lr": 0.1}})
    with pytest.raises(ValueError, match="learning rate of sgd is given in options"):
        sweep_learning_rates(task, ["sgd", "adam"], given)


def test_the_comparison_records_how_each_rate_was_chosen() -> None:
    sweep = SweepResult("adam", ((0.02, 1.0),), 0.02, 3, 4)
    task = with_chosen_rates(small_task(), [sweep], batch_size=16)
    config = dataclasses.replace(CONFIG, lr_sweep=(sweep,), options={"sgd": {"lr": 0.1}})
    comparison = compare_optimizers(task, "adam,sgd,lion", config)
    assert [run.lr_source for run in comparison.runs] == ["swept", "option", "default"]
    assert comparison.config["lr_sweep"] == [sweep.as_dict()]
    assert [entry["lr_source"] for entry in comparison.config["optimizers"]] == [
        "swept", "option", "default"]
    given = compare_optimizers(small_task(), "adam", dataclasses.replace(CONFIG, lr=0.01))
    assert given.runs[0].lr_source == "given"
