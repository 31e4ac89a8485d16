"""The coordinator streams FIT replies into the aggregate when the transport can hand them over
one at a time, and the federation ends where the batch path ends."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from phalanx.adapters.inproc import InProcessTransport
from phalanx.adapters.pool import ProcessPoolTransport
from phalanx.core.aggregation import make_algorithm
from phalanx.core.aggregation.streaming import PartialSum
from phalanx.core.features.stats import compute_stats, merge_all
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.fit_stream import SumPlan
from phalanx.core.messages import Reply, Task
from phalanx.core.rounds import Federation, FederationPlan
from phalanx.core.types import ParticipantId
from phalanx.data.synthetic import generate_federation
from phalanx.ports import ForwardingTransport, StreamingTransport, Transport
from phalanx.services.coordinator import Coordinator

PIDS = [ParticipantId(f"org-{i:02d}") for i in range(30)]
PARTS = generate_federation(2, 100, seed=4)


def handler(task: Task) -> Reply:
    """A participant that moves every weight by its own pseudo-random step."""
    rng = np.random.default_rng(int(task.config["seed"]) % 2**32)
    return Reply(
        participant=ParticipantId(str(task.config["me"])),
        round=task.round,
        stage=task.stage,
        schema_hash=task.schema_hash,
        arrays=[(w + rng.standard_normal(w.shape)).astype(np.float32) for w in task.weights],
        num_examples=int(rng.integers(1, 500)),
    )


def handlers() -> dict[ParticipantId, object]:
    def bind(pid: ParticipantId) -> object:
        def run(task: Task) -> Reply:
            return handler(
                Task(
                    task.round,
                    task.stage,
                    task.schema_hash,
                    task.weights,
                    {**task.config, "me": pid},
                    task.extras,
                )
            )

        return run

    return {p: bind(p) for p in PIDS}


class Batched(ForwardingTransport):
    """A transport wrapper that hides the streaming capability (the batch path)."""


def run(transport: Transport, algorithm: str = "fedavgm") -> tuple[Federation, int, int]:
    """Three rounds; returns the federation, the replies streamed one by one, and the updates
    that arrived pre-summed by a worker."""
    transform = FeatureTransform.fit(merge_all([compute_stats(p) for p in PARTS]))
    fed = Federation(
        FederationPlan(rounds=3, federated_stats=False, seed=7),
        PARTS[0].schema,
        make_algorithm(algorithm),
        lambda n: [np.zeros((n, 4), dtype=np.float32), np.zeros(4, dtype=np.float32)],
        transform=transform,
    )
    calls = presummed = 0
    absorb, plan = fed.absorb, fed.sum_plan

    def counted(pid: ParticipantId, reply: Reply | None) -> Reply | None:
        nonlocal calls
        calls += 1
        return absorb(pid, reply)

    def counted_plan() -> SumPlan | None:
        got = plan()
        if got is None:
            return None

        def take(
            partial: PartialSum, replies: Mapping[ParticipantId, Reply]
        ) -> dict[ParticipantId, Reply]:
            nonlocal presummed
            presummed += len(partial.participants)
            return got.absorb(partial, replies)

        return dataclasses.replace(got, absorb=take)

    fed.absorb = counted  # type: ignore[method-assign]
    fed.sum_plan = counted_plan  # type: ignore[method-assign]
    Coordinator(fed, transport).run()
    return fed, calls, presummed


def test_streamed_pool_and_in_process_runs_equal_the_batch_run_bit_for_bit() -> None:
    batch, batch_calls, _ = run(Batched(InProcessTransport(handlers())))  # type: ignore[arg-type]
    inproc, inproc_calls, none = run(InProcessTransport(handlers()))  # type: ignore[arg-type]
    with ProcessPoolTransport(handlers(), workers=2) as pool:  # type: ignore[arg-type]
        assert isinstance(pool, StreamingTransport)
        pooled, pool_calls, presummed = run(pool)
    with ProcessPoolTransport(handlers(), workers=5) as pool:  # type: ignore[arg-type]
        five, five_calls, five_presummed = run(pool)  # 5 does not divide 12: groups split
    assert batch_calls == 0 and inproc_calls == 3 * len(PIDS) and none == 0
    assert pool_calls == 0 and presummed == 3 * len(PIDS)  # 2 divides 12: whole groups
    assert five_calls == 90 and five_presummed == 0  # every group spans workers here
    for fed in (inproc, pooled, five):
        for x, y in zip(batch.weights, fed.weights, strict=True):
            np.testing.assert_array_equal(x, y)
        assert [r.suspicion for r in fed.history] == [r.suspicion for r in batch.history]
        assert all(r.participants == tuple(PIDS) for r in fed.history)


def test_a_robust_rule_gets_every_update_and_nothing_is_streamed() -> None:
    fed, calls, presummed = run(InProcessTransport(handlers()), "median")  # type: ignore[arg-type]
    assert calls == presummed == 0 and fed.round == 3
