"""Messages of the round protocol and their transport-neutral binary form.

A :class:`Task` goes from the coordinator to one participant; a :class:`Reply` comes back. Both
carry arrays as raw little-endian bytes with dtype and shape (never pickle) and a small JSON
header. The in-process and process-pool transports send exactly these bytes, so a simulation
exercises the same encoding and byte accounting as a deployment; the gRPC adapter maps the same
fields onto protobuf.

Frame layout (all integers little-endian)::

    magic b"PHX1" | u32 header_len | header (UTF-8 JSON) | array payloads, back to back

The header lists every array as ``[group, key, dtype, shape]``; payload sizes follow from dtype and
shape, so a frame is fully validated before any array is built.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import ProtocolError
from phalanx.core.types import ParticipantId, Weights

MAGIC = b"PHX1"
MAX_FRAME_BYTES = 512 * 1024 * 1024
MAX_HEADER_BYTES = 8 * 1024 * 1024
_ALLOWED_DTYPES = {"<f4", "<f8", "<i8", "<i4", "<u8", "<u4", "|u1", "|i1"}


class Stage(StrEnum):
    """Stages a round moves through.

    Federated feature statistics run as the ``STATS`` stage before the first training round;
    ``FIT`` is local training; ``EVALUATE`` is local evaluation of the global model. With secure
    aggregation (SecAgg+, ``phalanx.core.secagg``) a ``STATS`` or ``FIT`` stage is replaced by
    four stages: advertise keys (the participant also computes its statistics or trains here),
    share keys, masked input, and unmask.
    """

    STATS = "stats"
    FIT = "fit"
    EVALUATE = "evaluate"
    SECAGG_ADVERTISE = "secagg_advertise"
    SECAGG_SHARE = "secagg_share_keys"
    SECAGG_MASKED = "secagg_masked_input"
    SECAGG_UNMASK = "secagg_unmask"


SECAGG_STAGES = (
    Stage.SECAGG_ADVERTISE,
    Stage.SECAGG_SHARE,
    Stage.SECAGG_MASKED,
    Stage.SECAGG_UNMASK,
)
"""The secure-aggregation stages, in protocol order."""


@dataclass(frozen=True)
class Task:
    """Work the coordinator asks of one participant.

    Attributes
    ----------
    round:
        Round number (0 is the statistics round); a reply must echo it.
    stage:
        What to do.
    schema_hash:
        The feature schema the federation agreed on; the participant refuses a mismatch.
    weights:
        The global model's parameters (empty for ``STATS``).
    config:
        JSON-ready parameters: local epochs, learning rate, seed, the fitted feature transform ...
    extras:
        Named arrays an algorithm sends along (e.g. SCAFFOLD's server control variate).
    """

    round: int
    stage: Stage
    schema_hash: str
    weights: Weights = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Weights] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A participant's answer to a :class:`Task`.

    Attributes
    ----------
    participant, round, stage, schema_hash:
        Who answers which task; the coordinator refuses anything that does not match.
    arrays:
        The payload: new local weights for ``FIT``, the additive statistics vector for ``STATS``.
    num_examples:
        Examples behind the payload (the aggregation weight).
    metrics:
        Scalars (loss, accuracy ...), never data.
    extras:
        Named arrays for the algorithm (e.g. SCAFFOLD's control-variate delta).
    """

    participant: ParticipantId
    round: int
    stage: Stage
    schema_hash: str
    arrays: Weights = field(default_factory=list)
    num_examples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Weights] = field(default_factory=dict)
    refused: str = ""
    """Non-empty when the participant declined the task, with its reason (e.g. privacy budget)."""


def encode_task(task: Task) -> bytes:
    """The binary frame of a task."""
    header = {
        "kind": "task",
        "round": task.round,
        "stage": task.stage.value,
        "schema_hash": task.schema_hash,
        "config": task.config,
    }
    return _encode(header, {"weights": task.weights, **_prefixed(task.extras)})


def decode_task(frame: bytes) -> Task:
    """Inverse of :func:`encode_task`; :class:`ProtocolError` on anything malformed."""
    header, groups = _decode(frame, "task")
    try:
        return Task(
            round=int(header["round"]),
            stage=Stage(header["stage"]),
            schema_hash=str(header["schema_hash"]),
            weights=groups.pop("weights", []),
            config=dict(header["config"]),
            extras=_unprefixed(groups),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ProtocolError(f"task frame has a malformed header field: {exc}") from None


def encode_reply(reply: Reply) -> bytes:
    """The binary frame of a reply."""
    header, groups = _reply_parts(reply)
    return _encode(header, groups)


def reply_frame_size(reply: Reply) -> int:
    """``len(encode_reply(reply))``, computed without copying the arrays."""
    header, groups = _reply_parts(reply)
    specs, size = _specs(groups)
    blob = json.dumps({**header, "arrays": specs}, separators=(",", ":"), allow_nan=True)
    return 8 + len(blob.encode()) + size


def _reply_parts(reply: Reply) -> tuple[dict[str, Any], dict[str, Weights]]:
    header = {
        "kind": "reply",
        "participant": str(reply.participant),
        "round": reply.round,
        "stage": reply.stage.value,
        "schema_hash": reply.schema_hash,
        "num_examples": reply.num_examples,
        "metrics": reply.metrics,
        "refused": reply.refused,
    }
    return header, {"arrays": reply.arrays, **_prefixed(reply.extras)}


def decode_reply(frame: bytes | memoryview, *, copy: bool = True) -> Reply:
    """Inverse of :func:`encode_reply`; :class:`ProtocolError` on anything malformed.

    With ``copy=False`` the arrays are read-only views of ``frame`` (which they keep alive),
    back to back in the frame's order: for a reader that only reads them once, such as a
    coordinator folding the update into a running sum.
    """
    header, groups = _decode(frame, "reply", copy=copy)
    try:
        return Reply(
            participant=ParticipantId(str(header["participant"])),
            round=int(header["round"]),
            stage=Stage(header["stage"]),
            schema_hash=str(header["schema_hash"]),
            arrays=groups.pop("arrays", []),
            num_examples=int(header["num_examples"]),
            metrics={str(k): float(v) for k, v in dict(header["metrics"]).items()},
            extras=_unprefixed(groups),
            refused=str(header.get("refused", "")),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ProtocolError(f"reply frame has a malformed header field: {exc}") from None


def _prefixed(extras: dict[str, Weights]) -> dict[str, Weights]:
    return {f"x:{k}": v for k, v in extras.items()}


def _unprefixed(groups: dict[str, Weights]) -> dict[str, Weights]:
    return {k[2:]: v for k, v in groups.items() if k.startswith("x:")}


def _encode(header: dict[str, Any], groups: dict[str, Weights]) -> bytes:
    specs: list[list[Any]] = []
    payloads: list[bytes] = []
    for group, arrays in groups.items():
        for i, a in enumerate(arrays):
            arr = np.asarray(a)
            dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
            arr = np.ascontiguousarray(arr, dtype=dt)
            if arr.dtype.str not in _ALLOWED_DTYPES:
                raise ProtocolError(
                    f"cannot send array {group}[{i}] of dtype {arr.dtype}: expected one of"
                    f" {sorted(_ALLOWED_DTYPES)}"
                )
            specs.append([group, i, arr.dtype.str, list(arr.shape)])
            payloads.append(arr.tobytes())
    header = {**header, "arrays": specs}
    blob = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    return b"".join([MAGIC, struct.pack("<I", len(blob)), blob, *payloads])


def _specs(groups: dict[str, Weights]) -> tuple[list[list[Any]], int]:
    """The header's array specs, as :func:`_encode` writes them, and the payload size."""
    specs: list[list[Any]] = []
    size = 0
    for group, arrays in groups.items():
        for i, a in enumerate(arrays):
            arr = np.asarray(a)
            dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
            if dt.str not in _ALLOWED_DTYPES:
                raise ProtocolError(
                    f"cannot send array {group}[{i}] of dtype {arr.dtype}: expected one of"
                    f" {sorted(_ALLOWED_DTYPES)}"
                )
            shape = list(arr.shape) if arr.ndim else [1]  # ascontiguousarray makes 0-d 1-d
            specs.append([group, i, dt.str, shape])
            size += arr.size * dt.itemsize
    return specs, size


def _decode(
    frame: bytes | memoryview, kind: str, *, copy: bool = True
) -> tuple[dict[str, Any], dict[str, Weights]]:
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(
            f"{kind} frame of {len(frame)} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes"
        )
    if len(frame) < 8 or frame[:4] != MAGIC:
        raise ProtocolError(
            f"not a Phalanx {kind} frame: expected magic {MAGIC!r}, found {bytes(frame[:4])!r}"
        )
    (hlen,) = struct.unpack("<I", frame[4:8])
    if hlen > MAX_HEADER_BYTES or 8 + hlen > len(frame):
        raise ProtocolError(f"{kind} frame header length {hlen} does not fit the frame")
    try:
        header = json.loads(bytes(frame[8 : 8 + hlen]).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{kind} frame header is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("kind") != kind:
        raise ProtocolError(f"expected a {kind} frame, found {type(header).__name__} header")
    specs = header.get("arrays")
    if not isinstance(specs, list):
        raise ProtocolError(f"{kind} frame header lacks its array list")
    offset = 8 + hlen
    groups: dict[str, Weights] = {}
    for spec in specs:
        arr, offset = _read_array(frame, offset, spec, kind, copy)
        groups.setdefault(str(spec[0]), []).append(arr)
    if offset != len(frame):
        raise ProtocolError(f"{kind} frame has {len(frame) - offset} trailing bytes")
    return header, groups


def _read_array(
    frame: bytes | memoryview, offset: int, spec: Any, kind: str, copy: bool = True
) -> tuple[NDArray[Any], int]:
    try:
        _group, _index, dtype_str, shape = spec
        if dtype_str not in _ALLOWED_DTYPES:
            raise ValueError(f"dtype {dtype_str!r} not allowed")
        shape_t = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape_t):
            raise ValueError(f"negative dimension in shape {shape_t}")
        dtype = np.dtype(dtype_str)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{kind} frame has a malformed array spec {spec!r}: {exc}") from None
    count = math.prod(shape_t)  # exact Python ints (1 for a scalar's empty shape)
    size = count * dtype.itemsize
    if size < 0 or offset + size > len(frame):
        raise ProtocolError(
            f"{kind} frame is truncated: array {spec[0]}[{spec[1]}] needs {size} bytes,"
            f" {len(frame) - offset} remain"
        )
    arr = np.frombuffer(frame, dtype=dtype, count=count, offset=offset).reshape(shape_t)
    return (arr.copy() if copy else arr), offset + size
