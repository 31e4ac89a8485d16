"""The process-pool transport gives participants the tasks the in-process transport gives them."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from phalanx.adapters.inproc import InProcessTransport
from phalanx.adapters.pool import ProcessPoolTransport
from phalanx.core.errors import ConfigError
from phalanx.core.messages import Reply, Stage, Task, encode_task
from phalanx.core.types import ParticipantId

PIDS = [ParticipantId(f"p{i}") for i in range(5)]


def echo(task: Task) -> Reply:
    """Sends back what it received: arrays, config (as metrics) and extras."""
    if task.config.get("fail"):
        raise ConfigError("asked to fail")
    metrics = {
        k: float(v) for k, v in task.config.items() if isinstance(v, int | float) and k != "fail"
    }
    metrics["nested"] = float(sum(task.config.get("nested", {}).get("xs", [])))
    arrays = [np.array(a) for a in task.weights]
    task.weights[0][0] = -1.0  # a participant scribbling on its task must not affect others
    task.config["nested"]["xs"].append(100.0)
    return Reply(
        participant=ParticipantId(str(task.config["me"])),
        round=task.round,
        stage=task.stage,
        schema_hash=task.schema_hash,
        arrays=arrays,
        num_examples=len(task.weights),
        metrics=metrics,
        extras=task.extras,
    )


def tasks(**per: dict[str, object]) -> dict[ParticipantId, Task]:
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, dtype=np.float32)]
    extras = {"control": [np.full(2, 0.5, dtype=np.float32)]}
    nested = {"xs": [1.5, 2.5], "name": "t"}
    out = {}
    for i, pid in enumerate(PIDS):
        config = {"me": str(pid), "seed": 1000 + i * 7919, "lr": 0.1, "nested": nested}
        config.update(per.get(str(pid), {}))
        out[pid] = Task(1, Stage.FIT, "h" * 64, weights=weights, config=config, extras=extras)
    return out


def run_both(
    batch: dict[ParticipantId, Task],
) -> tuple[
    dict[ParticipantId, Reply], dict[ParticipantId, Reply], InProcessTransport, ProcessPoolTransport
]:
    inproc = InProcessTransport(dict.fromkeys(PIDS, echo))
    with ProcessPoolTransport(dict.fromkeys(PIDS, echo), workers=2) as pool:
        got = pool.exchange(batch)
    return inproc.exchange(batch), got, inproc, pool


@pytest.mark.parametrize(
    "per",
    [
        {},  # only seeds and names differ: one shared frame
        {"p2": {"lr": 1}},  # int where the others send a float: its own frame
        {"p1": {"seed": True}, "p3": {"nested": {"xs": [0.0], "name": "t"}}},
        {"p4": {"lr": -0.0}, "p0": {"lr": float("nan")}},
    ],
)
def test_replies_and_bytes_match_the_in_process_transport(per: dict[str, Any]) -> None:
    batch = tasks(**per)
    want, got, inproc, pool = run_both(batch)
    assert sorted(got) == sorted(want) == PIDS
    for pid in PIDS:
        a, b = want[pid], got[pid]
        assert a.participant == b.participant == pid
        np.testing.assert_equal(a.metrics, b.metrics)
        for x, y in zip(a.arrays, b.arrays, strict=True):
            assert np.array_equal(x, y)
        assert a.arrays[0][0].tolist() == [0.0, 1.0, 2.0]
        assert a.extras["control"][0].tolist() == b.extras["control"][0].tolist()
    assert pool.bytes_down == inproc.bytes_down == sum(len(encode_task(t)) for t in batch.values())
    assert pool.bytes_up == inproc.bytes_up > 0


def test_a_failing_participant_is_left_out_and_the_pool_goes_on() -> None:
    batch = tasks(p1={"fail": True}, p3={"fail": True})
    with ProcessPoolTransport(dict.fromkeys(PIDS, echo), workers=2) as pool:
        first = pool.exchange(batch)
        second = pool.exchange(tasks())
    assert sorted(first) == [PIDS[0], PIDS[2], PIDS[4]]
    assert sorted(second) == PIDS


def test_stages_with_different_arrays_each_get_their_own_frame() -> None:
    batch = tasks()
    own = {
        pid: Task(
            2,
            Stage.EVALUATE,
            t.schema_hash,
            weights=[w * (i + 1) for w in t.weights],
            config=t.config,
        )
        for i, (pid, t) in enumerate(batch.items())
    }
    want, got, inproc, pool = run_both(own)
    for pid in PIDS:
        for x, y in zip(want[pid].arrays, got[pid].arrays, strict=True):
            assert np.array_equal(x, y)
    assert pool.bytes_down == inproc.bytes_down


@pytest.mark.parametrize("transport", ["pool", "inproc"])
def test_on_reply_sees_every_reply_as_it_arrives_and_shapes_the_result(transport: str) -> None:
    """The coordinator's streaming hook: called once per participant (``None`` for a failed
    task); what it returns is the result, and ``None`` leaves the participant out."""
    batch = tasks(p1={"fail": True})
    seen: list[tuple[ParticipantId, Reply | None]] = []

    def on_reply(pid: ParticipantId, reply: Reply | None) -> Reply | None:
        seen.append((pid, reply))
        if reply is None or pid == PIDS[4]:
            return None
        return dataclasses.replace(reply, arrays=[])

    if transport == "pool":
        with ProcessPoolTransport(dict.fromkeys(PIDS, echo), workers=2) as pool:
            assert pool.streams_replies
            got = pool.exchange(batch, on_reply=on_reply)
    else:
        inproc = InProcessTransport(dict.fromkeys(PIDS, echo))
        assert inproc.streams_replies
        got = inproc.exchange(batch, on_reply=on_reply)
    assert sorted(p for p, _ in seen) == PIDS
    assert dict(seen)[PIDS[1]] is None
    assert all(r is not None and r.arrays for p, r in seen if p != PIDS[1])
    assert sorted(got) == [PIDS[0], PIDS[2], PIDS[3]]
    assert all(r.arrays == [] and r.participant == p for p, r in got.items())
