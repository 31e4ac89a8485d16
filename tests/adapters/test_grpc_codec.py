"""The protobuf codec: round trips, validation, and ProtocolError (only) on garbage."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from phalanx.adapters.grpc import codec
from phalanx.core.errors import ProtocolError
from phalanx.core.messages import Reply, Stage, Task
from phalanx.core.types import ParticipantId


def _task() -> Task:
    return Task(
        round=3,
        stage=Stage.FIT,
        schema_hash="abc123",
        weights=[np.arange(12, dtype=np.float32).reshape(3, 4), np.zeros(0, np.float32)],
        config={"seed": 7, "lr": 0.1, "nested": {"xs": [1, 2.5]}, "nan": float("nan")},
        extras={"control": [np.full((2, 2), -1.5, np.float64)]},
    )


def test_task_and_reply_round_trip() -> None:
    task = codec.decode_task(codec.encode_task(_task()))
    ref = _task()
    assert (task.round, task.stage, task.schema_hash) == (3, Stage.FIT, "abc123")
    for a, b in zip(task.weights, ref.weights, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert task.config["nested"] == {"xs": [1, 2.5]} and np.isnan(task.config["nan"])
    assert np.array_equal(task.extras["control"][0], ref.extras["control"][0])
    reply = Reply(
        ParticipantId("org-01"),
        3,
        Stage.EVALUATE,
        "abc123",
        arrays=[np.array([1, 2], dtype=np.int64)],
        num_examples=9,
        metrics={"loss": 0.25},
        extras={"d": [np.ones(3, np.float32)]},
    )
    back = codec.decode_reply(codec.encode_reply(reply))
    assert back.participant == "org-01" and back.metrics == {"loss": 0.25}
    assert back.arrays[0].dtype == np.int64 and np.array_equal(back.arrays[0], [1, 2])
    assert back.num_examples == 9 and np.array_equal(back.extras["d"][0], np.ones(3))


def test_big_endian_arrays_travel_little_endian() -> None:
    arr = np.arange(5, dtype=">f4")
    back = codec.tensor_from_proto(codec.tensor_to_proto(arr))
    assert back.dtype.str == "<f4" and np.array_equal(back, arr)


def test_disallowed_dtype_and_inconsistent_tensor_are_refused() -> None:
    with pytest.raises(ProtocolError, match="dtype"):
        codec.tensor_to_proto(np.array(["a"], dtype=object))
    msg = codec.tensor_to_proto(np.ones(4, np.float32))
    msg.shape[:] = [5]
    with pytest.raises(ProtocolError, match="needs 20 bytes"):
        codec.tensor_from_proto(msg)
    msg.dtype = "|O"
    with pytest.raises(ProtocolError, match="refused"):
        codec.tensor_from_proto(msg)


def test_chunked_payload_round_trip_and_checks() -> None:
    body = bytes(range(256)) * 100
    chunks = list(codec.payload_chunks(codec.Kind.REPLY, body, chunk_bytes=1000, ticket=4,
                                       round=2, stage="fit"))  # fmt: skip
    assert len(chunks) == 1 + 26
    env, got = codec.read_payload(iter(chunks), max_bytes=len(body))
    assert got == body and (env.ticket, env.round, env.stage) == (4, 2, "fit")
    with pytest.raises(codec.PayloadTooLarge):
        codec.read_payload(iter(chunks), max_bytes=len(body) - 1)
    with pytest.raises(ProtocolError, match="truncated"):
        codec.read_payload(iter(chunks[:-1]), max_bytes=len(body))
    with pytest.raises(ProtocolError, match="envelope"):
        codec.read_payload(iter(chunks[1:]), max_bytes=len(body))
    with pytest.raises(ProtocolError, match="empty"):
        codec.read_payload(iter([]), max_bytes=1)


def test_garbage_raises_protocol_error_only() -> None:
    rng = np.random.default_rng(11)
    good = codec.encode_task(_task())
    decoders = [codec.decode_task, codec.decode_reply, codec.decode_envelope,
                codec.decode_status, codec.decode_ack, codec.decode_pull_request]  # fmt: skip
    for i in range(400):
        if i % 2:
            blob = rng.integers(0, 256, size=int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
        else:  # flip bytes of a valid frame
            arr = np.frombuffer(good, dtype=np.uint8).copy()
            idx = rng.integers(0, len(arr), size=3)
            arr[idx] ^= rng.integers(1, 256, size=3, dtype=np.uint8)
            blob = arr.tobytes()
        for decode in decoders:
            with contextlib.suppress(ProtocolError):
                decode(blob)
