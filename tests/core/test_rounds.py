"""The coordinator's round state machine, driven by hand with real participants' replies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from phalanx.core.aggregation import make_algorithm
from phalanx.core.errors import ConfigError, RoundError, SecAggError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.stats import class_counts, compute_stats, merge_all
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.messages import Reply, Stage
from phalanx.core.rounds import Federation, FederationPlan, RoundRecord, participant_seed
from phalanx.core.types import ParticipantId
from phalanx.data.synthetic import generate_federation

P = [ParticipantId(f"org-{i}") for i in range(4)]


def _init(n_features: int) -> list[np.ndarray]:
    return [np.zeros((n_features, 3), dtype=np.float32), np.zeros(3, dtype=np.float32)]


def _fed(roster: Sequence[ParticipantId] | None = None, **plan: object) -> Federation:
    schema = generate_federation(1, 200, seed=1)[0].schema
    return Federation(
        FederationPlan(**{"rounds": 2, **plan}),  # type: ignore[arg-type]
        schema,
        make_algorithm("fedavg"),
        _init,
        roster=roster,
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


@pytest.mark.parametrize("min_class_rows", [0, 32])
def test_the_federation_s_class_counts_go_only_to_tasks_that_oversample(
    min_class_rows: int,
) -> None:
    """The statistics stage also sums the members' rows per class. Tasks carry the totals only
    when the model repeats rare classes by them (ADR 0019); a restored coordinator keeps them."""
    orgs = generate_federation(3, 300, seed=7)
    plan = FederationPlan(rounds=1, train_config={"model": {"min_class_rows": min_class_rows}})
    fed = Federation(plan, orgs[0].schema, make_algorithm("fedavg"), _init)
    req = fed.next_stage(P[:3])
    assert req is not None and req.stage is Stage.STATS
    asked = [t.config.get("class_counts") for t in req.tasks.values()]
    assert asked == [1.0 if min_class_rows else None] * 3  # the histogram only when needed
    replies = {
        p: Reply(p, 0, Stage.STATS, fed.schema_hash, [_stats_vector(b)], len(b))
        for p, b in zip(P, orgs, strict=False)
    }
    fed.complete_stage(replies)
    expected = sum(class_counts(b.category) for b in orgs)
    assert fed.class_totals == expected.tolist() and sum(expected) == 900
    fit = fed.next_stage(P[:3])
    assert fit is not None and fit.stage is Stage.FIT
    configs = [t.config for t in fit.tasks.values()]
    if min_class_rows:
        assert all(c["class_totals"] == expected.tolist() for c in configs)
    else:
        assert not any("class_totals" in c for c in configs)
    resumed = Federation(plan, orgs[0].schema, make_algorithm("fedavg"), _init)
    resumed.restore(*fed.snapshot())
    assert resumed.class_totals == fed.class_totals


def _stats_vector(batch: FlowBatch) -> np.ndarray:
    """What a member asked for its class counts sends in the statistics stage."""
    return compute_stats(batch, classes=True).to_vector()


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


def test_participants_whose_budget_is_spent_are_not_asked_again_and_too_few_left_stop_it() -> None:
    """A budget refusal holds for every later round: the participant is not sampled again, and
    when the spent ones leave fewer than ``min_participants`` the federation ends with the last
    completed round's model and says why, instead of retrying rounds that cannot happen."""
    from phalanx.core.privacy.spec import BUDGET_REFUSAL

    fed = _fed(rounds=3, min_participants=2)
    _skip_stats(fed)
    spent = f"{BUDGET_REFUSAL} this round would raise my epsilon from 2.000 to 3.000, past 2.5"

    def refusal(r: int, pid: ParticipantId, why: str) -> Reply:
        return Reply(pid, r, Stage.FIT, fed.schema_hash, refused=why)

    req = fed.next_stage(P)
    assert req is not None and set(req.tasks) == set(P)
    record = fed.complete_stage(
        {P[0]: _fit_reply(1, P[0], fed, 1.0), P[1]: _fit_reply(1, P[1], fed, 1.0)}
        | {P[2]: refusal(1, P[2], spent), P[3]: refusal(1, P[3], "busy re-indexing")}
    )
    assert record is not None and record.participants == (P[0], P[1])
    assert list(fed.spent) == [P[2]]  # a refusal for another reason may pass
    after_one = [w.copy() for w in fed.weights]
    req = fed.next_stage(P)
    assert req is not None and req.round == 2 and set(req.tasks) == {P[0], P[1], P[3]}
    with pytest.raises(RoundError, match="not asked again"):
        fed.complete_stage(
            {P[0]: _fit_reply(2, P[0], fed, 5.0)}
            | {P[1]: refusal(2, P[1], spent), P[3]: refusal(2, P[3], spent)}
        )
    assert fed.next_stage(P) is None and fed.done and fed.round == 1
    assert fed.stopped is not None and fed.stopped.startswith("stopped after round 1 of 3")
    assert "leaves 1 available participant(s) of the 2 a round needs" in fed.stopped
    assert all(np.array_equal(a, b) for a, b in zip(fed.weights, after_one, strict=True))
    meta, arrays = fed.snapshot()
    resumed = _fed(rounds=3, min_participants=2)
    resumed.restore(meta, arrays)
    assert resumed.done and resumed.spent == fed.spent and resumed.stopped == fed.stopped


def test_with_a_roster_members_who_are_only_offline_still_count_against_the_stop() -> None:
    """Budgets are spent for P[0] and P[1], P[2] is offline for a while: of a roster of four,
    two members can still train, which is ``min_participants``. So the federation goes on, and
    the short round is a round error (retried, as for any dropout), not the end. Once P[3]'s
    budget is spent too, the roster leaves one member, and the federation ends."""
    from phalanx.core.privacy.spec import BUDGET_REFUSAL

    fed = _fed(roster=P, rounds=3, min_participants=2)
    _skip_stats(fed)
    spent = f"{BUDGET_REFUSAL} this round would go past my budget"

    def refusal(r: int, pid: ParticipantId) -> Reply:
        return Reply(pid, r, Stage.FIT, fed.schema_hash, refused=spent)

    req = fed.next_stage(P)
    assert req is not None
    fed.complete_stage(
        {P[2]: _fit_reply(1, P[2], fed, 1.0), P[3]: _fit_reply(1, P[3], fed, 1.0)}
        | {P[0]: refusal(1, P[0]), P[1]: refusal(1, P[1])}
    )
    online = [P[0], P[1], P[3]]  # P[2] is offline
    req = fed.next_stage(online)
    assert req is not None and fed.stopped is None and set(req.tasks) == {P[3]}
    with pytest.raises(RoundError, match="at least 2"):
        fed.complete_stage({P[3]: refusal(2, P[3])})
    assert fed.next_stage(P) is None and fed.done and fed.round == 1
    assert fed.stopped is not None
    assert "leaves 1 enrolled participant(s) of the 2 a round needs" in fed.stopped


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


# -- secure aggregation -------------------------------------------------------------------------

S = [ParticipantId(f"org-{i}") for i in range(7)]


def _secure_fed(**settings: object) -> Federation:
    from phalanx.adapters.crypto import CryptographyBackend
    from phalanx.core.secagg.params import SecAggSettings

    schema = generate_federation(1, 200, seed=1)[0].schema
    return Federation(
        FederationPlan(
            rounds=2,
            secure_aggregation=True,
            secagg=SecAggSettings(**settings),  # type: ignore[arg-type]
        ),
        schema,
        make_algorithm("fedavg"),
        _init,
        crypto=CryptographyBackend(),
    )


def _secure_handlers(
    fed: Federation, values: dict[ParticipantId, float], examples: dict[ParticipantId, int]
) -> dict[ParticipantId, object]:
    """Participants whose 'training' returns the global weights plus a constant, behind the real
    secure-aggregation middleware."""
    from phalanx.adapters.crypto import CryptographyBackend, simulation_identities
    from phalanx.services.secure import SecureAggregation

    signers, verifier = simulation_identities(list(values))
    crypto = CryptographyBackend()
    orgs = generate_federation(1, 300, seed=7)

    def inner(pid: ParticipantId):  # type: ignore[no-untyped-def]
        def handle(task):  # type: ignore[no-untyped-def]
            if task.stage is Stage.STATS:
                vec = compute_stats(orgs[0], classes=True).to_vector()
                return Reply(pid, task.round, task.stage, fed.schema_hash, [vec], 300)
            arrays = [w + values[pid] for w in task.weights]
            return Reply(pid, task.round, task.stage, fed.schema_hash, arrays, examples[pid],
                         metrics={"loss": values[pid]})  # fmt: skip

        return handle

    out = {}
    for pid in values:
        mw = SecureAggregation(pid, crypto, signers[pid], verifier)
        out[pid] = (lambda m, h: lambda task: m(task, h))(mw, inner(pid))
    return out


def _drive(
    fed: Federation, handlers: dict[ParticipantId, object], drop: dict[Stage, set[ParticipantId]]
) -> object:
    while True:
        req = fed.next_stage(list(handlers))
        assert req is not None
        replies = {
            p: handlers[p](t)  # type: ignore[operator]
            for p, t in req.tasks.items()
            if p not in drop.get(req.stage, set())
        }
        record = fed.complete_stage(replies)
        if record is not None or (req.stage is Stage.SECAGG_UNMASK and req.round == 0):
            return record


def test_secure_rounds_equal_the_plain_weighted_mean_within_quantization() -> None:
    fed = _secure_fed(weight_cap=1000)
    values = {p: 0.1 * i for i, p in enumerate(S)}
    examples = {p: 100 * (i + 1) for i, p in enumerate(S)}
    handlers = _secure_handlers(fed, values, examples)
    assert _drive(fed, handlers, {}) is None  # the statistics round
    assert fed.transform is not None
    own = class_counts(generate_federation(1, 300, seed=7)[0].category)  # every member's
    assert fed.class_totals == (len(S) * own).tolist()  # exact through the masked sum
    record = _drive(fed, handlers, {})
    assert isinstance(record, RoundRecord) and record.participants == tuple(S)
    expected = sum(values[p] * examples[p] for p in S) / sum(examples.values())
    np.testing.assert_allclose(fed.weights[0], expected, atol=1e-5)
    assert record.num_examples == sum(examples.values())
    assert record.train_metrics["loss"] == pytest.approx(np.mean(list(values.values())))


def test_secure_round_recovers_a_dropout_after_masked_input_and_before_it() -> None:
    fed = _secure_fed(weight_cap=100)
    values = {p: 0.05 * i for i, p in enumerate(S)}  # deltas well inside the clipping bound
    handlers = _secure_handlers(fed, values, {p: 100 for p in S})
    _drive(fed, handlers, {})
    # S[1] vanishes after sending its masked input: its input is in the sum
    record = _drive(fed, handlers, {Stage.SECAGG_UNMASK: {S[1]}})
    assert isinstance(record, RoundRecord) and S[1] in record.participants
    np.testing.assert_allclose(fed.weights[0], np.mean(list(values.values())), atol=1e-5)
    # S[2] vanishes after sharing keys: the others' sum, its pairwise masks removed
    before = fed.weights[0].copy()
    record = _drive(fed, handlers, {Stage.SECAGG_MASKED: {S[2]}})
    assert isinstance(record, RoundRecord) and S[2] not in record.participants
    others = [values[p] for p in S if p != S[2]]
    np.testing.assert_allclose(fed.weights[0], before + np.mean(others), atol=1e-5)


def test_buckets_give_one_pseudo_update_each_to_the_algorithm() -> None:
    fed = _secure_fed(bucket_size=3, weight_cap=100)
    seen: list[list[object]] = []
    aggregate = fed.algorithm.aggregate

    def spy(global_weights, updates):  # type: ignore[no-untyped-def]
        seen.append(list(updates))
        return aggregate(global_weights, updates)

    fed.algorithm.aggregate = spy  # type: ignore[method-assign]
    values = {p: 0.05 * i for i, p in enumerate(S)}
    handlers = _secure_handlers(fed, values, {p: 50 for p in S})
    _drive(fed, handlers, {})
    record = _drive(fed, handlers, {})
    assert isinstance(record, RoundRecord)
    (updates,) = seen
    assert len(updates) == 2  # 7 participants in buckets of at least 3
    assert sum(u.num_examples for u in updates) == 350
    assert all(u.participant.startswith("bucket-") for u in updates)
    np.testing.assert_allclose(fed.weights[0], np.mean(list(values.values())), atol=1e-5)


def test_too_many_dropouts_fail_the_round_which_is_then_retried_from_scratch() -> None:
    fed = _secure_fed()
    handlers = _secure_handlers(fed, {p: 1.0 for p in S[:4]}, {p: 10 for p in S[:4]})
    with pytest.raises(SecAggError, match="failed in every bucket"):
        _drive(fed, handlers, {Stage.SECAGG_UNMASK: {S[0], S[1]}, Stage.STATS: set()})
    req = fed.next_stage(list(handlers))
    assert req is not None and req.stage is Stage.SECAGG_ADVERTISE and req.round == 0


def test_secure_configuration_is_checked() -> None:
    from phalanx.core.secagg.params import SecAggSettings

    schema = generate_federation(1, 200, seed=1)[0].schema
    plan = FederationPlan(rounds=1, secure_aggregation=True)
    with pytest.raises(ConfigError, match="crypto"):
        Federation(plan, schema, make_algorithm("fedavg"), _init)
    with pytest.raises(ConfigError, match="SCAFFOLD"):
        Federation(plan, schema, make_algorithm("scaffold"), _init, crypto=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="min_members"):
        SecAggSettings(min_members=1)
    fed = _secure_fed()
    with pytest.raises(RoundError, match="at least 3 participants"):
        fed.next_stage(S[:2])
    fed = _secure_fed(scale=2.0**30)
    _drive(fed, _secure_handlers(fed, {p: 1.0 for p in S}, {p: 1 for p in S}), {})
    with pytest.raises(ConfigError, match="overflow"):
        fed.next_stage(S)


def test_suspicion_scores_are_recorded_and_survive_a_snapshot() -> None:
    fed = _fed()
    _skip_stats(fed)
    req = fed.next_stage(P)
    assert req is not None
    fed.algorithm.report = lambda: {P[0]: {"distance": 2.5}}  # type: ignore[attr-defined]
    record = fed.complete_stage({p: _fit_reply(1, p, fed, 1.0) for p in req.tasks})
    assert record is not None and record.suspicion == {P[0]: {"distance": 2.5}}
    meta, arrays = fed.snapshot()
    other = _fed()
    other.restore(meta, arrays)
    assert other.history[0].suspicion == {P[0]: {"distance": 2.5}}
