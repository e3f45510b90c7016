"""The ``cnn`` model of ``handgrad train --model cnn``: a small convolutional network for
square one-channel images given as rows of pixels (scikit-learn's 8×8 digits).

    Unflatten to (1, S, S)
    → [Conv2d 3×3 (padding 1, no bias) → BatchNorm2d → ReLU → MaxPool2d 2] × 2
    → Flatten → Linear to the classes

The convolutions' biases are left out because the batch norm after each subtracts the mean
anyway. Built in torch.nn and converted by :func:`handgrad.nn.from_torch` like every model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from handgrad.train.models import ModelOption, register_model, widths

if TYPE_CHECKING:
    from handgrad.train.tasks import Task

nn = torch.nn


def image_side(task: Task) -> int:
    """S for a task whose inputs are S·S pixels with S divisible by 4 (two 2×2 poolings);
    a ValueError naming the task otherwise."""
    side = math.isqrt(task.num_inputs)
    if task.kind != "classification" or side * side != task.num_inputs or side % 4:
        raise ValueError(
            f"model cnn needs a classification task whose inputs are square images with a "
            f"side divisible by 4 (like digits, 8×8); task {task.name} has "
            f"{task.num_inputs} {task.kind} inputs"
        )
    return side


def cnn(task: Task, options: dict[str, Any]) -> torch.nn.Sequential:
    """Two conv–batchnorm–relu–pool stages of ``channels`` (two widths) and a linear head."""
    side = image_side(task)
    channels = options["channels"]
    if len(channels) != 2:
        raise ValueError(f"model cnn: channels takes two widths, like 16x32, got {channels}")
    first, second = channels
    return nn.Sequential(
        nn.Unflatten(1, (1, side, side)),
        nn.Conv2d(1, first, 3, padding=1, bias=False), nn.BatchNorm2d(first), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(first, second, 3, padding=1, bias=False), nn.BatchNorm2d(second), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(second * (side // 4) ** 2, task.num_outputs),
    )  # fmt: skip


register_model(
    "cnn",
    cnn,
    options={"channels": ModelOption(widths, "the two stages' channels (default: 32x64)")},
    defaults=lambda task: {"channels": (32, 64)},
    help="two conv-batchnorm-relu-pool stages and a linear head, for square images (digits)",
)
