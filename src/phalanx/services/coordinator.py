"""The coordinator service: drives the round state machine over a transport.

This is where the loops, deadlines and retries live; the decisions are in
:class:`phalanx.core.rounds.Federation`. The same class runs a simulation (in-process or process
pool transport) and a deployment (gRPC transport).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from phalanx.core.errors import RoundError, SecAggError
from phalanx.core.messages import Stage
from phalanx.core.rounds import Federation, RoundRecord, StageRequest
from phalanx.ports import StreamingTransport, Transport

log = logging.getLogger("phalanx.coordinator")


@dataclass(frozen=True)
class StageTiming:
    """Wall time and bytes of one stage, for metrics and benchmarks."""

    round: int
    stage: Stage
    seconds: float
    bytes_down: int
    bytes_up: int
    replies: int


class Coordinator:
    """Runs a :class:`Federation` to completion.

    Parameters
    ----------
    federation:
        The state machine.
    transport:
        How tasks reach participants.
    deadline_s:
        How long a stage waits for replies (``None``: the transport's own behaviour).
    max_retries:
        How often a stage that fell short of its minimum is retried before giving up.
    on_round:
        Called after every completed round (central evaluation, checkpoints, progress).
    on_stage:
        Called before every stage is sent (round bookkeeping, progress).
    wait_for:
        Called before each stage is planned (e.g. to wait until enough participants are
        connected).
    retry_wait_s:
        Pause before retrying a stage that fell short, times the number of failures so far.
    """

    def __init__(
        self,
        federation: Federation,
        transport: Transport,
        *,
        deadline_s: float | None = None,
        max_retries: int = 3,
        on_round: Callable[[RoundRecord], None] | None = None,
        on_stage: Callable[[StageRequest], None] | None = None,
        wait_for: Callable[[], None] | None = None,
        retry_wait_s: float = 1.0,
    ) -> None:
        self.federation = federation
        self.transport = transport
        self.deadline_s = deadline_s
        self.max_retries = max_retries
        self.on_round = on_round
        self.on_stage = on_stage
        self.wait_for = wait_for
        self.retry_wait_s = retry_wait_s
        self.timings: list[StageTiming] = []

    def run(self) -> list[RoundRecord]:
        """Run every remaining stage; returns the round history."""
        fed = self.federation
        failures = 0
        while True:
            if fed.done:
                return self._finished()
            if self.wait_for is not None:
                self.wait_for()
            try:
                req = fed.next_stage(self.transport.available())
            except RoundError as exc:
                failures = self._failed(exc, failures)
                continue
            if req is None:
                return self._finished()
            if self.on_stage is not None:
                self.on_stage(req)
            down0, up0 = self.transport.bytes_down, self.transport.bytes_up
            t0 = time.perf_counter()
            transport = self.transport
            if (
                fed.streaming
                and isinstance(transport, StreamingTransport)
                and transport.streams_replies is True
            ):
                replies = transport.exchange(
                    req.tasks,
                    deadline_s=self.deadline_s,
                    on_reply=fed.absorb,
                    sums=fed.sum_plan(),
                )
            else:
                replies = transport.exchange(req.tasks, deadline_s=self.deadline_s)
            try:
                record = fed.complete_stage(replies)
            except (RoundError, SecAggError) as exc:
                # a failed secure aggregation restarts its round with fresh keys
                failures = self._failed(exc, failures)
                continue
            failures = 0
            self.timings.append(
                StageTiming(
                    round=req.round,
                    stage=req.stage,
                    seconds=time.perf_counter() - t0,
                    bytes_down=self.transport.bytes_down - down0,
                    bytes_up=self.transport.bytes_up - up0,
                    replies=len(replies),
                )
            )
            if record is not None:
                for pid, why in record.refused.items():
                    log.warning("round %d: %s left out: %s", record.round, pid, why)
                if self.on_round is not None:
                    self.on_round(record)

    def _finished(self) -> list[RoundRecord]:
        if self.federation.stopped is not None:
            log.warning("federation %s", self.federation.stopped)
        return self.federation.history

    def _failed(self, exc: RoundError | SecAggError, failures: int) -> int:
        """Count a failed attempt; re-raise once the retries are spent, else pause."""
        failures += 1
        log.warning("%s (attempt %d of %d)", exc, failures, self.max_retries + 1)
        if failures > self.max_retries:
            raise exc
        time.sleep(self.retry_wait_s * failures)
        return failures
