"""Optimizer landscapes: two-dimensional test functions and the paths optimizers take on them.

- :mod:`~handgrad.landscapes.functions2d` — Rosenbrock, Beale, a saddle and Himmelblau, each
  with its gradient written by hand (:data:`FUNCTIONS`, :func:`get_function`);
- :mod:`~handgrad.landscapes.trajectories` — :func:`run_trajectories`: each optimizer's path
  from one start, stopped and reported where it leaves the finite numbers.

The pictures are :mod:`handgrad.plots.trajectories`'; ``handgrad trajectories`` draws them.
"""

from __future__ import annotations

from handgrad.landscapes.functions2d import FUNCTIONS, Function2D, get_function
from handgrad.landscapes.trajectories import Trajectory, run_trajectories, run_trajectory

__all__ = ["FUNCTIONS", "Function2D", "Trajectory", "get_function", "run_trajectories",
           "run_trajectory"]
