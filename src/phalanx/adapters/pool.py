"""Process-pool transport: participants live in worker processes, one per core.

The participants are built in the parent and inherited by the workers at fork (their data is never
copied again, and each worker keeps the arrays its participants prepare); each stage only encoded
task frames and reply frames cross the pipes, as raw bytes.
This is how a simulation uses both cores: the same participant code trains in parallel.
Before the fork the parent imports what every worker would otherwise import on its first training
task (:func:`preload_torch`) and freezes its garbage collector's view of the inherited objects, so
the workers share those pages instead of copying them, and start their first round at full speed.

Tasks of one stage usually differ only in a few scalars of their config (every ``FIT`` task of a
round carries the same global weights and the same feature transform; only the seed differs). The
pool encodes such a stage once: each worker gets one message holding the shared frame, encoded by
:func:`~phalanx.core.messages.encode_task`, and per participant the config values that differ.
The worker decodes the shared frame once and gives every participant a :class:`Task` equal to
what decoding that participant's own frame would give, with its own copies of the arrays. The
byte counters still count, per participant, the length of the frame a deployment would send it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import multiprocessing as mp
import struct
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, cast

from phalanx.core.errors import PhalanxError, ProtocolError
from phalanx.core.messages import Reply, Task, decode_reply, decode_task, encode_reply, encode_task
from phalanx.core.types import ParticipantId

log = logging.getLogger("phalanx.transport.pool")

Handler = Callable[[Task], Reply]
_OK, _FAILED = 0, 1
_STOP = 0xFFFFFFFF
_SCALARS = (str, int, float, bool, type(None))


def _pack(pid: str, status: int, frame: bytes) -> bytes:
    raw = pid.encode()
    return struct.pack("<IB", len(raw), status) + raw + frame


def _unpack(blob: bytes) -> tuple[str, int, bytes]:
    n, status = struct.unpack("<IB", blob[:5])
    return blob[5 : 5 + n].decode(), status, blob[5 + n :]


def _json(value: Any) -> str:
    """A value as :func:`~phalanx.core.messages.encode_task` writes it into the frame header."""
    return json.dumps(value, separators=(",", ":"), allow_nan=True)


@dataclass
class _Shared:
    """One encoded task frame and the tasks that differ from it only in scalar config values."""

    task: Task
    frame: bytes
    items: list[tuple[ParticipantId, dict[str, Any]]] = field(default_factory=list)


def _config_diff(base: Task, task: Task) -> dict[str, Any] | None:
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
            if value != ref or (isinstance(value, float) and _json(value) != _json(ref)):
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


def _task_from_shared(shared: Task, diff: Mapping[str, Any], config_json: str) -> Task:
    """What :func:`decode_task` gives for the frame of ``shared`` with ``diff`` in its config."""
    config = json.loads(config_json)
    config.update(diff)
    return Task(
        round=shared.round,
        stage=shared.stage,
        schema_hash=shared.schema_hash,
        weights=[a.copy() for a in shared.weights],
        config=config,
        extras={k: [a.copy() for a in v] for k, v in shared.extras.items()},
    )


def _encode_batch(groups: list[_Shared]) -> bytes:
    """A worker's share of one stage: ``u32 groups``, then per group ``u32 frame_len | frame |
    u32 items`` and per item ``u32 pid_len | pid | u32 diff_len | diff JSON``."""
    parts = [struct.pack("<I", len(groups))]
    for g in groups:
        parts += [struct.pack("<I", len(g.frame)), g.frame, struct.pack("<I", len(g.items))]
        for pid, diff in g.items:
            raw_pid, raw_diff = str(pid).encode(), _json(diff).encode()
            parts += [struct.pack("<I", len(raw_pid)), raw_pid]
            parts += [struct.pack("<I", len(raw_diff)), raw_diff]
    return b"".join(parts)


def _decode_batch(blob: bytes) -> list[tuple[bytes, list[tuple[str, dict[str, Any]]]]]:
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
    return groups


def preload_torch() -> None:
    """Import what torch would import lazily in every worker on its first training task.

    Building a ``torch.optim`` optimizer imports ``torch._dynamo`` the first time: about a second
    of CPU and 60-100 MB of module objects in each process that does it. Imported once in the
    parent before the fork, the workers share those pages and start their first round at full
    speed. Does nothing when the parent has not imported torch.
    """
    if "torch" in sys.modules:
        importlib.import_module("torch._dynamo")


def _worker(
    conn: Connection,
    handlers: Mapping[ParticipantId, Handler],
    init: Callable[[], None] | None,
) -> None:
    if init is not None:
        init()
    while True:
        try:
            blob = conn.recv_bytes()
        except EOFError:
            return
        if blob == struct.pack("<I", _STOP):
            return
        # The whole stage arrived in one message before any reply is written: the parent writes
        # every worker's message before it reads, so a reply cannot fill both pipes.
        for frame, items in _decode_batch(blob):
            shared: Task | None = None
            config_json, error = "", ""
            try:
                shared = decode_task(frame)
                config_json = _json(shared.config)
            except PhalanxError as exc:
                error = str(exc)
            for pid, diff in items:
                try:
                    if shared is None:
                        raise ProtocolError(error)
                    task = _task_from_shared(shared, diff, config_json)
                    reply = handlers[ParticipantId(pid)](task)
                    conn.send_bytes(_pack(pid, _OK, encode_reply(reply)))
                except PhalanxError as exc:
                    conn.send_bytes(_pack(pid, _FAILED, str(exc).encode()))
                except Exception:  # noqa: BLE001 - a participant bug must not kill the worker
                    conn.send_bytes(_pack(pid, _FAILED, traceback.format_exc().encode()))


class ProcessPoolTransport:
    """A transport that runs participants in ``workers`` forked processes.

    Parameters
    ----------
    handlers:
        Participant handlers, built before the pool starts (inherited through fork).
    workers:
        Worker processes (default 2: one per core on the reference machine).
    worker_init:
        Run once in each worker before any task (e.g. to pin torch to one thread).
    preload:
        Run once in the parent before the fork, so that the workers inherit what it loads
        (default :func:`preload_torch`; ``None`` for nothing).
    """

    def __init__(
        self,
        handlers: Mapping[ParticipantId, Handler],
        *,
        workers: int = 2,
        worker_init: Callable[[], None] | None = None,
        preload: Callable[[], None] | None = preload_torch,
    ) -> None:
        ctx = mp.get_context("fork")
        pids = sorted(handlers)
        workers = max(1, min(workers, len(pids)))
        self._owner: dict[ParticipantId, int] = {p: i % workers for i, p in enumerate(pids)}
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        if preload is not None:
            preload()
        # Objects that exist at the fork are left alone by the workers' garbage collector, so it
        # does not write to (and copy) the pages they share with the parent.
        gc.freeze()
        try:
            for w in range(workers):
                mine = {p: handlers[p] for p in pids if self._owner[p] == w}
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, args=(child, mine, worker_init), daemon=True)
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
        finally:
            gc.unfreeze()
        self._down = 0
        self._up = 0

    def available(self) -> list[ParticipantId]:
        """Every participant of the pool."""
        return sorted(self._owner)

    def exchange(
        self, tasks: Mapping[ParticipantId, Task], *, deadline_s: float | None = None
    ) -> dict[ParticipantId, Reply]:
        """Send each worker its participants' tasks, then gather every reply."""
        per_worker: dict[int, list[_Shared]] = {}
        shared: list[_Shared] = []
        for pid, task in tasks.items():
            if pid not in self._owner:
                raise ProtocolError(f"no participant {pid!r} in this pool")
            diff = _config_diff(shared[-1].task, task) if shared else None
            if diff is None:
                shared.append(_Shared(task, encode_task(task)))
                diff = {}
            base = shared[-1]
            # Counted as a deployment sends it: this participant's own frame, whose header
            # differs from the shared one only in the differing values' JSON.
            self._down += len(base.frame) + sum(
                len(_json(v)) - len(_json(base.task.config[k])) for k, v in diff.items()
            )
            groups = per_worker.setdefault(self._owner[pid], [])
            if not groups or groups[-1].frame is not base.frame:
                groups.append(_Shared(base.task, base.frame))
            groups[-1].items.append((pid, diff))
        pending: dict[Connection, int] = {}  # replies still expected, per worker
        for w, groups in per_worker.items():
            self._conns[w].send_bytes(_encode_batch(groups))
            pending[self._conns[w]] = sum(len(g.items) for g in groups)
        replies: dict[ParticipantId, Reply] = {}
        while pending:
            for ready in wait(list(pending)):
                conn = cast(Connection, ready)
                try:
                    blob = conn.recv_bytes()
                except (EOFError, OSError):
                    log.error("a worker died; its participants are out of this stage")
                    del pending[conn]
                    continue
                pending[conn] -= 1
                if pending[conn] == 0:
                    del pending[conn]
                name, status, frame = _unpack(blob)
                if status != _OK:
                    log.warning("participant %s failed its task: %s", name, frame.decode()[-2000:])
                    continue
                self._up += len(frame)
                replies[ParticipantId(name)] = decode_reply(frame)
        return replies

    @property
    def bytes_down(self) -> int:
        """Bytes of the task frames a deployment would send (one frame per participant)."""
        return self._down

    @property
    def bytes_up(self) -> int:
        """Bytes of reply frames received."""
        return self._up

    def close(self) -> None:
        """Stop the workers."""
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send_bytes(struct.pack("<I", _STOP))
            conn.close()
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        self._conns.clear()
        self._procs.clear()

    def __enter__(self) -> ProcessPoolTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
