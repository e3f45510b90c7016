"""Differentially private training by hand: per-sample gradients, clipping, noise, ε.

A handgrad backward holds every example's contribution to every parameter gradient just
before the batch sum; ``model.backward(grad_output, per_sample=True)`` keeps them
(``p.grad_sample``, Opacus's attribute; :mod:`handgrad.nn.per_sample`). On top of them:

- :class:`DPOptimizer` — DP-SGD around any optimizer: clip each example's whole gradient to
  ``max_grad_norm``, sum, add Gaussian noise of std ``noise_multiplier · max_grad_norm``,
  divide by the expected batch size (Opacus's semantics);
- :func:`poisson_batches` — the sampling the privacy analysis assumes;
- :class:`PrivacyAccountant` / :func:`epsilon` — ε at δ, from Opacus's accountant (an optional
  extra: ``pip install "handgrad[privacy]"``);
- :func:`per_sample_norms`, :func:`clip_factors`, :func:`clipped_sum` — the clipping pieces.

A DP-SGD step::

    optimizer = DPOptimizer(Adam(model.parameters()), noise_multiplier=1.1,
                            max_grad_norm=1.0, expected_batch_size=256)
    for batch in poisson_batches(len(x), sample_rate=256 / len(x)):
        optimizer.zero_grad()
        loss = loss_fn(model(x[batch]), y[batch])
        model.backward(loss_fn.backward(), input_grad=False, per_sample="factored")
        optimizer.step()
"""

from handgrad.privacy.accountant import PrivacyAccountant, epsilon
from handgrad.privacy.clipping import clip_factors, clipped_sum, per_sample_norms
from handgrad.privacy.optimizer import DPOptimizer
from handgrad.privacy.sampling import poisson_batches

__all__ = [
    "DPOptimizer",
    "PrivacyAccountant",
    "clip_factors",
    "clipped_sum",
    "epsilon",
    "per_sample_norms",
    "poisson_batches",
]
