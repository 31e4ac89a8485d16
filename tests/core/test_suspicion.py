"""Suspicion scores, FoolsGold weights and the quarantine policy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.aggregation import FedAdam, FedAvg, make_algorithm
from phalanx.core.aggregation.suspicion import (
    GRAM_BUDGET,
    Quarantine,
    flatten_deltas,
    foolsgold_weights,
    pairwise_cosine,
    robust_z,
    score_sketch,
    score_updates,
    sketch_stride,
)
from phalanx.core.errors import AggregationError
from phalanx.core.types import ParticipantId, Update

KEYS = {
    "distance",
    "distance_z",
    "distance_ratio",
    "norm",
    "norm_z",
    "norm_ratio",
    "max_cosine",
    "sybil_weight",
    "flagged",
}


def names(n: int) -> list[ParticipantId]:
    return [ParticipantId(f"org-{i:02d}") for i in range(n)]


def test_a_scaled_update_and_two_clones_are_flagged_honest_ones_are_not() -> None:
    rng = np.random.default_rng(0)
    honest = rng.normal(0, 1, size=(8, 200))
    scaled = rng.normal(0, 1, size=(1, 200)) * 30
    clone = rng.normal(0, 1, size=(1, 200))
    deltas = np.vstack([honest, scaled, clone, clone])
    rep = score_updates(names(11), deltas, honest.mean(axis=0))
    assert set(rep[ParticipantId("org-00")]) == KEYS
    flagged = [p for p, s in rep.items() if s["flagged"]]
    assert flagged == names(11)[8:]
    assert rep[ParticipantId("org-08")]["norm_z"] > 10
    assert rep[ParticipantId("org-09")]["max_cosine"] == pytest.approx(1.0)
    assert rep[ParticipantId("org-09")]["sybil_weight"] == 0.0
    assert rep[ParticipantId("org-00")]["sybil_weight"] > 0.5


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 9), st.integers(0, 2**32 - 1), st.data())
def test_scores_are_permutation_equivariant(n: int, seed: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    deltas = rng.normal(0, 1, size=(n, 7))
    centre = np.median(deltas, axis=0)
    perm = data.draw(st.permutations(list(range(n))))
    ids = names(n)
    a = score_updates(ids, deltas, centre)
    b = score_updates([ids[i] for i in perm], deltas[perm], centre)
    for pid in ids:
        for key in KEYS:
            assert a[pid][key] == pytest.approx(b[pid][key], abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=20))
def test_robust_z_is_finite_and_zero_at_the_median(values: list[float]) -> None:
    z = robust_z(np.array(values))
    assert np.all(np.isfinite(z))
    odd = np.array([*values, np.median(values)]) if len(values) % 2 == 0 else np.array(values)
    assert np.min(np.abs(robust_z(odd))) == pytest.approx(0.0, abs=1e-9)


def test_cosine_handles_zero_rows_and_subsamples_large_inputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    cos = pairwise_cosine(m)
    assert cos[0].tolist() == [0.0, 0.0, 0.0]
    assert cos[1, 2] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    big = rng.normal(0, 1, size=(4, 10_000))
    big[1] = big[0]
    exact = pairwise_cosine(big)
    import phalanx.core.aggregation.suspicion as mod

    monkeypatch.setattr(mod, "GRAM_BUDGET", 4 * 4 * 2000)
    approx = pairwise_cosine(big)
    assert approx[0, 1] == pytest.approx(1.0)
    assert np.abs(approx - exact).max() < 0.1
    assert GRAM_BUDGET > 0


def test_foolsgold_gives_distinct_updates_weight_and_clones_none() -> None:
    cos = np.array([[1.0, 0.1, 0.2], [0.1, 1.0, 0.999], [0.2, 0.999, 1.0]])
    w = foolsgold_weights(cos)
    assert w[0] == pytest.approx(1.0)
    assert w[1] < 0.1 and w[2] < 0.1
    assert foolsgold_weights(np.ones((1, 1))).tolist() == [1.0]


def test_shape_errors_name_the_shapes() -> None:
    with pytest.raises(AggregationError, match="one delta row per participant"):
        score_updates(names(2), np.zeros((3, 4)), np.zeros(4))
    with pytest.raises(AggregationError, match="centre's length"):
        score_updates(names(2), np.zeros((2, 4)), np.zeros(5))


def test_fedavg_and_the_adaptive_algorithms_report_against_their_mean() -> None:
    x = [np.zeros(5, dtype=np.float32)]
    rng = np.random.default_rng(2)
    ups = [
        Update(ParticipantId(f"p{i}"), 1, [rng.normal(0, 1, 5).astype(np.float32)], 10, "h")
        for i in range(6)
    ]
    ups.append(Update(ParticipantId("big"), 1, [np.full(5, 100, dtype=np.float32)], 10, "h"))
    for algo in (FedAvg(), FedAdam(), make_algorithm("fedprox")):
        assert algo.report() == {}  # type: ignore[attr-defined]
        algo.aggregate(x, ups)
        rep = algo.report()  # type: ignore[attr-defined]
        assert set(rep) == {u.participant for u in ups}
        assert rep[ParticipantId("big")]["flagged"] == 1.0


def test_quarantine_excludes_after_k_flagged_rounds() -> None:
    q = Quarantine(2)
    a, b = ParticipantId("a"), ParticipantId("b")
    assert q.observe(1, {a: {"flagged": 1.0}, b: {"flagged": 0.0}}) == []
    assert q.observe(2, {a: {"flagged": 0.0}, b: {"flagged": 1.0}}) == []
    assert q.observe(3, {a: {"flagged": 1.0}}) == [a]
    assert q.observe(4, {a: {"flagged": 1.0}}) == []
    assert q.excluded == {a: 3}
    assert q.allowed([a, b]) == [b]
    off = Quarantine(0)
    for r in range(5):
        off.observe(r, {a: {"flagged": 1.0}})
    assert off.allowed([a]) == [a] and off.flags[a] == 5
    with pytest.raises(AggregationError, match="whole number"):
        Quarantine(-1)


def test_a_strided_sketch_estimates_the_full_scores() -> None:
    rng = np.random.default_rng(5)
    x = [np.zeros((100, 100), dtype=np.float32), np.zeros(7, dtype=np.float32)]
    ws = [[(w + rng.normal(0, 1, w.shape)).astype(np.float32) for w in x] for _ in range(6)]
    ws.append([w + 5 for w in x])
    full = flatten_deltas(x, ws)
    sketch = flatten_deltas(x, ws, stride=10)
    assert sketch.shape == (7, 1001)
    np.testing.assert_array_equal(sketch, full[:, ::10])
    ids = names(7)
    exact = score_updates(ids, full, full.mean(axis=0))
    approx = score_sketch(ids, sketch, full.mean(axis=0)[::10], 10)
    for pid in ids:
        assert approx[pid]["norm"] == pytest.approx(exact[pid]["norm"], rel=0.1)
        assert approx[pid]["distance"] == pytest.approx(exact[pid]["distance"], rel=0.1)
        assert approx[pid]["flagged"] == exact[pid]["flagged"]
        assert approx[pid]["sketch_stride"] == 10.0
    assert approx[ids[-1]]["flagged"] == 1.0
    assert sketch_stride(1000, 85_000) > 1 and sketch_stride(10, 85_000) == 1
    with pytest.raises(AggregationError, match="stride"):
        flatten_deltas(x, ws, stride=0)


def test_zero_and_identical_updates_score_without_warnings() -> None:
    deltas = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    rep = score_updates(names(4), deltas, np.ones(2))
    assert all(np.isfinite(v) for s in rep.values() for v in s.values())
    assert rep[ParticipantId("org-00")]["max_cosine"] == 0.0
    assert rep[ParticipantId("org-01")]["flagged"] == 1.0  # clones
    everything_zero = score_updates(names(3), np.zeros((3, 5)), np.zeros(5))
    assert all(s["flagged"] == 0.0 for s in everything_zero.values())
