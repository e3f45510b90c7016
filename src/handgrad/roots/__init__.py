"""Roots of quadratic equations by gradient descent, exact to the last bits.

``solve_quadratic(a, b, c)`` finds the roots of a x² + b x + c = 0 for one equation or a batch
by gradient descent on f(x)² (see :mod:`handgrad.roots.descent`), Newton's method or the stable
closed form; :class:`RootKind` says what kind of solution each equation has.
"""

from handgrad.roots.problem import RootKind
from handgrad.roots.quadratic import METHODS, QuadraticRoots, format_root, solve_quadratic

__all__ = ["METHODS", "QuadraticRoots", "RootKind", "format_root", "solve_quadratic"]
