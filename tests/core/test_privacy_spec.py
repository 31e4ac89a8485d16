"""Task DP parameters, budgets, events and the distributed discrete Gaussian's cost."""

from __future__ import annotations

import math

import numpy as np
import pytest

from phalanx.core.errors import PrivacyError
from phalanx.core.privacy import (
    Budget,
    DPTaskSpec,
    PrivacyEvent,
    add_noise_share,
    ddgauss_rho,
    integer_sensitivity,
    local_sigma,
    record_event,
    record_schedule,
)


def test_spec_from_config_round_trip() -> None:
    spec = DPTaskSpec.from_config(
        {"dp": {"mode": "record", "clip": 1.0, "target_epsilon": 8, "rounds": 20}}
    )
    assert spec is not None and spec.noise_multiplier is None and spec.rounds == 20
    assert DPTaskSpec.from_config({"model": {}}) is None


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"mode": "local", "clip": 1.0, "noise_multiplier": 1.0}, "dp.mode must be one of"),
        ({"mode": "record", "noise_multiplier": 1.0}, "lacks the key 'clip'"),
        ({"mode": "record", "clip": -1.0, "noise_multiplier": 1.0}, "dp.clip"),
        ({"mode": "client-central", "clip": 1.0, "target_epsilon": 3.0}, "needs a noise_mult"),
        ({"mode": "record", "clip": 1.0, "noise_multiplier": 1.0, "delta": 2}, "dp.delta"),
        ({"mode": "record", "clip": "x", "noise_multiplier": 1.0}, "malformed value"),
    ],
)
def test_bad_spec_is_refused_with_the_key(raw: dict[str, object], match: str) -> None:
    with pytest.raises(PrivacyError, match=match):
        DPTaskSpec.from_config({"dp": raw})


def test_record_schedule_sees_each_example_once_per_epoch_in_expectation() -> None:
    q, steps = record_schedule(1000, 256, 2)
    assert q == 0.256 and steps == 2 * 4
    assert record_schedule(100, 256, 1) == (1.0, 1)
    with pytest.raises(PrivacyError, match="at least one"):
        record_schedule(0, 256, 1)
    spec = DPTaskSpec(mode="record", clip=1.0, noise_multiplier=1.1)
    assert record_event(spec, 1000, 256, 2) == PrivacyEvent("gaussian", 1.1, 0.256, 8)


def test_budget_and_event_validation() -> None:
    assert Budget(math.inf, 1e-5).epsilon == math.inf
    with pytest.raises(PrivacyError, match="epsilon"):
        Budget(0.0, 1e-5)
    with pytest.raises(PrivacyError, match="delta"):
        Budget(1.0, 0.0)
    with pytest.raises(PrivacyError, match="noise multiplier"):
        PrivacyEvent("gaussian", 0.0)
    ev = PrivacyEvent("zcdp", rho=0.1, xi=0.0, steps=3)
    assert PrivacyEvent.from_dict(ev.to_dict()) == ev


def test_ddgauss_rho_tends_to_the_gaussian_for_large_sigma() -> None:
    """tau vanishes for sigma >> 1: rho -> Delta^2 / (2 m sigma^2), the continuous value."""
    l2, l1 = integer_sensitivity(clip=1.0, scale=2**10, dim=100)
    sigma = local_sigma(1.0, 1.0, 2**10, participants=10)
    rho = ddgauss_rho(sigma, 10, l2, l1, 100)
    assert math.isclose(rho, l2**2 / (2 * 10 * sigma**2), rel_tol=1e-9)
    # a small sigma pays the tau terms
    assert ddgauss_rho(0.3, 10, 3.0, 3.0, 100) > 9.0 / (2 * 10 * 0.09)


def test_noise_shares_add_up(rng: np.random.Generator) -> None:
    encoded = np.arange(50_000, dtype=np.int64)
    total = sum(add_noise_share(encoded, 4.0, rng) - encoded for _ in range(9))
    assert abs(np.std(total) - 12.0) < 0.2  # 9 shares of sigma 4: std 12
    with pytest.raises(PrivacyError, match="integer-encoded"):
        add_noise_share(np.ones(3), 1.0, rng)  # type: ignore[arg-type]
