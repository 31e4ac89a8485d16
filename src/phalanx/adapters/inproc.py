"""In-process transport: participants are objects in this process.

Every task and reply is still encoded to its binary frame and decoded on the other side, so the
simulation exercises the wire encoding and counts exactly the bytes a deployment would send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from phalanx.core.errors import PhalanxError
from phalanx.core.fit_stream import SumPlan
from phalanx.core.messages import Reply, Task, decode_reply, decode_task, encode_reply, encode_task
from phalanx.core.types import ParticipantId

log = logging.getLogger("phalanx.transport.inproc")

Handler = Callable[[Task], Reply]
OnReply = Callable[[ParticipantId, Reply | None], Reply | None]


class InProcessTransport:
    """A transport over a dict of participant handlers, run one after another."""

    streams_replies = True
    """:meth:`exchange` takes ``on_reply`` and calls it after each participant's task."""

    def __init__(self, handlers: Mapping[ParticipantId, Handler]) -> None:
        self._handlers = dict(handlers)
        self._down = 0
        self._up = 0

    def available(self) -> list[ParticipantId]:
        """Every participant handed in."""
        return sorted(self._handlers)

    def exchange(
        self,
        tasks: Mapping[ParticipantId, Task],
        *,
        deadline_s: float | None = None,
        on_reply: OnReply | None = None,
        sums: SumPlan | None = None,
    ) -> dict[ParticipantId, Reply]:
        """Run each task; a participant that raises is left out of the result (and logged).

        ``on_reply(pid, reply)``, when given, is called after each task (``None`` for one that
        failed) and the result holds what it returns, leaving out ``None``. ``sums`` is
        ignored: every reply already reaches ``on_reply`` in this process, one at a time.
        """
        replies: dict[ParticipantId, Reply] = {}
        for pid, task in tasks.items():
            frame = encode_task(task)
            self._down += len(frame)
            try:
                reply = self._handlers[pid](decode_task(frame))
                out = encode_reply(reply)
            except PhalanxError as exc:
                log.warning("participant %s failed its task: %s", pid, exc)
                if on_reply is not None:
                    on_reply(pid, None)
                continue
            self._up += len(out)
            got: Reply | None = decode_reply(out)
            if on_reply is not None:
                got = on_reply(pid, got)
            if got is not None:
                replies[pid] = got
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
