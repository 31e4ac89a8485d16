"""In-process transport: participants are objects in this process.

Every task and reply is still encoded to its binary frame and decoded on the other side, so the
simulation exercises the wire encoding and counts exactly the bytes a deployment would send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from phalanx.core.errors import PhalanxError
from phalanx.core.messages import Reply, Task, decode_reply, decode_task, encode_reply, encode_task
from phalanx.core.types import ParticipantId

log = logging.getLogger("phalanx.transport.inproc")

Handler = Callable[[Task], Reply]


class InProcessTransport:
    """A transport over a dict of participant handlers, run one after another."""

    def __init__(self, handlers: Mapping[ParticipantId, Handler]) -> None:
        self._handlers = dict(handlers)
        self._down = 0
        self._up = 0

    def available(self) -> list[ParticipantId]:
        """Every participant handed in."""
        return sorted(self._handlers)

    def exchange(
        self, tasks: Mapping[ParticipantId, Task], *, deadline_s: float | None = None
    ) -> dict[ParticipantId, Reply]:
        """Run each task; a participant that raises is left out of the result (and logged)."""
        replies: dict[ParticipantId, Reply] = {}
        for pid, task in tasks.items():
            frame = encode_task(task)
            self._down += len(frame)
            try:
                reply = self._handlers[pid](decode_task(frame))
                out = encode_reply(reply)
            except PhalanxError as exc:
                log.warning("participant %s failed its task: %s", pid, exc)
                continue
            self._up += len(out)
            replies[pid] = decode_reply(out)
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
        """Nothing to release."""
