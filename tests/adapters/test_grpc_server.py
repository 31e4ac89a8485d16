"""The coordinator server: mutual TLS refusals are audited, bad replies refused, server survives."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_fixtures import Federation, ThrowawayCa, federation_factory

from phalanx.adapters.grpc import codec
from phalanx.core.errors import ProtocolError, TrustError
from phalanx.core.messages import Reply, Stage, Task
from phalanx.core.types import ParticipantId
from phalanx.ports import LinkUnavailable

ORG = ParticipantId("org-01")


@pytest.fixture
def make_federation() -> Iterator[Callable[..., Federation]]:
    yield from federation_factory()


def _wait_audit(fed: Federation, event: str, n: int = 1, timeout: float = 5.0) -> list[Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if len(found := fed.audit.of(event)) >= n:
            return found
        time.sleep(0.02)
    return fed.audit.of(event)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no certificate", "certificate"),
        ("another CA", "unable to get local issuer certificate"),
        ("expired", "certificate has expired"),
    ],
)
def test_handshake_refusals_are_audited(
    make_federation: Callable[..., Federation], case: str, reason: str
) -> None:
    fed = make_federation({ORG})
    if case == "no certificate":
        client = fed.client(None)
    elif case == "another CA":
        client = fed.client(None, issued=ThrowawayCa("rogue-ca").issue(ORG))
    else:
        client = fed.client(None, issued=fed.ca.issue(ORG, expired=True))
    with pytest.raises(LinkUnavailable, match="TLS handshake"):
        client.pull_task(0.1)
    events = _wait_audit(fed, "tls.handshake_refused")
    assert events, fed.audit.events
    assert any(reason.lower() in e[2]["reason"].lower() for e in events), events
    assert all(e[1].startswith("127.0.0.1:") for e in events)
    assert fed.server.transport.available() == []


def test_revoked_identity_is_refused_on_the_next_call(
    make_federation: Callable[..., Federation],
) -> None:
    fed = make_federation({ORG})
    client = fed.client(ORG)
    assert client.pull_task(0.05) is None  # accepted before the revocation
    fed.authority.revoked.add(ORG)
    with pytest.raises(TrustError, match=r"refused this identity.*revoked"):
        client.pull_task(0.05)
    (event,) = fed.audit.of("auth.refused")
    assert "revoked" in event[2]["reason"] and event[2]["method"] == "PullTask"


def test_roles_participant_and_admin(make_federation: Callable[..., Federation]) -> None:
    bundle = bytes(range(256)) * 9000  # > 2 chunks of 1 MiB
    fed = make_federation({ORG}, status=lambda: {"round": 3}, model=lambda: bundle)
    admin, org, stranger = fed.client("admin"), fed.client(ORG), fed.client("org-99")
    doc = admin.status()
    assert doc["round"] == 3 and doc["enrolled"] == [ORG]
    with pytest.raises(TrustError, match="Status"):
        org.status()
    with pytest.raises(TrustError, match="PullTask"):
        stranger.pull_task(0.05)
    with pytest.raises(TrustError):
        admin.pull_task(0.05)
    assert org.pull_model() == bundle
    assert admin.pull_model() == bundle
    assert {e[1] for e in fed.audit.of("auth.denied")} == {ORG, "org-99", "admin"}


def _exchange_in_background(
    fed: Federation, task: Task, deadline_s: float = 5.0
) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        out["replies"] = fed.server.transport.exchange({ORG: task}, deadline_s=deadline_s)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _reply(task: Task, **kw: Any) -> Reply:
    return Reply(ORG, task.round, task.stage, task.schema_hash, **kw)


def test_stale_and_replayed_replies_are_refused(
    make_federation: Callable[..., Federation],
) -> None:
    fed = make_federation({ORG})
    client = fed.client(ORG)
    task = Task(1, Stage.FIT, "schema", weights=[np.ones((4, 4), np.float32)])
    t, out = _exchange_in_background(fed, task)
    got = client.pull_task(2.0)
    assert got is not None and np.array_equal(got.weights[0], task.weights[0])
    # A reply for another round than the pending one: stale.
    with pytest.raises(ProtocolError, match=r"FAILED_PRECONDITION.*stale"):
        client.push_reply(Reply(ORG, 7, Stage.FIT, "schema"))
    receipt = client.push_reply(_reply(task, arrays=[np.zeros(3, np.float32)], num_examples=5))
    t.join(5)
    assert list(out["replies"]) == [ORG] and out["replies"][ORG].num_examples == 5
    assert receipt.size > 0 and len(receipt.sha256) == 64
    # The same reply again: replayed.
    with pytest.raises(ProtocolError, match="ALREADY_EXISTS"):
        client.push_reply(_reply(task, num_examples=5))
    assert fed.audit.of("reply.stale") and fed.audit.of("reply.replayed")
    assert fed.server.transport.bytes_up > 0 and fed.server.transport.bytes_down > 0


def _pending(fed: Federation) -> tuple[Any, threading.Thread, dict[str, Any], codec.Envelope]:
    client = fed.client(ORG)
    task = Task(1, Stage.FIT, "schema")
    t, out = _exchange_in_background(fed, task, deadline_s=3.0)
    assert client.pull_task(2.0) is not None
    env = client._last
    assert env is not None
    return client, t, out, env


def test_oversized_and_garbled_replies_are_refused_and_the_server_survives(
    make_federation: Callable[..., Federation],
) -> None:
    fed = make_federation({ORG}, max_message_bytes=2 * 1024 * 1024, max_payload_bytes=3_000_000,
                          chunk_bytes=64 * 1024)  # fmt: skip
    client, t, out, env = _pending(fed)
    fields = {"ticket": env.ticket, "round": env.round, "stage": env.stage}
    # One gRPC message over the per-message limit: gRPC itself refuses it.
    big = iter([codec.envelope_chunk(codec.Envelope(codec.Kind.REPLY, 10, **fields)),
                b"\x12" + b"\xff\xff\xff\x01" + bytes(4 * 1024 * 1024)])  # fmt: skip
    with pytest.raises(ProtocolError, match="RESOURCE_EXHAUSTED"):
        client.push_chunks(big)
    # A payload announced over the total cap.
    huge = iter([codec.envelope_chunk(codec.Envelope(codec.Kind.REPLY, 10**9, **fields))])
    with pytest.raises(ProtocolError, match="RESOURCE_EXHAUSTED"):
        client.push_chunks(huge)
    # Garbage where a chunk should be, and a body that fails its digest.
    with pytest.raises(ProtocolError, match="INVALID_ARGUMENT"):
        client.push_chunks(iter([b"\xff\x00garbage"]))
    body = codec.encode_reply(Reply(ORG, 1, Stage.FIT, "schema"))
    bad = list(codec.payload_chunks(codec.Kind.REPLY, body, **fields))
    bad[-1] = bad[-1][:-1] + bytes([bad[-1][-1] ^ 1])
    with pytest.raises(ProtocolError, match=r"INVALID_ARGUMENT.*sha256"):
        client.push_chunks(iter(bad))
    assert fed.audit.of("reply.oversized") and fed.audit.of("reply.garbled")
    # Still serving: the genuine reply goes through.
    client.push_reply(Reply(ORG, 1, Stage.FIT, "schema", num_examples=1))
    t.join(5)
    assert list(out["replies"]) == [ORG]


def test_a_missing_reply_leaves_the_participant_out_after_the_deadline(
    make_federation: Callable[..., Federation],
) -> None:
    fed = make_federation({ORG, "org-02"})
    fed.client(ORG).pull_task(0.05)
    t0 = time.monotonic()
    replies = fed.server.transport.exchange({ORG: Task(1, Stage.FIT, "s")}, deadline_s=0.5)
    assert replies == {} and 0.4 < time.monotonic() - t0 < 3
    with pytest.raises(ProtocolError, match="not enrolled"):
        fed.server.transport.exchange({ParticipantId("org-77"): Task(1, Stage.FIT, "s")})


def test_done_signal(make_federation: Callable[..., Federation]) -> None:
    fed = make_federation({ORG})
    client = fed.client(ORG)
    fed.server.finish()
    assert client.pull_task(1.0) is None and client.finished


def _garbled_pull(fed: Federation) -> Iterator[bytes]:
    client = fed.client(ORG)
    call = client.channel.unary_stream(codec.PULL_TASK)
    return iter(call(b"\xff\xff\xff", timeout=5))


def test_garbled_request_is_invalid_argument(make_federation: Callable[..., Federation]) -> None:
    fed = make_federation({ORG})
    with pytest.raises(grpc.RpcError) as info:
        list(_garbled_pull(fed))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
