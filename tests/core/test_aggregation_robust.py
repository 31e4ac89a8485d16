"""Robust aggregators: permutation invariance, staying in the honest range, known answers,
errors, state, and each rule's own report."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.aggregation import (
    ROBUST_ALGORITHMS,
    CenteredClipping,
    CoordinateMedian,
    FLTrust,
    Krum,
    MultiKrum,
    NormBound,
    ServerAlgorithm,
    TrimmedMean,
    make_algorithm,
)
from phalanx.core.aggregation import robust_rules as rules
from phalanx.core.errors import AggregationError, ConfigError
from phalanx.core.types import ParticipantId, Update, Weights

SHAPES = [(3, 2), (2,)]


def update(weights: Weights, who: str, n: int = 10) -> Update:
    return Update(ParticipantId(who), 1, weights, n, "hash")


def zeros() -> Weights:
    return [np.zeros(s, dtype=np.float32) for s in SHAPES]


def flat(weights: Weights) -> np.ndarray:
    return np.concatenate([np.ravel(w) for w in weights]).astype(np.float64)


def build(name: str) -> ServerAlgorithm:
    return make_algorithm(name)


@st.composite
def rounds(draw: st.DrawFn) -> tuple[list[Weights], list[int], Weights]:
    n = draw(st.integers(3, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e2]))
    x = [(rng.standard_normal(s) * scale).astype(np.float32) for s in SHAPES]
    ws = [
        [(w + rng.standard_normal(w.shape) * scale).astype(np.float32) for w in x] for _ in range(n)
    ]
    perm = draw(st.permutations(list(range(n))))
    return ws, list(perm), x


@pytest.mark.parametrize("name", sorted(ROBUST_ALGORITHMS))
@settings(max_examples=25, deadline=None)
@given(case=rounds())
def test_every_robust_rule_is_permutation_invariant(
    name: str, case: tuple[list[Weights], list[int], Weights]
) -> None:
    ws, perm, x = case
    ups = [update(w, f"org-{i}") for i, w in enumerate(ws)]
    a = build(name).aggregate(x, ups)
    b = build(name).aggregate(x, [ups[i] for i in perm])
    for u, v in zip(a, b, strict=True):
        assert u.dtype == np.float32
        np.testing.assert_array_equal(u, v)


@st.composite
def attacked(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Honest rows in [-1, 1], then f < n/2 attacker rows with arbitrary (huge) values."""
    n_honest = draw(st.integers(3, 8))
    f = draw(st.integers(0, n_honest - 1))
    d = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    honest = rng.uniform(-1, 1, size=(n_honest, d))
    magnitude = draw(st.sampled_from([1.0, 1e3, 1e9]))
    evil = rng.choice([-1.0, 1.0], size=(f, d)) * magnitude
    return honest, evil


@settings(max_examples=80, deadline=None)
@given(attacked())
def test_median_stays_within_the_honest_range(case: tuple[np.ndarray, np.ndarray]) -> None:
    honest, evil = case
    centre = rules.coordinate_median(np.vstack([honest, evil]))
    assert np.all(centre >= honest.min(axis=0) - 1e-12)
    assert np.all(centre <= honest.max(axis=0) + 1e-12)


@settings(max_examples=80, deadline=None)
@given(attacked())
def test_trimmed_mean_with_enough_trimming_stays_within_the_honest_range(
    case: tuple[np.ndarray, np.ndarray],
) -> None:
    honest, evil = case
    n = len(honest) + len(evil)
    ratio = len(evil) / n
    centre, _ = rules.trimmed_mean(np.vstack([honest, evil]), ratio)
    assert rules.trim_count(n, ratio) == len(evil)
    assert np.all(centre >= honest.min(axis=0) - 1e-9)
    assert np.all(centre <= honest.max(axis=0) + 1e-9)


def test_krum_never_picks_a_far_outlier_and_multi_krum_drops_the_attackers() -> None:
    rng = np.random.default_rng(1)
    honest = rng.normal(0, 0.1, size=(8, 20))
    evil = np.full((2, 20), 50.0)
    deltas = np.vstack([honest, evil])
    centre, scores, mask, f = rules.multi_krum(deltas, byzantine=2, select=0)
    assert f == 2
    assert mask[:8].sum() == 8 and mask[8:].sum() == 0
    np.testing.assert_allclose(centre, honest.mean(axis=0))
    _, _, mask1, _ = rules.multi_krum(deltas, byzantine=2, select=1)
    assert mask1.sum() == 1 and int(np.flatnonzero(mask1)[0]) < 8
    assert scores[8:].min() > scores[:8].max()


def test_krum_lowers_f_when_there_are_too_few_updates() -> None:
    assert rules.effective_byzantine(10, 2) == 2
    assert rules.effective_byzantine(5, 2) == 1
    assert rules.effective_byzantine(3, 2) == 0
    _, f = rules.krum_scores(np.eye(4), 5)
    assert f == 0


def test_norm_bound_and_centered_clipping_bound_one_huge_update() -> None:
    rng = np.random.default_rng(2)
    honest = rng.normal(0, 1, size=(9, 30))
    evil = np.full((1, 30), 1e6)
    deltas = np.vstack([honest, evil])
    mean, factors, bound = rules.norm_bounded_mean(deltas, 0.0)
    assert bound == pytest.approx(np.median(np.linalg.norm(deltas, axis=1)))
    assert np.linalg.norm(mean - honest.mean(axis=0)) <= bound / 10 + 1e-9 + np.linalg.norm(
        honest.mean(axis=0)
    )
    assert factors[-1] < 1e-4
    v, cfac, tau = rules.centered_clipping(deltas, np.median(deltas, axis=0), 0.0, 3)
    assert tau > 0 and cfac[-1] < 1e-4
    assert np.linalg.norm(v - honest.mean(axis=0)) < 3 * tau


def test_fltrust_ignores_updates_against_the_root_and_rescales_the_rest() -> None:
    g0 = np.array([1.0, 0.0, 0.0])
    deltas = np.array([[2.0, 0.0, 0.0], [10.0, 10.0, 0.0], [-5.0, 0.0, 0.0]])
    centre, trust = rules.fltrust(deltas, g0)
    assert trust[2] == 0.0
    assert trust[0] == pytest.approx(1.0) and trust[1] == pytest.approx(np.sqrt(0.5))
    expected = (1.0 * np.array([1.0, 0, 0]) + np.sqrt(0.5) * np.array([1, 1, 0]) / np.sqrt(2)) / (
        1.0 + np.sqrt(0.5)
    )
    np.testing.assert_allclose(centre, expected)
    zero, none = rules.fltrust(deltas[2:], g0)
    assert not zero.any() and not none.any()


def test_fltrust_uses_the_bound_root_update() -> None:
    x = zeros()
    good = [np.ones(s, dtype=np.float32) for s in SHAPES]
    bad = [-100 * np.ones(s, dtype=np.float32) for s in SHAPES]
    algo = FLTrust()
    seen: list[Weights] = []

    def root(global_weights: Weights) -> Weights:
        seen.append(global_weights)
        return [w + 0.5 for w in global_weights]

    algo.bind_root(root)
    out = algo.aggregate(x, [update(good, "a"), update(bad, "b"), update(good, "c")])
    assert len(seen) == 1
    # the honest direction, rescaled to the root update's norm (0.5 per coordinate)
    np.testing.assert_allclose(flat(out), 0.5, rtol=1e-6)
    rep = algo.report()
    assert rep[ParticipantId("b")]["trust"] == 0.0 and rep[ParticipantId("a")]["root"] == 1.0


def test_robust_rules_ignore_claimed_sample_counts() -> None:
    x = zeros()
    ups = [update([w + i for w in x], f"p{i}", n=10) for i in range(4)]
    liar = update([w + 1000 for w in x], "liar", n=10**9)
    out = CoordinateMedian().aggregate(x, [*ups, liar])
    np.testing.assert_allclose(flat(out), 2.0)


def test_median_of_a_known_round() -> None:
    x = [np.array([1.0, 2.0], dtype=np.float32)]
    ups = [update([np.array(v, dtype=np.float32)], f"p{i}") for i, v in
           enumerate([[1.0, 2.0], [2.0, 4.0], [3.0, -9.0]])]  # fmt: skip
    out = CoordinateMedian().aggregate(x, ups)
    np.testing.assert_allclose(out[0], [2.0, 2.0])


def test_trimmed_mean_report_names_the_trimmed_outlier() -> None:
    x = zeros()
    rng = np.random.default_rng(4)
    ups = [update([w + rng.normal(0, 0.1, w.shape).astype(np.float32) for w in x], f"p{i}")
           for i in range(8)]  # fmt: skip
    ups.append(update([w + 99 for w in x], "evil"))
    algo = TrimmedMean(trim_ratio=0.2)
    algo.aggregate(x, ups)
    rep = algo.report()
    assert rep[ParticipantId("evil")]["trimmed_share"] == 1.0
    assert rep[ParticipantId("evil")]["flagged"] == 1.0
    assert all(rep[ParticipantId(f"p{i}")]["flagged"] == 0.0 for i in range(8))


def test_krum_report_marks_selection_and_f() -> None:
    x = zeros()
    rng = np.random.default_rng(3)
    ups = [update([w + rng.normal(0, 0.1, w.shape).astype(np.float32) for w in x], f"p{i}")
           for i in range(6)]  # fmt: skip
    ups.append(update([w + 40 for w in x], "evil"))
    algo = Krum(byzantine=2)
    algo.aggregate(x, ups)
    rep = algo.report()
    assert sum(r["selected"] for r in rep.values()) == 1.0
    assert rep[ParticipantId("evil")]["selected"] == 0.0
    assert rep[ParticipantId("evil")]["krum_f"] == 2.0


def test_centered_clipping_state_round_trips() -> None:
    x = zeros()
    ups = [update([w + i for w in x], f"p{i}") for i in range(5)]
    a = CenteredClipping()
    a.aggregate(x, ups)
    state = a.state()
    assert set(state) == {"start"}
    b = CenteredClipping()
    b.load_state(state)
    for u, v in zip(a.aggregate(x, ups), b.aggregate(x, ups), strict=True):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(AggregationError, match="expected"):
        b.load_state({"momentum": state["start"]})


def test_an_all_zero_round_stays_put() -> None:
    x = [np.full(s, 0.5, dtype=np.float32) for s in SHAPES]
    ups = [update([w.copy() for w in x], f"p{i}") for i in range(4)]
    for name in ROBUST_ALGORITHMS:
        out = build(name).aggregate(x, ups)
        for u, v in zip(out, x, strict=True):
            np.testing.assert_array_equal(u, v)


def test_errors_name_the_problem() -> None:
    x = zeros()
    with pytest.raises(ConfigError, match="trim_ratio"):
        TrimmedMean(trim_ratio=0.5)
    with pytest.raises(ConfigError, match="byzantine must be a whole number"):
        MultiKrum(byzantine=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="iterations"):
        CenteredClipping(iterations=0)
    with pytest.raises(ConfigError, match="max_norm"):
        NormBound(max_norm=-1)
    with pytest.raises(ConfigError, match="unknown parameter"):
        make_algorithm("median", trim_ratio=0.1)
    with pytest.raises(AggregationError, match="nothing to aggregate"):
        CoordinateMedian().aggregate(x, [])
    with pytest.raises(AggregationError, match="two updates from one participant"):
        CoordinateMedian().aggregate(x, [update(x, "a"), update(x, "a")])
    bad = [np.zeros((2, 2), dtype=np.float32), np.zeros(2, dtype=np.float32)]
    with pytest.raises(AggregationError, match="shape"):
        CoordinateMedian().aggregate(x, [update(bad, "a")])
    nan = [np.full(s, np.nan, dtype=np.float32) for s in SHAPES]
    with pytest.raises(AggregationError, match="NaN"):
        CoordinateMedian().aggregate(x, [update(nan, "a")])
    with pytest.raises(AggregationError, match="root update"):
        rules.fltrust(np.ones((2, 3)), np.ones(2))


def test_report_is_empty_before_the_first_round() -> None:
    for name in ROBUST_ALGORITHMS:
        algo = build(name)
        assert algo.report() == {}  # type: ignore[attr-defined]
