"""The dp_accounting adapter: same numbers as the library, calibration within the target."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.adapters.accounting import RDP_ORDERS, RdpAccountant
from phalanx.core.errors import PrivacyError
from phalanx.core.privacy import PrivacyEvent


@settings(max_examples=25, deadline=None)
@given(
    z=st.floats(0.5, 5.0),
    q=st.floats(0.001, 1.0),
    steps=st.integers(1, 500),
    delta=st.sampled_from([1e-5, 1e-6, 1e-3]),
)
def test_epsilon_equals_the_librarys_own(z: float, q: float, steps: int, delta: float) -> None:
    ours = RdpAccountant().epsilon([PrivacyEvent("gaussian", z, q, steps)], delta)
    lib = dp_accounting.rdp.RdpAccountant(orders=RDP_ORDERS)
    inner = dp_accounting.GaussianDpEvent(z)
    event = inner if q >= 1.0 else dp_accounting.PoissonSampledDpEvent(q, inner)
    lib.compose(event, steps)
    assert ours == pytest.approx(lib.get_epsilon(delta), rel=1e-12)


def test_composition_of_different_events_is_one_ledger() -> None:
    a = PrivacyEvent("gaussian", 1.1, 0.1, 40)
    b = PrivacyEvent("zcdp", rho=0.05, steps=3)
    lib = dp_accounting.rdp.RdpAccountant(orders=RDP_ORDERS)
    lib.compose(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.1)), 80)
    lib.compose(dp_accounting.ZCDpEvent(0.05), 3)
    assert RdpAccountant().epsilon([a, b, a], 1e-5) == pytest.approx(lib.get_epsilon(1e-5))
    assert RdpAccountant().epsilon([], 1e-5) == 0.0


@pytest.mark.parametrize(
    ("eps", "q", "steps"), [(1.0, 0.05, 200), (8.0, 0.1, 200), (10.0, 1.0, 20), (4.0, 0.01, 5000)]
)
def test_calibration_meets_the_target_tightly(eps: float, q: float, steps: int) -> None:
    acc = RdpAccountant()
    z = acc.noise_multiplier(epsilon=eps, delta=1e-5, sampling_rate=q, steps=steps)
    assert acc.epsilon([PrivacyEvent("gaussian", z, q, steps)], 1e-5) <= eps
    # 1 % less noise would overshoot: the multiplier is not wastefully large
    assert acc.epsilon([PrivacyEvent("gaussian", 0.99 * z, q, steps)], 1e-5) > eps


def test_bad_inputs_become_privacy_errors() -> None:
    acc = RdpAccountant()
    with pytest.raises(PrivacyError, match="delta"):
        acc.epsilon([PrivacyEvent("gaussian", 1.0)], 0.0)
    with pytest.raises(PrivacyError, match="target epsilon"):
        acc.noise_multiplier(epsilon=-1.0, delta=1e-5, sampling_rate=0.1, steps=10)
    with pytest.raises(PrivacyError, match="sampling_rate"):
        acc.noise_multiplier(epsilon=1.0, delta=1e-5, sampling_rate=0.0, steps=10)
    assert math.isfinite(acc.noise_multiplier(epsilon=50, delta=1e-5, sampling_rate=1, steps=1))
