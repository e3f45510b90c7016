"""The privacy spent: ε at a given δ, from Opacus's accountants (not computed here).

DP-SGD with Poisson sampling rate q and noise multiplier σ is a subsampled Gaussian
mechanism; composing T of its steps and converting to (ε, δ)-DP is delicate numerical work
that a well-kept library does: this module only hands the schedule to Opacus's accountant
(Rényi DP by default, Mironov 2017 / Mironov et al. 2019; "prv", Gopi et al. 2021, too).
Opacus is an optional extra: ``pip install "handgrad[privacy]"``.
"""

from __future__ import annotations

from typing import Any

from handgrad.privacy.sampling import check_sample_rate

MECHANISMS = ("rdp", "prv")  # Opacus calls its "gdp" experimental (it can underestimate ε)


def _create(mechanism: str) -> Any:
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
    try:
        from opacus.accountants import create_accountant
    except ImportError as error:
        raise ImportError(
            f"the privacy accountant needs Opacus: pip install 'handgrad[privacy]' ({error})"
        ) from error
    return create_accountant(mechanism)


class PrivacyAccountant:
    """Keeps the schedule of DP-SGD steps taken and reports the ε they spend.

    ``step(noise_multiplier, sample_rate, steps=1)`` records steps; ``epsilon(delta)``
    composes them all.
    """

    def __init__(self, mechanism: str = "rdp") -> None:
        self.mechanism = mechanism
        self._accountant = _create(mechanism)

    def step(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        if not isinstance(noise_multiplier, int | float) or not noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be a number ≥ 0, got {noise_multiplier!r}")
        check_sample_rate(sample_rate)
        for _ in range(steps):
            self._accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """(noise multiplier, sample rate, steps) for each stretch of the schedule."""
        return list(self._accountant.history)

    def epsilon(self, delta: float) -> float:
        """ε such that the steps so far are (ε, δ)-differentially private (0 before any)."""
        if not isinstance(delta, int | float) or not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        if not self._accountant.history:
            return 0.0
        return float(self._accountant.get_epsilon(delta=delta))


def epsilon(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, mechanism: str = "rdp"
) -> float:
    """ε at δ after ``steps`` DP-SGD steps of one noise multiplier and sample rate."""
    accountant = PrivacyAccountant(mechanism)
    accountant.step(noise_multiplier, sample_rate, steps)
    return accountant.epsilon(delta)
