"""The coordinator's round state machine, driven by hand with real participants' replies."""

from __future__ import annotations

import numpy as np
import pytest

from phalanx.core.aggregation import make_algorithm
from phalanx.core.errors import ConfigError, RoundError
from phalanx.core.features.stats import compute_stats, merge_all
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.messages import Reply, Stage
from phalanx.core.rounds import Federation, FederationPlan, participant_seed
from phalanx.core.types import ParticipantId
from phalanx.data.synthetic import generate_federation

P = [ParticipantId(f"org-{i}") for i in range(4)]


def _init(n_features: int) -> list[np.ndarray]:
    return [np.zeros((n_features, 3), dtype=np.float32), np.zeros(3, dtype=np.float32)]


def _fed(**plan: object) -> Federation:
    schema = generate_federation(1, 200, seed=1)[0].schema
    return Federation(
        FederationPlan(**{"rounds": 2, **plan}),  # type: ignore[arg-type]
        schema,
        make_algorithm("fedavg"),
        _init,
    )


def _fit_reply(req_round: int, pid: ParticipantId, fed: Federation, value: float) -> Reply:
    return Reply(
        participant=pid,
        round=req_round,
        stage=Stage.FIT,
        schema_hash=fed.schema_hash,
        arrays=[np.full_like(w, value) for w in fed.weights],
        num_examples=10,
        metrics={"loss": value},
    )


def test_statistics_stage_fits_the_pooled_transform() -> None:
    orgs = generate_federation(3, 300, seed=7)
    fed = Federation(FederationPlan(rounds=1), orgs[0].schema, make_algorithm("fedavg"), _init)
    req = fed.next_stage(P[:3])
    assert req is not None and req.stage is Stage.STATS and set(req.tasks) == set(P[:3])
    replies = {
        p: Reply(p, 0, Stage.STATS, fed.schema_hash, [compute_stats(b).to_vector()], len(b))
        for p, b in zip(P, orgs, strict=False)
    }
    assert fed.complete_stage(replies) is None
    pooled = FeatureTransform.fit(merge_all(compute_stats(b) for b in orgs))
    assert fed.transform is not None
    np.testing.assert_allclose(fed.transform.mean, pooled.mean, rtol=1e-9)
    np.testing.assert_allclose(fed.transform.scale, pooled.scale, rtol=1e-9)
    assert fed.weights[0].shape == (pooled.n_features, 3)


def _skip_stats(fed: Federation) -> None:
    orgs = generate_federation(1, 300, seed=7)
    req = fed.next_stage(P)
    assert req is not None
    fed.complete_stage(
        {
            p: Reply(p, 0, Stage.STATS, fed.schema_hash, [compute_stats(orgs[0]).to_vector()], 1)
            for p in req.tasks
        }
    )


def test_fit_rounds_average_and_finish() -> None:
    fed = _fed()
    _skip_stats(fed)
    for r in (1, 2):
        req = fed.next_stage(P)
        assert req is not None and req.stage is Stage.FIT and req.round == r
        assert all(t.config["seed"] == participant_seed(0, r, p) for p, t in req.tasks.items())
        record = fed.complete_stage(
            {p: _fit_reply(r, p, fed, float(i)) for i, p in enumerate(req.tasks)}
        )
        assert record is not None and record.round == r
        assert np.allclose(fed.weights[0], 1.5)  # mean of 0, 1, 2, 3
    assert fed.next_stage(P) is None and fed.done


def test_fraction_samples_and_is_seeded() -> None:
    a, b = _fed(fraction=0.5, seed=3), _fed(fraction=0.5, seed=3)
    for fed in (a, b):
        _skip_stats(fed)
    ra, rb = a.next_stage(P), b.next_stage(P)
    assert ra is not None and rb is not None
    assert len(ra.tasks) == 2 and list(ra.tasks) == list(rb.tasks)


def test_too_few_replies_is_a_round_error_and_the_round_is_retried() -> None:
    fed = _fed(min_participants=3)
    _skip_stats(fed)
    req = fed.next_stage(P)
    assert req is not None
    first = sorted(req.tasks)[:2]
    with pytest.raises(RoundError, match="at least 3"):
        fed.complete_stage({p: _fit_reply(1, p, fed, 1.0) for p in first})
    again = fed.next_stage(P)
    assert again is not None and again.round == 1 and fed.round == 0


def test_stale_wrong_schema_and_nan_replies_are_left_out_not_fatal() -> None:
    fed = _fed(min_participants=1)
    _skip_stats(fed)
    req = fed.next_stage(P)
    assert req is not None
    good = _fit_reply(1, P[0], fed, 2.0)
    stale = _fit_reply(0, P[1], fed, 9.0)
    wrong = Reply(P[2], 1, Stage.FIT, "0" * 64, good.arrays, 10)
    nan = _fit_reply(1, P[3], fed, float("nan"))
    record = fed.complete_stage({P[0]: good, P[1]: stale, P[2]: wrong, P[3]: nan})
    assert record is not None and record.participants == (P[0],)
    assert "stale" in record.refused[P[1]]
    assert "schema" in record.refused[P[2]]
    assert "NaN" in record.refused[P[3]]
    assert np.allclose(fed.weights[0], 2.0)


def test_plan_is_validated() -> None:
    with pytest.raises(ConfigError, match="fraction"):
        FederationPlan(rounds=1, fraction=0.0)
    with pytest.raises(ConfigError, match="rounds"):
        FederationPlan(rounds=0)
