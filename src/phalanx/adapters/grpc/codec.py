"""Protobuf mapping of the round protocol: the only module that imports the generated code.

Tasks and replies map onto ``phalanx.v1.Task`` / ``phalanx.v1.Reply`` with ``x_to_proto`` /
``x_from_proto`` pairs; the server and client only ever see bytes and the core dataclasses.
Every payload travels as a stream of ``Chunk`` messages: an :class:`Envelope` first, then the
serialized payload cut into data chunks. :func:`payload_chunks` writes such a stream and
:func:`read_payload` reassembles one, enforcing the size cap and the sha256 digest.

Every decoder raises :class:`~phalanx.core.errors.ProtocolError` (and nothing else) on any input.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

import numpy as np
from google.protobuf.message import DecodeError
from numpy.typing import NDArray

from phalanx.adapters.grpc._generated import coordinator_pb2 as pb
from phalanx.core.errors import ProtocolError
from phalanx.core.messages import Reply, Stage, Task
from phalanx.core.types import ParticipantId, Weights

PROTOCOL_VERSION = 1
SERVICE = "phalanx.v1.Coordinator"
PULL_TASK = f"/{SERVICE}/PullTask"
PUSH_REPLY = f"/{SERVICE}/PushReply"
STATUS = f"/{SERVICE}/Status"
PULL_MODEL = f"/{SERVICE}/PullModel"
CHUNK_BYTES = 1024 * 1024
ALLOWED_DTYPES = frozenset({"<f4", "<f8", "<i8", "<i4", "<u8", "<u4", "|u1", "|i1"})
MAX_DIMS = 32
M = TypeVar("M", bound=Any)


class Kind(IntEnum):
    """What a payload stream carries (``phalanx.v1.PayloadKind``)."""

    TASK = pb.PAYLOAD_KIND_TASK
    REPLY = pb.PAYLOAD_KIND_REPLY
    MODEL = pb.PAYLOAD_KIND_MODEL
    IDLE = pb.PAYLOAD_KIND_IDLE
    DONE = pb.PAYLOAD_KIND_DONE


@dataclass(frozen=True)
class Envelope:
    """The first message of a payload stream."""

    kind: Kind
    total_size: int = 0
    sha256: bytes = b""
    ticket: int = 0
    round: int = 0
    stage: str = ""
    schema_hash: str = ""


# -- arrays -------------------------------------------------------------------------------------


def tensor_to_proto(array: NDArray[Any]) -> pb.Tensor:
    """A numpy array as raw little-endian bytes with dtype and shape."""
    arr = np.asarray(array)
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    arr = np.ascontiguousarray(arr, dtype=dt)
    if arr.dtype.str not in ALLOWED_DTYPES:
        raise ProtocolError(
            f"cannot send an array of dtype {arr.dtype}: expected one of {sorted(ALLOWED_DTYPES)}"
        )
    return pb.Tensor(dtype=arr.dtype.str, shape=list(arr.shape), data=arr.tobytes())


def tensor_from_proto(msg: pb.Tensor) -> NDArray[Any]:
    """Inverse of :func:`tensor_to_proto`; checks dtype, shape and byte count first."""
    if msg.dtype not in ALLOWED_DTYPES:
        raise ProtocolError(
            f"array of dtype {msg.dtype!r} refused: expected one of {sorted(ALLOWED_DTYPES)}"
        )
    shape = tuple(int(s) for s in msg.shape)
    if len(shape) > MAX_DIMS or any(s < 0 for s in shape):
        raise ProtocolError(f"array shape {shape} is invalid (negative or over {MAX_DIMS} dims)")
    dtype = np.dtype(msg.dtype)
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(msg.data):
        raise ProtocolError(
            f"array of dtype {msg.dtype} and shape {shape} needs {expected} bytes,"
            f" found {len(msg.data)}"
        )
    return np.frombuffer(msg.data, dtype=dtype).reshape(shape).copy()


def _arrays_to_proto(arrays: Iterable[NDArray[Any]]) -> list[pb.Tensor]:
    return [tensor_to_proto(a) for a in arrays]


def _arrays_from_proto(msgs: Iterable[pb.Tensor]) -> Weights:
    return [tensor_from_proto(m) for m in msgs]


def _stage(value: str) -> Stage:
    try:
        return Stage(value)
    except ValueError:
        raise ProtocolError(
            f"unknown stage {value!r}: expected one of {[s.value for s in Stage]}"
        ) from None


# -- task and reply -----------------------------------------------------------------------------


def task_to_proto(task: Task) -> pb.Task:
    """A :class:`Task` as ``phalanx.v1.Task`` (its config as JSON text)."""
    msg = pb.Task(
        round=task.round,
        stage=task.stage.value,
        schema_hash=task.schema_hash,
        weights=_arrays_to_proto(task.weights),
        config_json=json.dumps(task.config, separators=(",", ":"), allow_nan=True),
    )
    for key, arrays in task.extras.items():
        msg.extras[key].tensors.extend(_arrays_to_proto(arrays))
    return msg


def task_from_proto(msg: pb.Task) -> Task:
    """Inverse of :func:`task_to_proto`."""
    try:
        config = json.loads(msg.config_json) if msg.config_json else {}
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"task config is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ProtocolError(f"task config must be a JSON object, found {type(config).__name__}")
    return Task(
        round=int(msg.round),
        stage=_stage(msg.stage),
        schema_hash=msg.schema_hash,
        weights=_arrays_from_proto(msg.weights),
        config=config,
        extras={k: _arrays_from_proto(v.tensors) for k, v in msg.extras.items()},
    )


def reply_to_proto(reply: Reply) -> pb.Reply:
    """A :class:`Reply` as ``phalanx.v1.Reply``."""
    msg = pb.Reply(
        participant=str(reply.participant),
        round=reply.round,
        stage=reply.stage.value,
        schema_hash=reply.schema_hash,
        arrays=_arrays_to_proto(reply.arrays),
        num_examples=reply.num_examples,
        metrics={str(k): float(v) for k, v in reply.metrics.items()},
        refused=reply.refused,
    )
    for key, arrays in reply.extras.items():
        msg.extras[key].tensors.extend(_arrays_to_proto(arrays))
    return msg


def reply_from_proto(msg: pb.Reply) -> Reply:
    """Inverse of :func:`reply_to_proto`."""
    return Reply(
        participant=ParticipantId(msg.participant),
        round=int(msg.round),
        stage=_stage(msg.stage),
        schema_hash=msg.schema_hash,
        arrays=_arrays_from_proto(msg.arrays),
        num_examples=int(msg.num_examples),
        metrics=dict(msg.metrics),
        extras={k: _arrays_from_proto(v.tensors) for k, v in msg.extras.items()},
        refused=msg.refused,
    )


def _parse(cls: Callable[[], M], blob: bytes, what: str) -> M:
    msg = cls()
    try:
        msg.ParseFromString(blob)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ProtocolError(f"{what} is not a valid phalanx.v1 message: {exc}") from None
    return msg


def encode_task(task: Task) -> bytes:
    """The serialized ``phalanx.v1.Task``."""
    return bytes(task_to_proto(task).SerializeToString())


def decode_task(blob: bytes) -> Task:
    """Inverse of :func:`encode_task`."""
    return task_from_proto(_parse(pb.Task, blob, "task"))


def encode_reply(reply: Reply) -> bytes:
    """The serialized ``phalanx.v1.Reply``."""
    return bytes(reply_to_proto(reply).SerializeToString())


def decode_reply(blob: bytes) -> Reply:
    """Inverse of :func:`encode_reply`."""
    return reply_from_proto(_parse(pb.Reply, blob, "reply"))


# -- chunked payload streams --------------------------------------------------------------------


def envelope_chunk(env: Envelope) -> bytes:
    """The serialized ``Chunk`` holding ``env``."""
    msg = pb.Chunk(
        envelope=pb.Envelope(
            protocol_version=PROTOCOL_VERSION,
            kind=int(env.kind),  # type: ignore[arg-type]
            total_size=env.total_size,
            sha256=env.sha256,
            ticket=env.ticket,
            round=env.round,
            stage=env.stage,
            schema_hash=env.schema_hash,
        )
    )
    return bytes(msg.SerializeToString())


def payload_chunks(
    kind: Kind, body: bytes, *, chunk_bytes: int = CHUNK_BYTES, **fields: Any
) -> Iterator[bytes]:
    """Serialized ``Chunk`` messages: the envelope (size, sha256, ``fields``), then the body."""
    digest = hashlib.sha256(body).digest()
    yield envelope_chunk(Envelope(kind, total_size=len(body), sha256=digest, **fields))
    view = memoryview(body)
    for start in range(0, len(body), chunk_bytes):
        yield bytes(pb.Chunk(data=bytes(view[start : start + chunk_bytes])).SerializeToString())


def decode_envelope(blob: bytes) -> Envelope:
    """The envelope in the first chunk of a stream."""
    msg = _parse(pb.Chunk, blob, "stream chunk")
    if msg.WhichOneof("part") != "envelope":
        raise ProtocolError("a payload stream must start with an envelope, found a data chunk")
    env = msg.envelope
    if env.protocol_version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {env.protocol_version} is not supported: expected"
            f" {PROTOCOL_VERSION}",
            hint="upgrade the older side",
        )
    try:
        kind = Kind(env.kind)
    except ValueError:
        raise ProtocolError(f"unknown payload kind {env.kind}") from None
    return Envelope(
        kind=kind,
        total_size=int(env.total_size),
        sha256=bytes(env.sha256),
        ticket=int(env.ticket),
        round=int(env.round),
        stage=env.stage,
        schema_hash=env.schema_hash,
    )


class PayloadTooLarge(ProtocolError):
    """A payload stream announces or carries more bytes than the receiver accepts."""


def read_payload(
    chunks: Iterator[bytes],
    *,
    max_bytes: int,
    check: Callable[[Envelope], None] | None = None,
) -> tuple[Envelope, bytes]:
    """Reassemble one payload stream and verify its size and sha256.

    Parameters
    ----------
    chunks:
        The serialized ``Chunk`` messages as received.
    max_bytes:
        Cap on the payload size (:class:`PayloadTooLarge` above it, before reading the body).
    check:
        Called with the envelope before the body is read (e.g. to refuse a stale reply early).
    """
    first = next(chunks, None)
    if first is None:
        raise ProtocolError("empty payload stream: expected an envelope")
    env = decode_envelope(first)
    if env.total_size > max_bytes:
        raise PayloadTooLarge(
            f"payload of {env.total_size} bytes exceeds the limit of {max_bytes} bytes"
        )
    if check is not None:
        check(env)
    parts: list[bytes] = []
    size = 0
    for blob in chunks:
        msg = _parse(pb.Chunk, blob, "stream chunk")
        if msg.WhichOneof("part") != "data":
            raise ProtocolError("a payload stream holds a second envelope")
        size += len(msg.data)
        if size > env.total_size:
            raise ProtocolError(f"payload is longer than the {env.total_size} bytes announced")
        parts.append(msg.data)
    body = b"".join(parts)
    if size != env.total_size:
        raise ProtocolError(f"payload is truncated: {size} of {env.total_size} bytes arrived")
    if hashlib.sha256(body).digest() != env.sha256:
        raise ProtocolError("payload sha256 does not match its envelope: corrupted in transit")
    return env, body


# -- small messages -----------------------------------------------------------------------------


def encode_pull_request(wait_ms: int) -> bytes:
    """A serialized ``PullTaskRequest``."""
    return bytes(pb.PullTaskRequest(wait_ms=max(0, int(wait_ms))).SerializeToString())


def decode_pull_request(blob: bytes) -> int:
    """The ``wait_ms`` of a ``PullTaskRequest``."""
    return int(_parse(pb.PullTaskRequest, blob, "pull request").wait_ms)


def encode_ack(received: int, sha256: bytes) -> bytes:
    """A serialized ``PushAck``."""
    return bytes(pb.PushAck(received_bytes=received, sha256=sha256).SerializeToString())


def decode_ack(blob: bytes) -> tuple[int, bytes]:
    """``(received_bytes, sha256)`` of a ``PushAck``."""
    msg = _parse(pb.PushAck, blob, "push acknowledgement")
    return int(msg.received_bytes), bytes(msg.sha256)


def encode_empty() -> bytes:
    """A serialized ``StatusRequest`` / ``ModelRequest`` (both empty)."""
    return b""


def encode_status(document: dict[str, Any]) -> bytes:
    """A serialized ``StatusResponse``."""
    text = json.dumps(document, separators=(",", ":"), default=str)
    return bytes(pb.StatusResponse(json=text).SerializeToString())


def decode_status(blob: bytes) -> dict[str, Any]:
    """The status document of a ``StatusResponse``."""
    msg = _parse(pb.StatusResponse, blob, "status response")
    try:
        doc = json.loads(msg.json)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"status document is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("status document must be a JSON object")
    return doc
