"""Small ports the services depend on; adapters implement them.

The simulation and a deployment run the same coordinator and participant code and differ only in
the :class:`Transport` they are given (in-process, a local process pool, or gRPC with mutual TLS).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from phalanx.core.messages import Reply, Task
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


class Clock(Protocol):
    """Time, injected so services can be tested without sleeping."""

    def now(self) -> float:
        """Seconds since an arbitrary epoch (monotonic)."""
        ...
