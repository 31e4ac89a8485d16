"""Streamed FIT stages: replies folded on arrival give the batch path's round, bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.aggregation import make_algorithm
from phalanx.core.errors import RoundError
from phalanx.core.features.stats import compute_stats, merge_all
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.messages import Reply, Stage
from phalanx.core.rounds import Federation, FederationPlan, RoundRecord
from phalanx.core.types import ParticipantId
from phalanx.data.synthetic import generate_federation

P = [ParticipantId(f"org-{i}") for i in range(6)]
PARTS = generate_federation(2, 100, seed=1)


def _init(n_features: int) -> list[np.ndarray]:
    return [np.zeros((n_features, 3), dtype=np.float32), np.zeros(3, dtype=np.float32)]


def _fed(algorithm: str = "fedavg", **plan: object) -> Federation:
    transform = FeatureTransform.fit(merge_all([compute_stats(p) for p in PARTS]))
    return Federation(
        FederationPlan(**{"rounds": 2, "federated_stats": False, **plan}),  # type: ignore[arg-type]
        PARTS[0].schema,
        make_algorithm(algorithm),
        _init,
        transform=transform,
    )


def _reply(fed: Federation, pid: ParticipantId, rnd: int, seed: int) -> Reply:
    rng = np.random.default_rng(seed)
    return Reply(
        participant=pid,
        round=rnd,
        stage=Stage.FIT,
        schema_hash=fed.schema_hash,
        arrays=[(w + rng.standard_normal(w.shape)).astype(np.float32) for w in fed.weights],
        num_examples=int(rng.integers(1, 1000)),
        metrics={"loss": float(seed)},
    )


def _round(fed: Federation, order: list[int], stream: bool, rnd: int) -> RoundRecord | None:
    req = fed.next_stage(P)
    assert req is not None and req.stage is Stage.FIT
    assert fed.streaming
    replies = {p: _reply(fed, p, rnd, 100 * rnd + i) for i, p in enumerate(P)}
    if not stream:
        return fed.complete_stage(replies)
    got = {}
    for i in order:
        out = fed.absorb(P[i], replies[P[i]])
        assert out is not None and out.arrays == []  # folded: the arrays are not kept
        got[P[i]] = out
    return fed.complete_stage(got)


@settings(max_examples=15, deadline=None)
@given(st.permutations(list(range(len(P)))), st.sampled_from(["fedavg", "fedadam"]))
def test_streamed_rounds_equal_the_batch_path_bit_for_bit(order: list[int], algo: str) -> None:
    batch, streamed = _fed(algo), _fed(algo)
    for rnd in (1, 2):
        a = _round(batch, order, False, rnd)
        b = _round(streamed, order, True, rnd)
        assert a is not None and b is not None
        assert a.participants == b.participants and a.num_examples == b.num_examples
        assert a.train_metrics == b.train_metrics and a.suspicion == b.suspicion
        for x, y in zip(batch.weights, streamed.weights, strict=True):
            np.testing.assert_array_equal(x, y)


def test_a_robust_rule_is_never_streamed() -> None:
    fed = _fed("median")
    req = fed.next_stage(P)
    assert req is not None and not fed.streaming
    reply = _reply(fed, P[0], 1, 0)
    assert fed.absorb(P[0], reply) is reply


def test_bad_refused_and_missing_replies_cost_only_their_senders() -> None:
    fed = _fed(min_participants=2)
    req = fed.next_stage(P)
    assert req is not None
    good = [_reply(fed, p, 1, i) for i, p in enumerate(P)]
    wrong_shape = dataclasses.replace(good[1], arrays=good[1].arrays[:1])
    declined = dataclasses.replace(good[2], arrays=[], refused="privacy budget spent")
    negative = dataclasses.replace(good[3], num_examples=-5)
    got = {
        P[5]: fed.absorb(P[5], good[5]),
        P[1]: fed.absorb(P[1], wrong_shape),
        P[2]: fed.absorb(P[2], declined),
        P[3]: fed.absorb(P[3], negative),
        P[0]: fed.absorb(P[0], good[0]),
    }
    assert fed.absorb(P[4], None) is None  # its task failed
    assert got[P[1]] is wrong_shape and got[P[2]] is declined and got[P[3]] is negative
    rec = fed.complete_stage(got)  # type: ignore[arg-type]
    assert rec is not None and rec.participants == (P[0], P[5])
    assert "layer shapes" in rec.refused[P[1]]
    assert rec.refused[P[2]] == "privacy budget spent"
    assert "whole number >= 0" in rec.refused[P[3]]
    n0, n5 = good[0].num_examples, good[5].num_examples
    want = (n0 * good[0].arrays[0].astype(np.float64) + n5 * good[5].arrays[0]) / (n0 + n5)
    np.testing.assert_allclose(fed.weights[0], want, rtol=1e-6, atol=1e-7)


def test_a_folded_reply_missing_from_the_result_fails_the_round_for_a_retry() -> None:
    fed = _fed(min_participants=1)
    req = fed.next_stage(P)
    assert req is not None
    kept = {p: fed.absorb(p, _reply(fed, p, 1, i)) for i, p in enumerate(P)}
    del kept[P[3]]
    with pytest.raises(RoundError, match=r"missing from the result: \['org-3'\]"):
        fed.complete_stage(kept)  # type: ignore[arg-type]
    again = fed.next_stage(P)
    assert again is not None and again.round == 1 and fed.streaming
    record = fed.complete_stage({p: _reply(fed, p, 1, i) for i, p in enumerate(P)})
    assert record is not None and record.participants == tuple(P)
