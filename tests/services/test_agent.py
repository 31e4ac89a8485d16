"""The agent loop: pull, answer, push; backoff on a lost link; exits on DONE, stop or refusal."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

from phalanx.core.errors import ConfigError, ModelError, ProtocolError, TrustError
from phalanx.core.messages import Reply, Stage, Task
from phalanx.core.types import ParticipantId
from phalanx.ports import LinkUnavailable, Receipt
from phalanx.services.agent import Backoff, run_agent

ME = ParticipantId("org-01")


@dataclass
class Script:
    """What the fake coordinator does, shared by every link the factory opens."""

    pulls: list[object]
    pushed: list[Reply] = field(default_factory=list)
    opened: int = 0
    closed: int = 0
    refuse_push: bool = False


class FakeLink:
    def __init__(self, script: Script) -> None:
        self.script = script
        self._finished = False
        script.opened += 1

    @property
    def finished(self) -> bool:
        return self._finished

    def pull_task(self, wait_s: float) -> Task | None:
        item = self.script.pulls.pop(0) if self.script.pulls else "done"
        if item == "done":
            self._finished = True
            return None
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    def push_reply(self, reply: Reply) -> Receipt:
        if self.script.refuse_push:
            raise ProtocolError("stale")
        self.script.pushed.append(reply)
        return Receipt(10, "ab" * 32)

    def close(self) -> None:
        self.script.closed += 1


class Echo:
    participant_id = ME

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def handle(self, task: Task) -> Reply:
        if self.fail:
            raise ModelError("weights do not fit")
        return Reply(ME, task.round, task.stage, task.schema_hash, num_examples=1)


FAST = Backoff(initial_s=0.001, max_s=0.002)


def test_answers_tasks_reconnects_and_exits_on_done() -> None:
    task = Task(1, Stage.FIT, "h")
    script = Script([None, LinkUnavailable("down"), LinkUnavailable("down"), task, "done"])
    report = run_agent(lambda: FakeLink(script), Echo(), backoff=FAST)
    assert report.finished and report.tasks == 1 and report.replies == 1
    assert report.reconnects == 2 and script.opened == 3 and script.closed == 3
    assert script.pushed[0].round == 1


def test_a_failing_participant_sends_a_refusal() -> None:
    script = Script([Task(2, Stage.FIT, "h"), "done"])
    run_agent(lambda: FakeLink(script), Echo(fail=True), backoff=FAST)
    assert "weights do not fit" in script.pushed[0].refused


def test_refused_reply_is_counted_and_the_loop_goes_on() -> None:
    script = Script([Task(1, Stage.FIT, "h"), "done"], refuse_push=True)
    report = run_agent(lambda: FakeLink(script), Echo(), backoff=FAST)
    assert report.refused_replies == 1 and report.finished


def test_trust_error_stops_the_agent() -> None:
    script = Script([TrustError("revoked")])
    with pytest.raises(TrustError):
        run_agent(lambda: FakeLink(script), Echo(), backoff=FAST)
    assert script.closed == 1


def test_stop_event() -> None:
    stop = threading.Event()
    stop.set()
    script = Script([Task(1, Stage.FIT, "h")])
    report = run_agent(lambda: FakeLink(script), Echo(), stop=stop)
    assert report.tasks == 0 and script.opened == 0


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    b = Backoff(initial_s=1.0, max_s=8.0, jitter=0.5)
    rng = np.random.default_rng(0)
    delays = [b.delay(k, rng) for k in range(6)]
    for k, d in enumerate(delays):
        top = min(8.0, 2.0**k)
        assert top / 2 <= d <= top
    with pytest.raises(ConfigError):
        Backoff(jitter=2.0)
