"""Shared task frames for the process pool: one encoded frame per stage, per-task config diffs.

Tasks of one stage usually differ only in a few scalars of their config (every ``FIT`` task of a
round carries the same global weights and the same feature transform; only the seed differs). The
pool encodes such a stage once: each worker gets one message holding the shared frame, encoded by
:func:`~phalanx.core.messages.encode_task`, and per participant the config values that differ.
The worker decodes the shared frame once and gives every participant a :class:`Task` equal to
what decoding that participant's own frame would give, with its own copies of the arrays.
"""

from __future__ import annotations

import json
import marshal
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from phalanx.core.messages import Task
from phalanx.core.types import ParticipantId

_SCALARS = (str, int, float, bool, type(None))


def json_value(value: Any) -> str:
    """A value as :func:`~phalanx.core.messages.encode_task` writes it into the frame header."""
    return json.dumps(value, separators=(",", ":"), allow_nan=True)


@dataclass
class Shared:
    """One encoded task frame and the tasks that differ from it only in scalar config values."""

    task: Task
    frame: bytes
    items: list[tuple[ParticipantId, dict[str, Any]]] = field(default_factory=list)


def config_diff(base: Task, task: Task) -> dict[str, Any] | None:
    """The config values of ``task`` that differ from ``base``, when nothing else differs.

    ``None`` when the two tasks differ in anything but top-level scalar config values: round,
    stage, schema hash, arrays (compared by identity), config keys or their order, or a
    non-scalar config value (compared with ``==``). A differing scalar must also keep its type,
    so that it is written into the frame exactly as the shared frame writes it. (Nested values
    that are equal but written differently, such as ``[1]`` and ``[1.0]``, reach the participant
    as the shared frame writes them; the tasks of one stage are built by one federation and do
    not differ that way.)
    """
    if (
        task.round != base.round
        or task.stage is not base.stage
        or task.schema_hash != base.schema_hash
        or not _same_arrays(task.weights, base.weights)
        or task.extras.keys() != base.extras.keys()
        or any(not _same_arrays(v, base.extras[k]) for k, v in task.extras.items())
        or list(task.config) != list(base.config)
    ):
        return None
    diff: dict[str, Any] = {}
    for key, value in task.config.items():
        ref = base.config[key]
        if value is ref:
            continue
        if isinstance(value, _SCALARS) and type(value) is type(ref):
            if value != ref or (isinstance(value, float) and json_value(value) != json_value(ref)):
                diff[key] = value
        elif isinstance(value, _SCALARS) or isinstance(ref, _SCALARS) or not _equal(value, ref):
            return None
    return diff


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # e.g. arrays, whose == is element-wise
        return False


def _same_arrays(a: list[Any], b: list[Any]) -> bool:
    return a is b or (len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True)))


def task_from_shared(shared: Task, diff: Mapping[str, Any], config_copy: bytes) -> Task:
    """What :func:`decode_task` gives for the frame of ``shared`` with ``diff`` in its config.

    ``config_copy`` is ``marshal.dumps(shared.config)``: the config as :func:`decode_task` built
    it from JSON (dicts, lists, strings, numbers, booleans, ``None``), which ``marshal``
    reproduces exactly and five times faster than parsing the JSON again, giving every
    participant its own copy. These bytes are made and read in the same worker process; nothing
    received is ever unmarshalled.
    """
    config = marshal.loads(config_copy)  # noqa: S302 - bytes this process made (see above)
    config.update(diff)
    return Task(
        round=shared.round,
        stage=shared.stage,
        schema_hash=shared.schema_hash,
        weights=[a.copy() for a in shared.weights],
        config=config,
        extras={k: [a.copy() for a in v] for k, v in shared.extras.items()},
    )


def encode_batch(groups: list[Shared], plan: Mapping[str, Any] | None = None) -> bytes:
    """A worker's share of one stage: ``u32 groups``, then per group ``u32 frame_len | frame |
    u32 items`` and per item ``u32 pid_len | pid | u32 diff_len | diff JSON``; last
    ``u32 plan_len | plan JSON``, the groups it pre-sums (``{}``: none; see pool_sums)."""
    parts = [struct.pack("<I", len(groups))]
    for g in groups:
        parts += [struct.pack("<I", len(g.frame)), g.frame, struct.pack("<I", len(g.items))]
        for pid, diff in g.items:
            raw_pid, raw_diff = str(pid).encode(), json_value(diff).encode()
            parts += [struct.pack("<I", len(raw_pid)), raw_pid]
            parts += [struct.pack("<I", len(raw_diff)), raw_diff]
    raw_plan = json_value(dict(plan or {})).encode()
    parts += [struct.pack("<I", len(raw_plan)), raw_plan]
    return b"".join(parts)


def decode_batch(
    blob: bytes,
) -> tuple[list[tuple[bytes, list[tuple[str, dict[str, Any]]]]], dict[str, Any]]:
    """Inverse of :func:`_encode_batch`."""
    view = memoryview(blob)
    pos = 0

    def u32() -> int:
        nonlocal pos
        (value,) = struct.unpack_from("<I", view, pos)
        pos += 4
        return int(value)

    def chunk() -> bytes:
        nonlocal pos
        n = u32()
        out = bytes(view[pos : pos + n])
        pos += n
        return out

    groups = []
    for _ in range(u32()):
        frame = chunk()
        items = [(chunk().decode(), json.loads(chunk())) for _ in range(u32())]
        groups.append((frame, items))
    return groups, json.loads(chunk())
