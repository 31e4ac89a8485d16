"""Small ports the services depend on; adapters implement them.

The simulation and a deployment run the same coordinator and participant code and differ only in
the :class:`Transport` they are given (in-process, a local process pool, or gRPC with mutual TLS).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from os import PathLike
from typing import Any, Protocol, runtime_checkable

from phalanx.core.errors import PhalanxError
from phalanx.core.fit_stream import SumPlan
from phalanx.core.messages import Reply, Task
from phalanx.core.privacy.spec import LedgerEntry, PrivacyEvent
from phalanx.core.types import ParticipantId


class Transport(Protocol):
    """Carries tasks to participants and their replies back, counting the bytes both ways."""

    def available(self) -> list[ParticipantId]:
        """Participants that can take a task now."""
        ...

    def exchange(
        self, tasks: Mapping[ParticipantId, Task], *, deadline_s: float | None = None
    ) -> dict[ParticipantId, Reply]:
        """Send every task and return the replies that arrived before the deadline.

        A participant that fails or misses the deadline is simply absent from the result.
        """
        ...

    @property
    def bytes_down(self) -> int:
        """Bytes sent to participants so far (encoded frames)."""
        ...

    @property
    def bytes_up(self) -> int:
        """Bytes received from participants so far (encoded frames)."""
        ...

    def close(self) -> None:
        """Release workers, channels and sockets."""
        ...


class ForwardingTransport:
    """A :class:`Transport` that hands every call to ``inner``: the base of transport wrappers
    (quarantine, simulated attackers), which override only what they change. It does not stream
    replies (:class:`StreamingTransport`), so a wrapper always sees the plain protocol."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def available(self) -> list[ParticipantId]:
        """As the inner transport."""
        return self.inner.available()

    def exchange(
        self, tasks: Mapping[ParticipantId, Task], *, deadline_s: float | None = None
    ) -> dict[ParticipantId, Reply]:
        """As the inner transport."""
        return self.inner.exchange(tasks, deadline_s=deadline_s)

    @property
    def bytes_down(self) -> int:
        """As the inner transport."""
        return self.inner.bytes_down

    @property
    def bytes_up(self) -> int:
        """As the inner transport."""
        return self.inner.bytes_up

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()


OnReply = Callable[[ParticipantId, Reply | None], Reply | None]


@runtime_checkable
class StreamingTransport(Protocol):
    """A :class:`~phalanx.ports.Transport` that can hand each reply over as it arrives.

    ``on_reply(pid, reply)`` is called once per participant (``reply=None`` when it failed) and
    what it returns is what ``exchange`` puts in its result for ``pid`` (``None``: left out).
    The coordinator passes :meth:`Federation.absorb`, so a streamable aggregation folds each
    update while the others still train instead of holding them all. A transport that runs many
    participants in one process may also pre-sum whole groups as ``sums`` describes
    (hierarchical aggregation; :mod:`phalanx.core.fit_stream`), or ignore it.
    """

    streams_replies: bool

    def exchange(
        self,
        tasks: Mapping[ParticipantId, Task],
        *,
        deadline_s: float | None = None,
        on_reply: OnReply | None = None,
        sums: SumPlan | None = None,
    ) -> dict[ParticipantId, Reply]:
        """As :meth:`phalanx.ports.Transport.exchange`, calling ``on_reply`` per reply."""
        ...


class Clock(Protocol):
    """Time, injected so services can be tested without sleeping."""

    def now(self) -> float:
        """Seconds since an arbitrary epoch (monotonic)."""
        ...


@dataclass(frozen=True)
class ParticipantRecord:
    """An enrolled member of the federation, as the coordinator's store keeps it."""

    name: str
    role: str
    enrolled_at: datetime
    cert_serial: int | None
    status: str


@dataclass(frozen=True)
class RoundRecord:
    """One round as recorded by the store: ``state`` is 'started', 'completed' or 'failed'."""

    round: int
    state: str
    participants: list[str]
    started_at: datetime | None
    completed_at: datetime | None
    bytes_up: int
    bytes_down: int
    metrics: dict[str, Any]
    model_sha256: str | None
    reason: str | None


@dataclass(frozen=True)
class AuditEvent:
    """One row of the append-only audit log."""

    id: int
    at: datetime
    event: str
    actor: str
    detail: dict[str, Any]


class Store(Protocol):
    """The coordinator's durable state: enrolment, rounds, model versions, an audit log.

    Every method is safe to call from several threads. A completed round is recorded in one
    transaction, so a crash never leaves it half-written.
    """

    def enroll(self, name: str, role: str, cert_serial: int | None) -> None:
        """Add or re-enrol a member (status becomes 'active')."""
        ...

    def participants(self) -> list[ParticipantRecord]:
        """Enrolled members, by name."""
        ...

    def record_revocation(
        self, serial: int, *, name: str | None = None, reason: str = "unspecified"
    ) -> None:
        """Remember a revoked certificate; a member holding it becomes 'revoked'."""
        ...

    def begin_round(self, round: int, participants: Sequence[str]) -> None:
        """Record that ``round`` started with the sampled ``participants``."""
        ...

    def complete_round(
        self,
        round: int,
        *,
        participants: Sequence[str],
        bytes_up: int,
        bytes_down: int,
        metrics: Mapping[str, Any],
        model_sha256: str,
        model_path: str | PathLike[str],
    ) -> None:
        """Record a completed round, its model version and an audit event, atomically."""
        ...

    def fail_round(self, round: int, reason: str) -> None:
        """Record that ``round`` failed, and why."""
        ...

    def last_completed_round(self) -> int:
        """The highest completed round, 0 when none."""
        ...

    def audit(self, event: str, actor: str, **detail: Any) -> int:
        """Append an event to the audit log; return its id."""
        ...


class LinkUnavailable(PhalanxError):
    """The coordinator cannot be reached now (down, restarting, network); retry with backoff."""


@dataclass(frozen=True)
class Receipt:
    """What a participant sent: the size and sha256 of the serialized reply, never its data."""

    size: int
    sha256: str


class CoordinatorLink(Protocol):
    """A participant's outbound connection to the coordinator (the gRPC client implements it).

    Failures are :class:`LinkUnavailable` (retry later), :class:`~phalanx.core.errors.TrustError`
    (this identity is refused) or :class:`~phalanx.core.errors.ProtocolError` (a message refused).
    """

    @property
    def finished(self) -> bool:
        """True once the coordinator said the federation is finished."""
        ...

    def pull_task(self, wait_s: float) -> Task | None:
        """The next task, or ``None`` when none came within ``wait_s`` or the federation ended."""
        ...

    def push_reply(self, reply: Reply) -> Receipt:
        """Send the reply to the task pulled last."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class Accountant(Protocol):
    """A differential-privacy accountant (``phalanx.adapters.accounting`` wraps dp_accounting).

    Failures are :class:`~phalanx.core.errors.PrivacyError`.
    """

    name: str

    def epsilon(self, events: Sequence[PrivacyEvent], delta: float) -> float:
        """The epsilon at ``delta`` of all ``events`` composed (0 when there are none)."""
        ...

    def noise_multiplier(
        self, *, epsilon: float, delta: float, sampling_rate: float, steps: int
    ) -> float:
        """The smallest Gaussian noise multiplier whose ``steps`` Poisson-sampled runs at
        ``sampling_rate`` cost at most ``(epsilon, delta)``."""
        ...


class PrivacyLedger(Protocol):
    """A participant's own record of the privacy it has spent (never the coordinator's)."""

    def record(self, entry: LedgerEntry) -> None:
        """Append a charged release (durably, before the update leaves)."""
        ...

    def entries(self, federation: str | None = None) -> list[LedgerEntry]:
        """Charged releases in the order recorded, optionally of one federation."""
        ...

    def refusal(self, federation: str, round: int, reason: str) -> None:
        """Remember a task the participant declined, and why."""
        ...
