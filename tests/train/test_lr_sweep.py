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
