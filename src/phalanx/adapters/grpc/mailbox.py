"""The coordinator's side of the outbound-only protocol: per-participant mailboxes and sessions.

Participants cannot be called: they long-poll for their task and push their reply. The
:class:`Mailboxes` hold one pending task per participant, tagged with the *ticket* of the exchange
it belongs to, and collect the replies of that exchange until all arrived or the deadline passed.
:class:`GrpcTransport` is the :class:`~phalanx.ports.Transport` view of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from phalanx.adapters.grpc import codec
from phalanx.core.errors import ProtocolError
from phalanx.core.messages import Reply, Task
from phalanx.core.types import ParticipantId

log = logging.getLogger("phalanx.grpc.mailbox")


class StaleReply(ProtocolError):
    """A reply for a ticket, round or stage that is not pending for its participant."""


class ReplayedReply(ProtocolError):
    """A second reply from the same participant to the same task."""


@dataclass
class _Slot:
    ticket: int
    round: int
    stage: str
    chunks: list[bytes]


@dataclass
class _Exchange:
    expected: frozenset[ParticipantId]
    replies: dict[ParticipantId, Reply] = field(default_factory=dict)


Outgoing = list[bytes] | None
"""What a pull gets: the chunks of a task, or ``None`` (nothing yet)."""


class Mailboxes:
    """Pending tasks, live sessions and collected replies; thread-safe.

    Parameters
    ----------
    enrolled:
        The participants that may hold a mailbox.
    session_ttl_s:
        A participant is available while it polled within this many seconds (or is polling).
    chunk_bytes:
        Data chunk size of task streams.
    default_deadline_s:
        Deadline of an exchange called without one.
    clock:
        Monotonic seconds (injected for tests).
    """

    def __init__(
        self,
        enrolled: set[str],
        *,
        session_ttl_s: float = 45.0,
        chunk_bytes: int = codec.CHUNK_BYTES,
        default_deadline_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._enrolled = frozenset(ParticipantId(p) for p in enrolled)
        self._ttl = session_ttl_s
        self._chunk = chunk_bytes
        self._default_deadline = default_deadline_s
        self._clock = clock
        self._cond = threading.Condition()
        self._slots: dict[ParticipantId, _Slot] = {}
        self._seen: dict[ParticipantId, float] = {}
        self._polling: dict[ParticipantId, int] = {}
        self._answered: set[tuple[ParticipantId, int]] = set()
        self._exchanges: dict[int, _Exchange] = {}
        self._ticket = 0
        self._done = False
        self._closed = False
        self.bytes_down = 0
        self.bytes_up = 0

    # -- participant side (called by the gRPC handlers) ------------------------------------

    def take(
        self, pid: ParticipantId, wait_s: float, active: Callable[[], bool]
    ) -> tuple[bool, Outgoing]:
        """Long-poll: ``(done, chunks)`` once a task is pending, the federation is done, or
        ``wait_s`` passed. A task not yet answered is handed out again (agent restarted)."""
        end = self._clock() + wait_s
        with self._cond:
            self._seen[pid] = self._clock()
            self._polling[pid] = self._polling.get(pid, 0) + 1
            try:
                while True:
                    slot = self._slots.get(pid)
                    if slot is not None and (pid, slot.ticket) not in self._answered:
                        return False, slot.chunks
                    if self._done or self._closed:
                        return self._done, None
                    remaining = end - self._clock()
                    if remaining <= 0 or not active():
                        return False, None
                    self._cond.wait(min(remaining, 0.5))
            finally:
                self._polling[pid] -= 1
                self._seen[pid] = self._clock()

    def count_down(self, nbytes: int) -> None:
        """Count bytes of a task stream actually handed to gRPC."""
        with self._cond:
            self.bytes_down += nbytes

    def check_reply(self, pid: ParticipantId, env: codec.Envelope) -> None:
        """Refuse a reply that is replayed or not for the task pending for ``pid``."""
        with self._cond:
            self._check(pid, env)

    def _check(self, pid: ParticipantId, env: codec.Envelope) -> None:
        if (pid, env.ticket) in self._answered:
            raise ReplayedReply(
                f"{pid} already answered task {env.ticket} (round {env.round} {env.stage}):"
                " a second reply is refused"
            )
        slot = self._slots.get(pid)
        if slot is None or (slot.ticket, slot.round, slot.stage) != (
            env.ticket,
            env.round,
            env.stage,
        ):
            pending = f"task {slot.ticket} (round {slot.round} {slot.stage})" if slot else "no task"
            raise StaleReply(
                f"reply from {pid} for task {env.ticket} (round {env.round} {env.stage}) is"
                f" stale: {pending} is pending for it"
            )

    def deliver(self, pid: ParticipantId, env: codec.Envelope, reply: Reply, nbytes: int) -> None:
        """Accept a decoded reply (checked again under the lock: two racing pushes, one wins)."""
        with self._cond:
            self._check(pid, env)
            self._answered.add((pid, env.ticket))
            self._seen[pid] = self._clock()
            self.bytes_up += nbytes
            exchange = self._exchanges.get(env.ticket)
            if exchange is not None:
                exchange.replies[pid] = reply
            self._cond.notify_all()

    # -- coordinator side -------------------------------------------------------------------

    def available(self) -> list[ParticipantId]:
        """Participants polling now or within the session TTL."""
        now = self._clock()
        with self._cond:
            return sorted(
                p
                for p, t in self._seen.items()
                if self._polling.get(p, 0) > 0 or now - t <= self._ttl
            )

    def wait_for(self, count: int, timeout_s: float) -> list[ParticipantId]:
        """Block until ``count`` participants are available or ``timeout_s`` passed."""
        end = self._clock() + timeout_s
        while True:
            avail = self.available()
            if len(avail) >= count or self._clock() >= end:
                return avail
            with self._cond:
                self._cond.wait(0.05)

    def exchange(
        self, tasks: Mapping[ParticipantId, Task], deadline_s: float | None
    ) -> dict[ParticipantId, Reply]:
        """Post every task and wait for the replies (see :meth:`GrpcTransport.exchange`)."""
        unknown = sorted(set(tasks) - self._enrolled)
        if unknown:
            raise ProtocolError(f"cannot send tasks to participants not enrolled: {unknown}")
        with self._cond:
            self._ticket += 1
            ticket = self._ticket
        slots = {
            pid: _Slot(
                ticket,
                task.round,
                task.stage.value,
                list(
                    codec.payload_chunks(
                        codec.Kind.TASK,
                        codec.encode_task(task),
                        chunk_bytes=self._chunk,
                        ticket=ticket,
                        round=task.round,
                        stage=task.stage.value,
                        schema_hash=task.schema_hash,
                    )
                ),
            )
            for pid, task in tasks.items()
        }
        end = self._clock() + (self._default_deadline if deadline_s is None else deadline_s)
        with self._cond:
            exchange = _Exchange(frozenset(tasks))
            self._exchanges[ticket] = exchange
            self._slots.update(slots)
            self._cond.notify_all()
            while len(exchange.replies) < len(exchange.expected) and not self._closed:
                remaining = end - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.5))
            del self._exchanges[ticket]
            for pid in exchange.expected:
                slot = self._slots.get(pid)
                if slot is not None and slot.ticket == ticket:
                    del self._slots[pid]  # a late reply is now stale
            replies = dict(exchange.replies)
        missing = sorted(exchange.expected - set(replies))
        if missing:
            log.warning("task %d: no reply before the deadline from %s", ticket, missing)
        return replies

    def finish(self) -> None:
        """The federation is finished: pulls answer DONE from now on."""
        with self._cond:
            self._done = True
            self._cond.notify_all()

    @property
    def done(self) -> bool:
        """Whether :meth:`finish` was called."""
        return self._done

    def close(self) -> None:
        """Wake every waiter: exchanges return what they have, polls return nothing."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class GrpcTransport:
    """The :class:`~phalanx.ports.Transport` of a :class:`CoordinatorServer`.

    ``exchange`` posts each task in its participant's mailbox and waits until every reply arrived
    or the deadline passed; a participant that disconnects or dies mid-round is simply absent.
    Byte counters are the sizes of the serialized ``Chunk`` messages sent and received.
    """

    def __init__(self, mailboxes: Mailboxes, on_close: Callable[[], None]) -> None:
        self._boxes = mailboxes
        self._on_close = on_close

    def available(self) -> list[ParticipantId]:
        """Participants with a live session (polling, or polled within the session TTL)."""
        return self._boxes.available()

    def wait_for(self, count: int, timeout_s: float) -> list[ParticipantId]:
        """Block until ``count`` participants are connected (or ``timeout_s`` passed)."""
        return self._boxes.wait_for(count, timeout_s)

    def exchange(
        self, tasks: Mapping[ParticipantId, Task], *, deadline_s: float | None = None
    ) -> dict[ParticipantId, Reply]:
        """Send every task and return the replies that arrived before the deadline."""
        return self._boxes.exchange(tasks, deadline_s)

    @property
    def bytes_down(self) -> int:
        """Bytes of task streams sent."""
        return self._boxes.bytes_down

    @property
    def bytes_up(self) -> int:
        """Bytes of reply streams received."""
        return self._boxes.bytes_up

    def close(self) -> None:
        """Stop the server behind this transport."""
        self._on_close()
