"""handgrad: every gradient written by hand, verified against PyTorch.

Subpackages:

- :mod:`handgrad.nn` — layers, activations and losses with hand-written backward passes;
- :mod:`handgrad.optim` — the torch.optim family, written by hand;
- :mod:`handgrad.roots` — roots of quadratic equations by gradient descent;
- :mod:`handgrad.train` — training loops, tasks, checkpoints;
- :mod:`handgrad.check` — verification against torch.autograd and finite differences.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
