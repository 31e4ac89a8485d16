"""StreamingMean: the batch weighted mean folded reply by reply, in any arrival order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.aggregation import FedAdam, FedAvg, FedAvgM, FedProx, FedYogi, weighted_mean
from phalanx.core.aggregation.robust import CoordinateMedian
from phalanx.core.aggregation.streaming import PartialSum, StreamingMean
from phalanx.core.aggregation.suspicion import flatten_deltas, sketch_stride
from phalanx.core.errors import AggregationError
from phalanx.core.types import ParticipantId, Update, Weights

SHAPES = [(4, 3), (3,), (2, 3)]


def names(k: int) -> list[ParticipantId]:
    return [ParticipantId(f"org-{i:02d}") for i in range(k)]


def weights(rng: np.random.Generator, scale: float = 1.0) -> Weights:
    return [(rng.standard_normal(s) * scale).astype(np.float32) for s in SHAPES]


@st.composite
def rounds(draw: st.DrawFn) -> tuple[Weights, list[Weights], list[int], list[int], set[int]]:
    """Global weights, k updates, their counts, an arrival order and who drops out."""
    k = draw(st.integers(1, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    ups = [weights(rng, scale) for _ in range(k)]
    counts = draw(st.lists(st.integers(1, 10_000), min_size=k, max_size=k))
    order = draw(st.permutations(list(range(k))))
    dropped = draw(st.sets(st.integers(0, k - 1), max_size=k - 1))
    return weights(rng, scale), ups, counts, list(order), dropped


@settings(max_examples=80, deadline=None)
@given(rounds())
def test_any_arrival_order_gives_the_same_bits_and_the_batch_mean(
    case: tuple[Weights, list[Weights], list[int], list[int], set[int]],
) -> None:
    glob, ups, counts, order, dropped = case
    ids = names(len(ups))
    kept = [i for i in range(len(ups)) if i not in dropped]

    def stream(arrival: list[int]) -> list[np.ndarray]:
        s = StreamingMean(glob, ids)
        for i in arrival:
            if i not in dropped:
                s.add(ids[i], ups[i], counts[i])
            elif i % 2:  # half of the dropouts are announced, the rest just never arrive
                s.skip(ids[i])
        return s.finish().mean

    in_order = stream(list(range(len(ups))))
    shuffled = stream(order)
    for a, b in zip(in_order, shuffled, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    batch = weighted_mean([ups[i] for i in kept], [counts[i] for i in kept])
    for a, b in zip(in_order, batch, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * float(np.abs(b).max() + 1e-30))


def test_an_update_that_arrives_early_waits_only_for_its_predecessors() -> None:
    rng = np.random.default_rng(0)
    ids = names(4)
    s = StreamingMean(weights(rng), ids, groups=1)  # one group: name order throughout
    s.add(ids[2], weights(rng), 1)
    s.add(ids[3], weights(rng), 1)
    assert s.waiting == 2  # org-00 and org-01 not settled yet
    s.skip(ids[0])
    assert s.waiting == 2
    s.add(ids[1], weights(rng), 1)
    assert s.waiting == 0
    got = s.finish()
    assert got.participants == ids[1:] and got.num_examples == 3


def test_groups_wait_only_within_themselves() -> None:
    rng = np.random.default_rng(0)
    ids = names(6)
    s = StreamingMean(weights(rng), ids, groups=2)  # groups: org-00/02/04 and org-01/03/05
    assert s.groups() == [ids[0::2], ids[1::2]]
    s.add(ids[1], weights(rng), 1)  # first of group 1: folded at once
    s.add(ids[4], weights(rng), 1)  # waits for org-00 and org-02
    assert s.waiting == 1
    s.add(ids[0], weights(rng), 1)
    s.add(ids[2], weights(rng), 1)
    assert s.waiting == 0


def test_sketch_rows_are_the_batch_paths_deltas() -> None:
    rng = np.random.default_rng(1)
    ids = names(5)
    glob = [rng.standard_normal((30, 40)).astype(np.float32), np.ones(7, dtype=np.float32)]
    ups = [[w + rng.standard_normal(w.shape).astype(np.float32) for w in glob] for _ in ids]
    s = StreamingMean(glob, ids)
    for pid, w in zip(reversed(ids), reversed(ups), strict=True):
        s.add(pid, w, 3)
    got = s.finish()
    assert got.stride == 1
    np.testing.assert_array_equal(got.deltas, flatten_deltas(glob, ups))


def test_a_large_round_is_sketched_like_the_batch_path() -> None:
    rng = np.random.default_rng(2)
    ids = names(3)
    glob = [np.zeros((1500, 1000), dtype=np.float32)]  # 3 x 1.5M > the 4M-value budget
    ups = [[rng.standard_normal((1500, 1000)).astype(np.float32)] for _ in ids]
    s = StreamingMean(glob, ids)
    for pid, w in zip(ids, ups, strict=True):
        s.add(pid, w, 1)
    got = s.finish()
    assert got.stride == sketch_stride(3, 1_500_000) > 1
    np.testing.assert_array_equal(got.deltas, flatten_deltas(glob, ups, stride=got.stride))


@pytest.mark.parametrize("make", [FedAvg, lambda: FedProx(0.1), FedAvgM, FedAdam, FedYogi], ids=str)
def test_streamed_algorithms_step_and_report_as_the_batch_path(make: object) -> None:
    rng = np.random.default_rng(3)
    ids = names(6)
    glob = weights(rng)
    ups = [[w + 0.1 * rng.standard_normal(w.shape).astype(np.float32) for w in glob] for _ in ids]
    ups[4] = [w + 50.0 for w in glob]  # an outlier the suspicion scores must flag
    counts = [int(c) for c in rng.integers(1, 500, size=len(ids))]
    batch_algo, stream_algo = make(), make()  # type: ignore[operator]
    for rnd in range(3):  # stateful algorithms carry momentum across rounds
        want = batch_algo.aggregate(
            glob, [Update(p, rnd, w, c, "h") for p, w, c in zip(ids, ups, counts, strict=True)]
        )
        s = StreamingMean(glob, ids)
        for i in (5, 2, 0, 4, 1, 3):
            s.add(ids[i], ups[i], counts[i])
        got = stream_algo.aggregate_streamed(glob, s)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        rep_b, rep_s = batch_algo.report(), stream_algo.report()
        assert sorted(rep_s) == sorted(rep_b) == ids
        assert rep_s[ids[4]]["flagged"] == rep_b[ids[4]]["flagged"] == 1.0
        for pid in ids:
            for key, value in rep_b[pid].items():
                assert rep_s[pid][key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
        glob = got


def test_a_robust_rule_refuses_a_streamed_mean() -> None:
    rng = np.random.default_rng(4)
    s = StreamingMean(weights(rng), names(1))
    s.add(names(1)[0], weights(rng), 1)
    with pytest.raises(AggregationError, match="needs the individual updates"):
        CoordinateMedian().aggregate_streamed(weights(rng), s)


def test_bad_updates_are_named() -> None:
    rng = np.random.default_rng(5)
    ids = names(2)
    s = StreamingMean(weights(rng), ids)
    with pytest.raises(AggregationError, match="who was not asked"):
        s.add(ParticipantId("mallory"), weights(rng), 1)
    with pytest.raises(AggregationError, match="org-00 sent 2 layers; expected 3"):
        s.add(ids[0], weights(rng)[:2], 1)
    bad = weights(rng)
    bad[1] = np.zeros(4, dtype=np.float32)
    with pytest.raises(AggregationError, match=r"org-00: layer 1 has shape \(4,\)"):
        s.add(ids[0], bad, 1)
    bad = weights(rng)
    bad[2][0, 0] = np.inf
    with pytest.raises(AggregationError, match="org-00: layer 2 contains NaN or infinite"):
        s.add(ids[0], bad, 1)
    with pytest.raises(AggregationError, match="whole number >= 0"):
        s.add(ids[0], weights(rng), -1)
    s.add(ids[0], weights(rng), 0)
    with pytest.raises(AggregationError, match="second update from 'org-00'"):
        s.add(ids[0], weights(rng), 1)
    with pytest.raises(AggregationError, match="sum to zero"):
        s.finish()
    with pytest.raises(AggregationError, match="already finished"):
        s.finish()


def test_nothing_added_and_nobody_expected_are_errors() -> None:
    rng = np.random.default_rng(6)
    with pytest.raises(AggregationError, match="at least one expected participant"):
        StreamingMean(weights(rng), [])
    with pytest.raises(AggregationError, match="expected twice"):
        StreamingMean(weights(rng), names(2) + names(1))
    s = StreamingMean(weights(rng), names(2))
    s.skip(names(2)[1])
    with pytest.raises(AggregationError, match="nothing to aggregate"):
        s.finish()


@settings(max_examples=60, deadline=None)
@given(rounds(), st.integers(1, 4), st.data())
def test_partial_sums_of_whole_groups_give_the_same_bits(
    case: tuple[Weights, list[Weights], list[int], list[int], set[int]],
    groups: int,
    data: st.DataObject,
) -> None:
    """A worker pre-summing whole groups (hierarchical aggregation) changes nothing."""
    glob, ups, counts, order, dropped = case
    ids = names(len(ups))
    flat = StreamingMean(glob, ids, groups=groups)
    for i in order:
        if i not in dropped:
            flat.add(ids[i], ups[i], counts[i])
    want = flat.finish()
    mixed = StreamingMean(glob, ids, groups=groups)
    pre_summed = data.draw(st.sets(st.integers(0, groups - 1)))
    for g, members in enumerate(mixed.groups()):
        if g in pre_summed and members:  # as a worker owning the group computes it
            worker = StreamingMean(glob, members, stride=mixed.stride, groups=1)
            for pid in members:
                i = ids.index(pid)
                if i not in dropped:
                    worker.add(pid, ups[i], counts[i])
            mixed.add_partial(worker.partial_sum(g))
    for i in reversed(order):
        if i not in dropped and ids[i] not in {p for g in pre_summed for p in mixed.groups()[g]}:
            mixed.add(ids[i], ups[i], counts[i])
    if not want.participants:
        return
    got = mixed.finish()
    assert got.participants == want.participants and got.num_examples == want.num_examples
    for a, b in zip(got.mean, want.mean, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got.deltas, want.deltas)


def test_a_partial_sum_that_does_not_fit_is_refused() -> None:
    rng = np.random.default_rng(7)
    ids, glob = names(4), weights(rng)

    def worker(members: list[ParticipantId], group: int, stride: int) -> PartialSum:
        w = StreamingMean(glob, members, stride=stride, groups=1)
        w.add(members[0], weights(rng), 1)
        return w.partial_sum(group)

    s = StreamingMean(glob, ids, groups=2)
    s.add(ids[0], weights(rng), 1)
    with pytest.raises(AggregationError, match="group 0 already has updates"):
        s.add_partial(worker([ids[2]], 0, s.stride))
    with pytest.raises(AggregationError, match=r"non-members \['org-02'\]"):
        s.add_partial(worker([ids[2]], 1, s.stride))
    with pytest.raises(AggregationError, match="group 5; this round has 2"):
        s.add_partial(worker([ids[1]], 5, s.stride))
    with pytest.raises(AggregationError, match="stride"):
        s.add_partial(worker([ids[1]], 1, s.stride + 1))
    with pytest.raises(AggregationError, match="one-group stream"):
        s.partial_sum(1)
