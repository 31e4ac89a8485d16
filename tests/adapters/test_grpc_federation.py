"""A whole federation over gRPC with mutual TLS: same weights as in-process, dropouts survived."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from grpc_fixtures import Federation, federation_factory

from phalanx.adapters.inproc import InProcessTransport
from phalanx.core.aggregation import make_algorithm
from phalanx.core.messages import Reply, Stage, Task
from phalanx.core.rounds import Federation as RoundMachine
from phalanx.core.rounds import FederationPlan
from phalanx.core.types import ParticipantId, Weights
from phalanx.data.synthetic import generate_federation
from phalanx.models.federated import build_model
from phalanx.ports import Transport
from phalanx.services.agent import Backoff, run_agent
from phalanx.services.coordinator import Coordinator
from phalanx.services.participant import Participant

torch.set_num_threads(1)

IDS = [ParticipantId(f"org-{i + 1:02d}") for i in range(3)]
MODEL = {"kind": "mlp", "hidden": [16], "dropout": 0.0, "lr": 0.01, "batch_size": 64}


@pytest.fixture
def make_federation() -> Iterator[Callable[..., Federation]]:
    yield from federation_factory()


def _participants() -> dict[ParticipantId, Participant]:
    parts = generate_federation(3, 600, seed=1)
    return {pid: Participant(pid, part) for pid, part in zip(IDS, parts, strict=True)}


def _run(transport: Transport, participants: dict[ParticipantId, Participant], **kw: Any) -> Any:
    schema = next(iter(participants.values())).train.schema
    plan = FederationPlan(
        rounds=kw.pop("rounds", 2),
        seed=7,
        min_participants=kw.pop("min_participants", 3),
        train_config={"model": MODEL, "local_epochs": 1},
    )

    def init(n: int) -> Weights:
        return build_model(MODEL, n, {"seed": 7}).get_weights()

    fed = RoundMachine(plan, schema, make_algorithm("fedavg"), init)
    Coordinator(fed, transport, **kw).run()
    return fed


def _agents(
    fed: Federation, participants: dict[ParticipantId, Any], stops: dict[ParticipantId, Any]
) -> list[threading.Thread]:
    threads = []
    for pid, p in participants.items():
        issued = fed.ca.issue(pid)

        def factory(issued: Any = issued) -> Any:
            return fed.client(None, issued=issued)

        t = threading.Thread(
            target=run_agent,
            args=(factory, p),
            kwargs={"stop": stops[pid], "wait_s": 0.5, "backoff": Backoff(initial_s=0.05)},
            daemon=True,
        )
        t.start()
        threads.append(t)
    return threads


def test_grpc_federation_equals_in_process(make_federation: Callable[..., Federation]) -> None:
    reference = _run(InProcessTransport({p: h.handle for p, h in _participants().items()}),
                     _participants())  # fmt: skip
    fed = make_federation(set(IDS))
    participants = _participants()
    stops = {p: threading.Event() for p in IDS}
    threads = _agents(fed, participants, stops)
    assert len(fed.server.transport.wait_for(3, timeout_s=10)) == 3
    result = _run(fed.server.transport, participants, deadline_s=30)
    fed.server.finish()
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive(), "the agent did not exit on the coordinator's DONE"
    assert len(result.history) == 2
    for a, b in zip(result.weights, reference.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    transport = fed.server.transport
    assert transport.bytes_down > 0 and transport.bytes_up > 0
    accepted = fed.audit.of("reply.accepted")
    assert len(accepted) == 3 * 3  # stats + 2 fit rounds, three participants each
    assert not fed.audit.of("auth.refused")


class _StopsInRound:
    """Wraps a participant: on ``round`` FIT it sets its agent's stop event (killed mid-round)."""

    def __init__(self, inner: Participant, stop: threading.Event, round_id: int) -> None:
        self.inner, self.stop, self.round_id = inner, stop, round_id
        self.participant_id = inner.participant_id

    def handle(self, task: Task) -> Reply:
        reply = self.inner.handle(task)
        if task.stage is Stage.FIT and task.round == self.round_id:
            self.stop.set()
        return reply


def test_participant_stopped_mid_round_is_left_out(
    make_federation: Callable[..., Federation],
) -> None:
    fed = make_federation(set(IDS))
    participants: dict[ParticipantId, Any] = dict(_participants())
    stops = {p: threading.Event() for p in IDS}
    participants[IDS[2]] = _StopsInRound(participants[IDS[2]], stops[IDS[2]], 1)
    threads = _agents(fed, participants, stops)
    assert len(fed.server.transport.wait_for(3, timeout_s=10)) == 3
    result = _run(fed.server.transport, participants, deadline_s=1.5, min_participants=2)
    fed.server.finish()
    for t in threads:
        t.join(timeout=10)
    assert [r.participants for r in result.history] == [tuple(IDS[:2]), tuple(IDS[:2])]
    assert len(fed.audit.of("reply.accepted")) == 3 + 2 + 2
