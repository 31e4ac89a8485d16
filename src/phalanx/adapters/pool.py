"""Process-pool transport: participants live in worker processes, one per core.

The participants are built in the parent and inherited by the workers at fork (their data is never
copied again); each round only the encoded task and reply frames cross the pipes, as raw bytes.
This is how a simulation uses both cores: the same participant code trains in parallel.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import struct
import traceback
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import cast

from phalanx.core.errors import PhalanxError, ProtocolError
from phalanx.core.messages import Reply, Task, decode_reply, decode_task, encode_reply, encode_task
from phalanx.core.types import ParticipantId

log = logging.getLogger("phalanx.transport.pool")

Handler = Callable[[Task], Reply]
_OK, _FAILED = 0, 1


def _pack(pid: str, status: int, frame: bytes) -> bytes:
    raw = pid.encode()
    return struct.pack("<IB", len(raw), status) + raw + frame


def _unpack(blob: bytes) -> tuple[str, int, bytes]:
    n, status = struct.unpack("<IB", blob[:5])
    return blob[5 : 5 + n].decode(), status, blob[5 + n :]


def _worker(
    conn: Connection,
    handlers: Mapping[ParticipantId, Handler],
    init: Callable[[], None] | None,
) -> None:
    if init is not None:
        init()
    while True:
        try:
            count_blob = conn.recv_bytes()
        except EOFError:
            return
        (count,) = struct.unpack("<I", count_blob)
        if count == 0xFFFFFFFF:
            return
        # Read the whole batch before answering: the parent writes every task before it reads,
        # and a reply written while tasks are still queued could fill both pipes.
        batch = [_unpack(conn.recv_bytes()) for _ in range(count)]
        for pid, _status, frame in batch:
            try:
                reply = handlers[ParticipantId(pid)](decode_task(frame))
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
    """

    def __init__(
        self,
        handlers: Mapping[ParticipantId, Handler],
        *,
        workers: int = 2,
        worker_init: Callable[[], None] | None = None,
    ) -> None:
        ctx = mp.get_context("fork")
        pids = sorted(handlers)
        workers = max(1, min(workers, len(pids)))
        self._owner: dict[ParticipantId, int] = {p: i % workers for i, p in enumerate(pids)}
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        for w in range(workers):
            mine = {p: handlers[p] for p in pids if self._owner[p] == w}
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, mine, worker_init), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._down = 0
        self._up = 0

    def available(self) -> list[ParticipantId]:
        """Every participant of the pool."""
        return sorted(self._owner)

    def exchange(
        self, tasks: Mapping[ParticipantId, Task], *, deadline_s: float | None = None
    ) -> dict[ParticipantId, Reply]:
        """Send each worker its participants' tasks, then gather every reply."""
        per_worker: dict[int, list[tuple[ParticipantId, bytes]]] = {}
        for pid, task in tasks.items():
            if pid not in self._owner:
                raise ProtocolError(f"no participant {pid!r} in this pool")
            frame = encode_task(task)
            self._down += len(frame)
            per_worker.setdefault(self._owner[pid], []).append((pid, frame))
        for w, items in per_worker.items():
            conn = self._conns[w]
            conn.send_bytes(struct.pack("<I", len(items)))
            for pid, frame in items:
                conn.send_bytes(_pack(str(pid), _OK, frame))
        replies: dict[ParticipantId, Reply] = {}
        pending = {self._conns[w]: len(items) for w, items in per_worker.items()}
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
        """Bytes of task frames sent."""
        return self._down

    @property
    def bytes_up(self) -> int:
        """Bytes of reply frames received."""
        return self._up

    def close(self) -> None:
        """Stop the workers."""
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send_bytes(struct.pack("<I", 0xFFFFFFFF))
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
