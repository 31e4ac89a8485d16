"""A transport that stops offering tasks to quarantined participants.

The policy (:class:`~phalanx.core.aggregation.suspicion.Quarantine`: exclude a participant after
K rounds with a flagged update) is pure; this wrapper applies it to any
:class:`~phalanx.ports.Transport`, in a simulation and in a deployment alike.
"""

from __future__ import annotations

from collections.abc import Mapping

from phalanx.core.aggregation.suspicion import Quarantine
from phalanx.core.messages import Reply, Task
from phalanx.core.types import ParticipantId
from phalanx.ports import Transport


class QuarantineTransport:
    """``inner`` without the participants ``quarantine`` has excluded.

    Parameters
    ----------
    inner:
        The real transport.
    quarantine:
        The policy; participants it excludes are no longer :meth:`available`, so the round
        engine never samples them.
    """

    def __init__(self, inner: Transport, quarantine: Quarantine) -> None:
        self.inner = inner
        self.quarantine = quarantine

    def available(self) -> list[ParticipantId]:
        """The inner transport's participants minus the quarantined ones."""
        return self.quarantine.allowed(self.inner.available())

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
