"""Hierarchical aggregation in the process pool: a worker pre-sums the groups it owns whole.

In a streamed ``FIT`` stage (see :mod:`phalanx.core.fit_stream`) the coordinator's
:class:`~phalanx.core.fit_stream.SumPlan` names the groups of the canonical summation order. A
worker that trains every member of a group checks each member's reply with
:func:`~phalanx.core.fit_stream.check_fit_reply`, folds it into a one-group
:class:`~phalanx.core.aggregation.streaming.StreamingMean` (the same arithmetic the coordinator
would do, so the result is bit-for-bit the same), and sends the member's reply without its arrays;
after the group's last member it sends the group's
:class:`~phalanx.core.aggregation.streaming.PartialSum` (sums and sketch rows as raw arrays in a
reply frame, never pickle). A reply that fails the check is sent whole, for the coordinator to
judge. With 1000 participants on two workers the coordinator decodes 12 partial sums a round
instead of 1000 updates (``docs/adr/0014-streamed-and-hierarchical-aggregation.md``).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from phalanx.core.aggregation.streaming import PartialSum, StreamingMean
from phalanx.core.errors import AggregationError, ProtocolError
from phalanx.core.fit_stream import SumPlan, check_fit_reply
from phalanx.core.messages import Reply, Task, decode_reply, encode_reply, reply_frame_size
from phalanx.core.types import ParticipantId, Weights


def owned_groups(
    plan: SumPlan, owner: Mapping[ParticipantId, int], asked: Sequence[ParticipantId]
) -> dict[int, dict[str, list[str]]]:
    """Per worker, the groups whose members it trains all of (``{worker: {group: members}}``).

    A group with a member not asked in this exchange, or members on two workers, is not
    pre-summed: its replies travel one by one.
    """
    out: dict[int, dict[str, list[str]]] = {}
    asked_set = set(asked)
    for g, members in enumerate(plan.groups):
        workers = {owner.get(p) for p in members}
        if not members or len(workers) != 1 or not asked_set.issuperset(members):
            continue
        (w,) = workers
        if w is not None:
            out.setdefault(w, {})[str(g)] = [str(p) for p in members]
    return out


class GroupSums:
    """A worker's side: the groups it pre-sums in one stage.

    Parameters
    ----------
    plan:
        ``{"stride": int, "groups": {group: [members]}}`` as the parent sent it (empty: none).
    """

    def __init__(self, plan: Mapping[str, Any]) -> None:
        self.stride = int(plan.get("stride", 1))
        groups: Mapping[str, list[str]] = plan.get("groups", {})
        self._members = {int(g): [ParticipantId(p) for p in ms] for g, ms in groups.items()}
        self._group_of = {p: g for g, ms in self._members.items() for p in ms}
        self._left = {g: len(ms) for g, ms in self._members.items()}
        self._streams: dict[int, StreamingMean] = {}
        self._task: dict[int, Task] = {}

    def fold(self, pid: ParticipantId, reply: Reply, task: Task) -> bytes | None:
        """Fold ``reply`` into its group when it passes the check; returns the message body to
        send instead of the reply frame (its full frame size, then the frame without arrays),
        or ``None`` when the reply must travel whole (not pre-summed, or failing the check)."""
        g = self._group_of.get(pid)
        if g is None:
            return None
        stream = self._stream(g, task)
        if not check_fit_reply(pid, reply, task):
            return None
        size = reply_frame_size(reply)  # raises ProtocolError (unsendable) before folding
        slim = encode_reply(dataclasses.replace(reply, arrays=[]))
        try:
            stream.add(pid, reply.arrays, reply.num_examples)
        except AggregationError:
            return None  # e.g. a negative sample count: the coordinator refuses it whole
        return struct.pack("<Q", size) + slim

    def settled(self, pid: ParticipantId, task: Task | None) -> tuple[str, bytes] | None:
        """Count ``pid`` as done (folded, sent whole, or failed); after a group's last member,
        the group's partial-sum message (envelope name and body)."""
        g = self._group_of.get(pid)
        if g is None:
            return None
        self._left[g] -= 1
        if self._left[g]:
            return None
        stream = self._streams.get(g)
        if stream is None:  # every member failed before its task was even built
            if task is None:
                task = next(iter(self._task.values()), None)
            if task is None:
                raise ProtocolError(f"group {g} ended without any task to take its layout from")
            stream = self._stream(g, task)
        partial = stream.partial_sum(g)
        t = self._task[g]
        body = encode_reply(
            Reply(
                participant=ParticipantId(""),
                round=t.round,
                stage=t.stage,
                schema_hash=t.schema_hash,
                arrays=cast(Weights, [partial.sums, partial.kept]),  # float64 sums, sent as is
                num_examples=partial.num_examples,
            )
        )
        name = json.dumps({"group": g, "members": [str(p) for p in partial.participants]})
        return name, body

    def _stream(self, g: int, task: Task) -> StreamingMean:
        stream = self._streams.get(g)
        if stream is None:
            stream = StreamingMean(task.weights, self._members[g], stride=self.stride, groups=1)
            self._streams[g] = stream
            self._task[g] = task
        return stream


def read_folded(body: memoryview) -> tuple[int, Reply]:
    """The full frame size and the reply without arrays, from :meth:`GroupSums.fold`'s body."""
    (size,) = struct.unpack("<Q", body[:8])
    return int(size), decode_reply(body[8:])


def read_partial(name: str, body: memoryview, stride: int) -> PartialSum:
    """The :class:`PartialSum` of a :meth:`GroupSums.settled` message."""
    head = json.loads(name)
    reply = decode_reply(body, copy=False)  # views: copied when the coordinator takes them
    if len(reply.arrays) != 2:
        raise ProtocolError(f"a partial-sum frame holds {len(reply.arrays)} arrays, expected 2")
    return PartialSum(
        group=int(head["group"]),
        participants=tuple(ParticipantId(p) for p in head["members"]),
        num_examples=reply.num_examples,
        sums=np.asarray(reply.arrays[0], dtype=np.float64),
        kept=np.asarray(reply.arrays[1], dtype=np.float32),
        stride=stride,
    )
