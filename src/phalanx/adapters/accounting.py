"""Privacy accounting with Google's ``dp_accounting`` library (Rényi DP).

Implements the :class:`~phalanx.ports.Accountant` port. A Gaussian event with sampling rate
``q < 1`` is a ``PoissonSampledDpEvent`` around a ``GaussianDpEvent`` (amplification by Poisson
subsampling, Mironov, Talwar and Zhang, "Rényi Differential Privacy of the Sampled Gaussian
Mechanism", 2019); a zCDP event is a ``ZCDpEvent`` (Bun and Steinke, TCC 2016). Events are
composed in RDP (Mironov, "Rényi Differential Privacy", CSF 2017) and converted to
``(epsilon, delta)`` with the library's conversion. Calibration searches the noise multiplier
with the library's ``calibrate_dp_mechanism``. Library errors become
:class:`~phalanx.core.errors.PrivacyError`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import dp_accounting
from dp_accounting.rdp import RdpAccountant as _Rdp

from phalanx.core.errors import PrivacyError
from phalanx.core.privacy.spec import PrivacyEvent

RDP_ORDERS: tuple[float, ...] = (
    *(float(a) for a in range(2, 64)),
    64.0, 80.0, 96.0, 128.0, 256.0, 512.0,
)  # fmt: skip
"""RDP orders tracked: integers, whose Poisson-subsampled Gaussian bound dp_accounting computes
in closed form. Its default list adds fractional orders, evaluated by a series that is slow and
often fails to converge (it then drops the order with a warning); they only tighten epsilons
well below 1."""


def make_library_accountant() -> _Rdp:
    """A fresh ``dp_accounting`` RDP accountant over :data:`RDP_ORDERS`."""
    return _Rdp(orders=RDP_ORDERS)


def to_dp_event(event: PrivacyEvent) -> dp_accounting.DpEvent:
    """The ``dp_accounting`` event of one :class:`PrivacyEvent` (steps included)."""
    one: dp_accounting.DpEvent
    if event.kind == "zcdp":
        one = dp_accounting.ZCDpEvent(rho=event.rho, xi=event.xi)
    else:
        gaussian = dp_accounting.GaussianDpEvent(event.noise_multiplier)
        one = (
            gaussian
            if event.sampling_rate >= 1.0
            else dp_accounting.PoissonSampledDpEvent(event.sampling_rate, gaussian)
        )
    return dp_accounting.SelfComposedDpEvent(one, int(event.steps))


def _check_delta(delta: float) -> float:
    if not (0.0 < delta < 1.0):
        raise PrivacyError(f"delta must be in (0, 1); found {delta}")
    return float(delta)


class RdpAccountant:
    """The :class:`~phalanx.ports.Accountant` on ``dp_accounting.rdp.RdpAccountant``.

    Neighbouring datasets differ by adding or removing one record (record mode) or one
    participant's whole data (client modes).
    """

    name = "rdp (dp_accounting)"

    def epsilon(self, events: Sequence[PrivacyEvent], delta: float) -> float:
        """Composed epsilon of ``events`` at ``delta``."""
        delta = _check_delta(delta)
        counts = Counter(e for e in events if e.steps > 0)
        if not counts:
            return 0.0
        return _epsilon(tuple(sorted(counts.items(), key=repr)), delta)

    def noise_multiplier(
        self, *, epsilon: float, delta: float, sampling_rate: float, steps: int
    ) -> float:
        """Smallest noise multiplier: ``steps`` sampled Gaussians within ``(epsilon, delta)``."""
        delta = _check_delta(delta)
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise PrivacyError(f"target epsilon must be > 0; found {epsilon}")
        if not 0.0 < sampling_rate <= 1.0 or steps < 1:
            raise PrivacyError(
                f"calibration needs sampling_rate in (0, 1] and steps >= 1; found"
                f" {sampling_rate}, {steps}"
            )
        return _calibrate(float(epsilon), delta, float(sampling_rate), int(steps))


@lru_cache(maxsize=4096)
def _epsilon(counted: tuple[tuple[PrivacyEvent, int], ...], delta: float) -> float:
    acc = make_library_accountant()
    try:
        for event, count in counted:
            acc.compose(to_dp_event(event), count)
        return float(acc.get_epsilon(delta))
    except (ValueError, dp_accounting.UnsupportedEventError) as exc:
        raise PrivacyError(f"privacy accounting failed: {exc}") from None


@lru_cache(maxsize=1024)
def _calibrate(epsilon: float, delta: float, q: float, steps: int) -> float:
    def make_event(z: float) -> dp_accounting.DpEvent:
        return to_dp_event(PrivacyEvent("gaussian", z, sampling_rate=q, steps=steps))

    try:
        z = dp_accounting.calibrate_dp_mechanism(
            make_library_accountant,
            make_event,
            epsilon,
            delta,
            dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
            tol=1e-4,
        )
    except (ValueError, dp_accounting.mechanism_calibration.NoBracketIntervalFoundError) as exc:
        raise PrivacyError(
            f"no noise multiplier reaches epsilon {epsilon} at delta {delta} for {steps} steps"
            f" at sampling rate {q}: {exc}",
            hint="raise the target epsilon or lower the number of rounds/steps",
        ) from None
    # the search may stop a hair on the wrong side of the target; step up until within it
    z = float(z)
    while _epsilon(((PrivacyEvent("gaussian", z, q, steps), 1),), delta) > epsilon:
        z *= 1.0 + 1e-4
    return z
