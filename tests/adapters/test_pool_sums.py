"""Hierarchical aggregation in the pool: groups pre-summed by workers give the in-process
federation's round exactly, with bad, declined and failed members judged by the coordinator."""

from __future__ import annotations

import dataclasses

import numpy as np

from phalanx.adapters.inproc import InProcessTransport
from phalanx.adapters.pool import ProcessPoolTransport
from phalanx.core.aggregation import make_algorithm
from phalanx.core.errors import ConfigError
from phalanx.core.features.stats import compute_stats, merge_all
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.messages import Reply, Task
from phalanx.core.rounds import Federation, FederationPlan, RoundRecord
from phalanx.core.types import ParticipantId
from phalanx.data.synthetic import generate_federation
from phalanx.ports import Transport
from phalanx.services.coordinator import Coordinator

PIDS = [ParticipantId(f"org-{i:02d}") for i in range(26)]
PARTS = generate_federation(2, 100, seed=5)
NAN, SHAPE, DECLINE, CRASH, NEGATIVE = PIDS[3], PIDS[8], PIDS[13], PIDS[14], PIDS[20]


def participant(pid: ParticipantId) -> object:
    def handle(task: Task) -> Reply:
        if pid == CRASH and task.round == 2:
            raise ConfigError("asked to crash in round 2")
        rng = np.random.default_rng(int(task.config["seed"]) % 2**32)
        arrays = [(w + rng.standard_normal(w.shape)).astype(np.float32) for w in task.weights]
        reply = Reply(
            pid, task.round, task.stage, task.schema_hash, arrays, int(rng.integers(1, 99))
        )
        if pid == NAN:
            reply.arrays[1][0] = np.nan
        if pid == SHAPE:
            return dataclasses.replace(reply, arrays=reply.arrays[:1])
        if pid == DECLINE:
            return dataclasses.replace(reply, arrays=[], refused="privacy budget spent")
        if pid == NEGATIVE:
            return dataclasses.replace(reply, num_examples=-1)
        return reply

    return handle


def run(transport: Transport) -> tuple[Federation, list[RoundRecord]]:
    transform = FeatureTransform.fit(merge_all([compute_stats(p) for p in PARTS]))
    fed = Federation(
        FederationPlan(rounds=3, federated_stats=False, seed=3, min_participants=2),
        PARTS[0].schema,
        make_algorithm("fedavg"),
        lambda n: [np.zeros((n, 5), dtype=np.float32), np.zeros(5, dtype=np.float32)],
        transform=transform,
    )
    return fed, Coordinator(fed, transport).run()


def test_pre_summed_groups_give_the_in_process_rounds_bit_for_bit() -> None:
    handlers = {p: participant(p) for p in PIDS}
    inproc = InProcessTransport(handlers)  # type: ignore[arg-type]
    want, want_history = run(inproc)
    with ProcessPoolTransport(handlers, workers=2) as pool:  # type: ignore[arg-type]
        got, got_history = run(pool)
        assert pool.bytes_up == inproc.bytes_up and pool.bytes_down == inproc.bytes_down
    for a, b in zip(want.weights, got.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [r.suspicion for r in got_history] == [r.suspicion for r in want_history]
    for w, g in zip(want_history, got_history, strict=True):
        assert g.participants == w.participants and g.num_examples == w.num_examples
        assert g.train_metrics == w.train_metrics and g.refused == w.refused
    r1, r2 = got_history[0], got_history[1]
    assert "NaN" in r1.refused[NAN] and "layer shapes" in r1.refused[SHAPE]
    assert r1.refused[DECLINE] == "privacy budget spent"
    assert "whole number >= 0" in r1.refused[NEGATIVE]
    assert CRASH in r1.participants and CRASH not in r2.participants
    assert len(r1.participants) == len(PIDS) - 4
