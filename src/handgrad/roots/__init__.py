"""Roots of quadratic equations by descent on f(x)², exact to the last bits.

``solve_quadratic(a, b, c)`` finds the roots of a x² + b x + c = 0 for one equation or a batch:
by default with "gauss-newton", the descent on f(x)² whose step η = 1/(2f'(x)²) makes it
Newton's method on f (see :mod:`handgrad.roots.descent`); with ``method="gd", lr=...`` by
gradient descent with a fixed learning rate, each start reporting how it ended
(:class:`StartOutcome`; see :mod:`handgrad.roots.fixed_step`); Newton's method in plain
floating point or the stable closed form for comparison. :class:`RootKind` says what kind of
solution each equation has.
"""

from handgrad.roots.fixed_step import StartOutcome, StartReport
from handgrad.roots.problem import RootKind
from handgrad.roots.quadratic import (
    METHODS,
    QuadraticRoots,
    default_learning_rate,
    format_root,
    solve_quadratic,
    stability_limit,
)

__all__ = [
    "METHODS",
    "QuadraticRoots",
    "RootKind",
    "StartOutcome",
    "StartReport",
    "default_learning_rate",
    "format_root",
    "solve_quadratic",
    "stability_limit",
]
