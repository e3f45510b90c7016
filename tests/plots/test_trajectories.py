"""The optimizer-trajectory picture: every path, the start, the minimum, divergence, the PNG."""

from __future__ import annotations

import io
from typing import Any

import matplotlib.image
import pytest

from handgrad.landscapes.functions2d import FUNCTIONS, Function2D
from handgrad.landscapes.trajectories import Trajectory, run_trajectory
from handgrad.plots.trajectories import display_name, plot_trajectories, save_png

ROSENBROCK = FUNCTIONS["rosenbrock"]
SADDLE = FUNCTIONS["saddle"]


def _run(function: Function2D, name: str, **kwargs: Any) -> Trajectory:
    return run_trajectory(function, name, **kwargs)


def _legend_texts(fig: Any) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


def test_plot_shows_every_path_the_start_and_the_minimum() -> None:
    trajectories = [_run(ROSENBROCK, name, steps=100) for name in ("sgd", "rmsprop", "adam")]
    fig = plot_trajectories(ROSENBROCK, trajectories)
    texts = _legend_texts(fig)
    assert texts[:3] == [
        f"{display_name(t.optimizer)} (lr {t.lr:g}): f = {t.final_value:.3g}" for t in trajectories
    ]
    assert texts[3:] == ["start", "minimum"]
    ax = fig.axes[0]
    drawn = {line.get_label(): line.get_xydata() for line in ax.get_lines()}
    path = drawn[texts[2]]
    assert path.tolist() == trajectories[2].points.tolist()
    assert ax.get_xlim() == ROSENBROCK.window[0]
    assert ax.get_ylim() == ROSENBROCK.window[1]
    # Log-spaced contour levels: constant ratio between neighbours.
    levels = ax.collections[0].levels
    ratios = levels[1:] / levels[:-1]
    assert ratios == pytest.approx([ratios[0]] * len(ratios))
    assert ratios[0] > 1.5


def test_plot_of_the_saddle_has_even_levels_and_marks_the_saddle_point() -> None:
    fig = plot_trajectories(SADDLE, [_run(SADDLE, "adam", steps=50)])
    texts = _legend_texts(fig)
    assert texts[1:] == ["start", "saddle point"]
    levels = fig.axes[0].collections[0].levels
    assert levels.min() < 0 < levels.max()
    assert (levels[1:] - levels[:-1]) == pytest.approx([levels[1] - levels[0]] * (len(levels) - 1))


def test_plot_labels_a_diverged_run() -> None:
    diverged = _run(ROSENBROCK, "sgd", lr=0.1, steps=100)
    fig = plot_trajectories(ROSENBROCK, [diverged])
    assert _legend_texts(fig)[0] == f"SGD (lr 0.1): diverged at step {diverged.diverged_at}"


def test_save_png_writes_a_readable_image(tmp_path: Any) -> None:
    fig = plot_trajectories(FUNCTIONS["himmelblau"], [_run(FUNCTIONS["himmelblau"], "adam")])
    out = tmp_path / "sub" / "himmelblau.png"
    save_png(fig, out)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = matplotlib.image.imread(io.BytesIO(data), format="png")
    assert image.ndim == 3
    assert image.shape[0] > 500
    assert image.shape[1] > 500
    assert image[..., :3].std() > 0.1  # a picture, not a blank canvas
    assert [p.name for p in out.parent.iterdir()] == ["himmelblau.png"]  # no temporary left
