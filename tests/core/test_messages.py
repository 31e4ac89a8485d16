"""The binary frames of tasks and replies: exact round trips, and only ProtocolError on garbage."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.errors import ProtocolError
from phalanx.core.messages import (
    Reply,
    Stage,
    Task,
    decode_reply,
    decode_task,
    encode_reply,
    encode_task,
)
from phalanx.core.types import ParticipantId


def _weights(rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)]


def test_task_round_trip_is_exact(rng: np.random.Generator) -> None:
    w = _weights(rng)
    task = Task(
        round=3,
        stage=Stage.FIT,
        schema_hash="ab" * 32,
        weights=w,
        config={"lr": 0.001, "model": {"hidden": [8, 4]}, "transform": {"k": [1.5, 2.5]}},
        extras={"control": [np.ones(2, dtype=np.float32)]},
    )
    back = decode_task(encode_task(task))
    assert back.round == 3
    assert back.stage is Stage.FIT
    assert back.schema_hash == task.schema_hash
    assert back.config == task.config
    for a, b in zip(back.weights, w, strict=True):
        assert a.dtype == b.dtype
        assert a.shape == b.shape
        assert np.array_equal(a, b)
    assert np.array_equal(back.extras["control"][0], np.ones(2, dtype=np.float32))


def test_reply_round_trip_keeps_float64_statistics(rng: np.random.Generator) -> None:
    vec = rng.normal(size=17)
    reply = Reply(
        participant=ParticipantId("org-01"),
        round=0,
        stage=Stage.STATS,
        schema_hash="cd" * 32,
        arrays=[vec],
        num_examples=5,
        metrics={"loss": 0.5},
        refused="",
    )
    back = decode_reply(encode_reply(reply))
    assert back.arrays[0].dtype == np.float64
    assert np.array_equal(back.arrays[0], vec)
    assert back.participant == "org-01"
    assert back.metrics == {"loss": 0.5}


def test_frame_size_is_arrays_plus_small_header(rng: np.random.Generator) -> None:
    w = [np.zeros((256, 122), dtype=np.float32)]
    frame = encode_task(Task(round=1, stage=Stage.FIT, schema_hash="x", weights=w))
    assert w[0].nbytes < len(frame) < w[0].nbytes + 512


def test_truncated_frame_is_refused(rng: np.random.Generator) -> None:
    frame = encode_task(Task(round=1, stage=Stage.FIT, schema_hash="x", weights=_weights(rng)))
    with pytest.raises(ProtocolError, match="truncated"):
        decode_task(frame[:-5])
    with pytest.raises(ProtocolError, match="trailing"):
        decode_task(frame + b"\0")


def test_a_reply_is_not_a_task(rng: np.random.Generator) -> None:
    frame = encode_reply(
        Reply(participant=ParticipantId("a"), round=1, stage=Stage.FIT, schema_hash="x")
    )
    with pytest.raises(ProtocolError, match="expected a task frame"):
        decode_task(frame)


def test_object_dtype_cannot_be_sent() -> None:
    task = Task(round=1, stage=Stage.FIT, schema_hash="x", weights=[np.array(["a"], dtype=object)])
    with pytest.raises(ProtocolError, match="dtype"):
        encode_task(task)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_protocol_error(blob: bytes) -> None:
    for decode in (decode_task, decode_reply):
        with contextlib.suppress(ProtocolError):
            decode(blob)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.binary(min_size=1, max_size=8))
def test_corrupted_real_frames_raise_only_protocol_error(pos: int, junk: bytes) -> None:
    rng = np.random.default_rng(0)
    frame = encode_task(Task(round=1, stage=Stage.FIT, schema_hash="x", weights=_weights(rng)))
    pos = pos % len(frame)
    bad = frame[:pos] + junk + frame[pos + len(junk) :]
    with contextlib.suppress(ProtocolError):
        decode_task(bad)
