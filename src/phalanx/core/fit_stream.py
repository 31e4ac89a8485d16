"""The coordinator's side of a streamed ``FIT`` stage: replies folded into the mean as they come.

:class:`~phalanx.core.rounds.Federation` opens a :class:`FitStream` for a plain (not secure)
``FIT`` stage when its algorithm is streamable (the FedAvg family, whose step depends on the
updates only through their sample-weighted mean). A transport that can hand replies over one at a
time calls :meth:`FitStream.absorb` through ``Federation.absorb``: the reply is checked exactly as
``complete_stage`` would check it, its update is folded into a
:class:`~phalanx.core.aggregation.streaming.StreamingMean`, and a copy without arrays goes back to
the transport, so the coordinator never holds every decoded update. ``complete_stage`` then
accepts exactly those copies as already checked and folded.

A transport that runs many participants in one process can go further (hierarchical aggregation,
``docs/adr/0014-streamed-and-hierarchical-aggregation.md``): :meth:`FitStream.plan` names the
groups of the canonical summation order and the sketch stride, the process checks each of a
group's replies with :func:`check_fit_reply` and sums them with a one-group
:class:`~phalanx.core.aggregation.streaming.StreamingMean`, and hands over one
:class:`~phalanx.core.aggregation.streaming.PartialSum` with the members' replies stripped of
their arrays (:meth:`FitStream.absorb_partial`). Updates that fail the check travel whole, to be
judged by the coordinator.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from phalanx.core.aggregation.streaming import PartialSum, StreamingMean
from phalanx.core.errors import AggregationError, ProtocolError, SchemaMismatchError
from phalanx.core.messages import Reply, Task
from phalanx.core.types import ParticipantId, Weights

Check = Callable[[ParticipantId, Reply], None]
"""Raises :class:`ProtocolError` or :class:`SchemaMismatchError` for a reply to refuse."""


@dataclass(frozen=True)
class SumPlan:
    """What a transport needs to pre-sum whole groups of a streamed ``FIT`` stage.

    Attributes
    ----------
    groups:
        The members of each group of the canonical summation order (index = group).
    stride:
        The sketch stride every partial sum's rows must be taken with.
    absorb:
        Hands a group's :class:`PartialSum` and its members' replies (without arrays) to the
        coordinator; returns the replies to put in the stage's result.
    """

    groups: tuple[tuple[ParticipantId, ...], ...]
    stride: int
    absorb: Callable[[PartialSum, Mapping[ParticipantId, Reply]], dict[ParticipantId, Reply]]


def check_fit_reply(pid: ParticipantId, reply: Reply, task: Task) -> bool:
    """True when ``reply`` may be folded into ``task``'s round as it stands.

    The same conditions as the coordinator's own check of a ``FIT`` reply: from ``pid``, for the
    task's round, stage and schema, not declined, with the global weights' layer shapes and only
    finite values. A reply that fails goes to the coordinator whole, which refuses it with the
    reason.
    """
    return (
        reply.participant == pid
        and reply.round == task.round
        and reply.stage is task.stage
        and reply.schema_hash == task.schema_hash
        and not reply.refused
        and [np.shape(a) for a in reply.arrays] == [np.shape(w) for w in task.weights]
        and all(np.isfinite(a).all() for a in reply.arrays)
    )


class FitStream:
    """One streamed ``FIT`` stage.

    Parameters
    ----------
    global_weights:
        The weights the round's tasks carried.
    expected:
        The participants the stage's tasks went to.
    check:
        The coordinator's reply check (round, stage, schema, shapes, finiteness).
    """

    def __init__(
        self, global_weights: Weights, expected: Sequence[ParticipantId], check: Check
    ) -> None:
        self.mean = StreamingMean(global_weights, expected)
        self._expected = frozenset(expected)
        self._check = check
        self._absorbed: dict[ParticipantId, Reply] = {}
        self._rejected: dict[ParticipantId, str] = {}

    @property
    def absorbed(self) -> frozenset[ParticipantId]:
        """Participants whose updates were folded on arrival."""
        return frozenset(self._absorbed)

    def absorb(self, pid: ParticipantId, reply: Reply | None) -> Reply | None:
        """Check and fold a reply as it arrives; ``None`` says ``pid`` will not answer.

        Returns the reply to hand to ``complete_stage``: a copy without arrays when the update
        was folded, else the reply unchanged (refused or rejected replies are judged again
        there, with the reason recorded here).
        """
        if pid not in self._expected or pid in self._absorbed or pid in self._rejected:
            return reply
        if reply is None:
            self._skip(pid)
            return None
        try:
            self._check(pid, reply)
            if not reply.refused:
                self.mean.add(pid, reply.arrays, reply.num_examples)
        except (ProtocolError, SchemaMismatchError, AggregationError) as exc:
            self._rejected[pid] = f"rejected: {exc}"
            self._skip(pid)
            return reply
        if reply.refused:
            self._skip(pid)
            return reply
        slim = dataclasses.replace(reply, arrays=[])
        self._absorbed[pid] = slim
        return slim

    def plan(self) -> SumPlan:
        """The groups and stride for a transport that pre-sums whole groups."""
        groups = tuple(tuple(g) for g in self.mean.groups())
        return SumPlan(groups, self.mean.stride, self.absorb_partial)

    def absorb_partial(
        self, partial: PartialSum, replies: Mapping[ParticipantId, Reply]
    ) -> dict[ParticipantId, Reply]:
        """Take a group's pre-summed updates and its members' replies (without arrays).

        Raises
        ------
        ProtocolError
            When a folded member's reply is missing, carries arrays, or does not match.
        AggregationError
            When the partial sum does not fit the stream (see
            :meth:`~phalanx.core.aggregation.streaming.StreamingMean.add_partial`).
        """
        for pid in partial.participants:
            reply = replies.get(pid)
            if reply is None or reply.arrays or reply.participant != pid or reply.refused:
                raise ProtocolError(
                    f"the partial sum of group {partial.group} holds {pid!r}, whose reply is"
                    " missing or does not match",
                    hint="a pre-summing transport sends every member's reply without arrays",
                )
        self.mean.add_partial(partial)
        kept = {pid: replies[pid] for pid in partial.participants}
        self._absorbed.update(kept)
        return kept

    def verdict(self, pid: ParticipantId, reply: Reply) -> str | None:
        """``""`` when ``reply`` is the copy :meth:`absorb` returned (checked and folded), the
        reason when :meth:`absorb` rejected ``pid``'s reply, ``None`` when it is still to judge
        (then :meth:`take` folds it once the caller's checks pass)."""
        if self._absorbed.get(pid) is reply:
            return ""
        return self._rejected.get(pid)

    def take(self, pid: ParticipantId, reply: Reply) -> None:
        """Fold a reply that reached the coordinator only in the stage's result (checked by the
        caller). Raises :class:`AggregationError` when the update cannot be combined."""
        self.mean.add(pid, reply.arrays, reply.num_examples)

    def _skip(self, pid: ParticipantId) -> None:
        with contextlib.suppress(AggregationError):  # already settled: nothing to skip
            self.mean.skip(pid)
