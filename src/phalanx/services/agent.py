"""The participant agent: pulls tasks from the coordinator, answers them, pushes the replies.

Organizations open no inbound port: the agent connects out through a
:class:`~phalanx.ports.CoordinatorLink` (the gRPC client in a deployment), long-polls for a task,
runs :meth:`Participant.handle <phalanx.services.participant.Participant.handle>` and pushes the
reply. When the coordinator is unreachable or restarts, the agent drops the link and reconnects
with exponential backoff and jitter. It logs what it sent (size and sha256), never data. It stops
when the coordinator says the federation is finished, or when ``stop`` is set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from phalanx.core.errors import ConfigError, PhalanxError, ProtocolError, TrustError
from phalanx.core.messages import Reply, Task
from phalanx.core.types import ParticipantId
from phalanx.ports import CoordinatorLink, LinkUnavailable

log = logging.getLogger("phalanx.agent")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter between reconnection attempts.

    Attempt ``k`` (from 0) waits a uniform draw from ``[(1 - jitter) d, d]`` seconds, where
    ``d = min(max_s, initial_s * multiplier ** k)`` ("equal jitter": agents restarted together do
    not reconnect in lockstep).
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s or self.multiplier < 1:
            raise ConfigError(
                f"invalid backoff {self}: need 0 < initial_s <= max_s, multiplier >= 1"
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigError(f"backoff jitter must be in [0, 1], found {self.jitter}")

    def delay(self, attempt: int, rng: np.random.Generator) -> float:
        """Seconds to wait before reconnection attempt ``attempt``."""
        d = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64))
        return float(d * (1.0 - self.jitter * rng.random()))


@dataclass
class AgentReport:
    """What one agent run did."""

    tasks: int = 0
    replies: int = 0
    refused_replies: int = 0
    reconnects: int = 0
    finished: bool = False


class Answering(Protocol):
    """What the agent needs of a participant: its id and its task handler."""

    @property
    def participant_id(self) -> ParticipantId:
        """Who answers."""
        ...

    def handle(self, task: Task) -> Reply:
        """The reply to ``task``."""
        ...


def run_agent(
    client_factory: Callable[[], CoordinatorLink],
    participant: Answering,
    *,
    stop: threading.Event | None = None,
    backoff: Backoff | None = None,
    wait_s: float = 10.0,
    rng: np.random.Generator | None = None,
) -> AgentReport:
    """Serve ``participant`` until the federation is finished or ``stop`` is set.

    Parameters
    ----------
    client_factory:
        Opens a new link to the coordinator (called again after every connection failure).
    participant:
        A :class:`~phalanx.services.participant.Participant` (anything with ``participant_id``
        and ``handle(task) -> Reply``).
    stop:
        Set it to make the agent return; a reply computed after it is set is not sent.
    backoff:
        Reconnection policy (default :class:`Backoff`).
    wait_s:
        Long-poll wait of each pull.
    rng:
        Jitter source (default: seeded from the OS).

    Raises
    ------
    TrustError
        The coordinator refused this identity (revoked, unknown or not allowed): retrying cannot
        help, so the agent stops.
    """
    stop = stop if stop is not None else threading.Event()
    backoff = backoff if backoff is not None else Backoff()
    rng = rng if rng is not None else np.random.default_rng()
    report = AgentReport()
    link: CoordinatorLink | None = None
    failures = 0
    me = participant.participant_id
    try:
        while not stop.is_set():
            try:
                if link is None:
                    link = client_factory()
                task = link.pull_task(wait_s)
                failures = 0
                if task is None:
                    if link.finished:
                        report.finished = True
                        log.info("%s: the coordinator says the federation is finished", me)
                        return report
                    continue
                report.tasks += 1
                reply = _answer(participant, task)
                if stop.is_set():
                    log.info("%s: stopped before sending round %d %s", me, task.round, task.stage)
                    return report
                try:
                    receipt = link.push_reply(reply)
                except LinkUnavailable:
                    raise
                except ProtocolError as exc:
                    report.refused_replies += 1
                    log.warning("%s: the coordinator refused the reply: %s", me, exc)
                    continue
                report.replies += 1
                log.info(
                    "%s round %d %s: sent %d bytes, sha256 %s%s",
                    me,
                    reply.round,
                    reply.stage.value,
                    receipt.size,
                    receipt.sha256[:16],
                    f", refused: {reply.refused}" if reply.refused else "",
                )
            except TrustError:
                raise
            except (LinkUnavailable, ProtocolError) as exc:
                if link is not None:
                    link.close()
                    link = None
                delay = backoff.delay(failures, rng)
                failures += 1
                report.reconnects += 1
                log.warning("%s: %s; reconnecting in %.1f s", me, exc, delay)
                stop.wait(delay)
        return report
    finally:
        if link is not None:
            link.close()


def _answer(participant: Answering, task: Task) -> Reply:
    """The participant's reply; a failure becomes a refusal the coordinator can record."""
    try:
        return participant.handle(task)
    except PhalanxError as exc:
        log.warning("%s could not do round %d %s: %s", participant.participant_id, task.round,
                    task.stage.value, exc)  # fmt: skip
        return Reply(
            participant=participant.participant_id,
            round=task.round,
            stage=task.stage,
            schema_hash=task.schema_hash,
            refused=f"failed: {exc}",
        )
