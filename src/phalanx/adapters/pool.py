"""Process-pool transport: participants live in worker processes, one per core.

The participants are built in the parent and inherited by the workers at fork (their data is never
copied again, and each worker keeps the arrays its participants prepare); each stage only encoded
task frames and reply frames cross the pipes, as raw bytes.
This is how a simulation uses both cores: the same participant code trains in parallel.
Before the fork the parent imports what every worker would otherwise import on its first training
task (:func:`preload_torch`) and freezes its garbage collector's view of the inherited objects, so
the workers share those pages instead of copying them, and start their first round at full speed.

Tasks of one stage usually differ only in a few scalars of their config: the pool encodes such a
stage once and sends each worker the shared frame plus per-participant config differences
(:mod:`phalanx.adapters.pool_frames`). The byte counters still count, per participant, the length
of the frame a deployment would send it, and of the reply it would send back.

Replies can reach the coordinator as they arrive (``on_reply``), so it folds each update into a
running aggregate while the others still train; in a streamed ``FIT`` stage a worker that trains
every member of a group of the canonical summation order sends that group's pre-summed update
instead of one update per member (hierarchical aggregation, :mod:`phalanx.adapters.pool_sums`).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import marshal
import multiprocessing as mp
import struct
import sys
import traceback
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, cast

from phalanx.adapters.pool_frames import (
    Shared,
    config_diff,
    decode_batch,
    encode_batch,
    json_value,
    task_from_shared,
)
from phalanx.adapters.pool_sums import GroupSums, owned_groups, read_folded, read_partial
from phalanx.core.errors import PhalanxError, ProtocolError
from phalanx.core.fit_stream import SumPlan
from phalanx.core.messages import Reply, Task, decode_reply, decode_task, encode_reply, encode_task
from phalanx.core.types import ParticipantId

log = logging.getLogger("phalanx.transport.pool")

Handler = Callable[[Task], Reply]
OnReply = Callable[[ParticipantId, Reply | None], Reply | None]
_OK, _FAILED, _FOLDED, _PARTIAL = 0, 1, 2, 3  # see pool_sums for the last two
_STOP = 0xFFFFFFFF


def _pack(pid: str, status: int, frame: bytes) -> bytes:
    raw = pid.encode()
    return struct.pack("<IB", len(raw), status) + raw + frame


def _unpack(blob: bytes) -> tuple[str, int, memoryview]:
    """Name, status and frame of a worker's message; the frame is a view, not a copy."""
    n, status = struct.unpack("<IB", blob[:5])
    return blob[5 : 5 + n].decode(), status, memoryview(blob)[5 + n :]


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
        batch, plan = decode_batch(blob)
        sums = GroupSums(plan)
        for frame, items in batch:
            shared: Task | None = None
            config_copy, error = b"", ""
            try:
                shared = decode_task(frame)
                config_copy = marshal.dumps(shared.config)
            except PhalanxError as exc:
                error = str(exc)
            for pid, diff in items:
                task: Task | None = None
                try:
                    if shared is None:
                        raise ProtocolError(error)
                    task = task_from_shared(shared, diff, config_copy)
                    reply = handlers[ParticipantId(pid)](task)
                    folded = sums.fold(ParticipantId(pid), reply, task)
                    if folded is None:
                        conn.send_bytes(_pack(pid, _OK, encode_reply(reply)))
                    else:
                        conn.send_bytes(_pack(pid, _FOLDED, folded))
                except PhalanxError as exc:
                    conn.send_bytes(_pack(pid, _FAILED, str(exc).encode()))
                except Exception:  # noqa: BLE001 - a participant bug must not kill the worker
                    conn.send_bytes(_pack(pid, _FAILED, traceback.format_exc().encode()))
                _send_partial(conn, sums, ParticipantId(pid), task)


def _send_partial(conn: Connection, sums: GroupSums, pid: ParticipantId, task: Task | None) -> None:
    """After a pre-summed group's last member, its partial sum (or why there is none)."""
    try:
        done = sums.settled(pid, task)
        if done is not None:
            conn.send_bytes(_pack(done[0], _PARTIAL, done[1]))
    except Exception:  # noqa: BLE001 - the parent still counts one message for the group
        group = json_value({"group": -1, "members": []})
        conn.send_bytes(_pack(group, _FAILED, traceback.format_exc().encode()))


def _json_len(value: Any) -> int:
    """``len(json_value(value))``; an int (the usual differing value: a seed) is its ``str``."""
    return len(str(value)) if type(value) is int else len(json_value(value))


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

    streams_replies = True
    """:meth:`exchange` takes ``on_reply`` and calls it as each reply arrives."""

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
        self,
        tasks: Mapping[ParticipantId, Task],
        *,
        deadline_s: float | None = None,
        on_reply: OnReply | None = None,
        sums: SumPlan | None = None,
    ) -> dict[ParticipantId, Reply]:
        """Send each worker its participants' tasks, then gather every reply.

        ``on_reply(pid, reply)``, when given, is called as each reply is decoded (with ``None``
        for a participant whose task failed), while the other participants still train; the
        result holds what it returns (e.g. the reply without its arrays, once the coordinator
        has folded them into a running aggregate), and leaves out ``None``. With ``sums`` too,
        a worker that trains every member of one of its groups pre-sums them
        (:mod:`phalanx.adapters.pool_sums`) and ``sums.absorb`` takes the group's partial sum
        with the members' replies, which the result then holds.
        """
        per_worker: dict[int, list[Shared]] = {}
        shared: list[Shared] = []
        sent: list[tuple[Shared, dict[str, Any]]] = []  # counted once the workers have theirs
        for pid, task in tasks.items():
            if pid not in self._owner:
                raise ProtocolError(f"no participant {pid!r} in this pool")
            diff = config_diff(shared[-1].task, task) if shared else None
            if diff is None:
                shared.append(Shared(task, encode_task(task)))
                diff = {}
            base = shared[-1]
            sent.append((base, diff))
            groups = per_worker.setdefault(self._owner[pid], [])
            if not groups or groups[-1].frame is not base.frame:
                groups.append(Shared(base.task, base.frame))
            groups[-1].items.append((pid, diff))
        plans: dict[int, dict[str, list[str]]] = {}
        if sums is not None and on_reply is not None:
            plans = owned_groups(sums, self._owner, list(tasks))
        pending: dict[Connection, int] = {}  # messages still expected, per worker
        for w, groups in per_worker.items():
            plan = {"stride": sums.stride, "groups": plans[w]} if sums and w in plans else {}
            self._conns[w].send_bytes(encode_batch(groups, plan))
            pending[self._conns[w]] = sum(len(g.items) for g in groups) + len(plans.get(w, {}))
        for base, diff in sent:  # while the workers train
            # Counted as a deployment sends it: this participant's own frame, whose header
            # differs from the shared one only in the differing values' JSON.
            self._down += len(base.frame) + sum(
                _json_len(v) - _json_len(base.task.config[k]) for k, v in diff.items()
            )
        replies: dict[ParticipantId, Reply] = {}
        folded: dict[ParticipantId, Reply] = {}  # replies whose update is in a partial sum
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
                del blob
                self._receive(name, status, frame, on_reply, sums, folded, replies)
        return replies

    def _receive(
        self,
        name: str,
        status: int,
        frame: memoryview,
        on_reply: OnReply | None,
        sums: SumPlan | None,
        folded: dict[ParticipantId, Reply],
        replies: dict[ParticipantId, Reply],
    ) -> None:
        """Handle one worker message: a reply, a failure, a folded reply or a partial sum."""
        pid = ParticipantId(name)
        if status == _FAILED:
            why = bytes(frame).decode(errors="replace")[-2000:]
            log.warning("participant %s failed its task: %s", name, why)
            if on_reply is not None and not name.startswith("{"):  # not a group's partial
                on_reply(pid, None)
        elif status == _FOLDED:
            size, folded[pid] = read_folded(frame)
            self._up += size  # what a deployment would have sent: the whole reply
        elif status == _PARTIAL and sums is not None:
            try:
                partial = read_partial(name, frame, sums.stride)
                members = {p: folded.pop(p) for p in partial.participants}
                replies.update(sums.absorb(partial, members))
            except (PhalanxError, KeyError) as exc:
                log.error("a worker's partial sum was refused, its members are out: %s", exc)
        elif status == _OK:
            self._up += len(frame)
            if on_reply is None:
                reply: Reply | None = decode_reply(frame)
            else:  # read once, folded and dropped by on_reply: views of the frame suffice
                reply = on_reply(pid, decode_reply(frame, copy=False))
            if reply is not None:
                replies[pid] = reply

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
