"""A transport that stops offering tasks to quarantined participants.

The policy (:class:`~phalanx.core.aggregation.suspicion.Quarantine`: exclude a participant after
K rounds with a flagged update) is pure; this wrapper applies it to any
:class:`~phalanx.ports.Transport`, in a simulation and in a deployment alike.
"""

from __future__ import annotations

from phalanx.core.aggregation.suspicion import Quarantine
from phalanx.core.types import ParticipantId
from phalanx.ports import ForwardingTransport, Transport


class QuarantineTransport(ForwardingTransport):
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
        super().__init__(inner)
        self.quarantine = quarantine

    def available(self) -> list[ParticipantId]:
        """The inner transport's participants minus the quarantined ones."""
        return self.quarantine.allowed(self.inner.available())
