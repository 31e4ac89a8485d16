"""Streaming weighted mean: fold each update into a running sum as its reply arrives.

The FedAvg family (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi) depends on the round's updates
only through their sample-weighted mean ``sum_k n_k w_k / sum_k n_k`` (McMahan et al.,
"Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS 2017; the
adaptive rules of Reddi et al., ICLR 2021, step from that mean). The coordinator therefore need
not hold every decoded update before aggregating: :class:`StreamingMean` keeps float64 sums and,
for the suspicion scores of :mod:`~phalanx.core.aggregation.suspicion`, one strided sketch row
per update (the same sketch the batch path keeps).

Determinism. Floating-point addition is not associative, and replies arrive in an order set by
scheduling. The sum is therefore taken in one canonical order that depends only on who
contributes: the expected participants are sorted by name, the one at position ``i`` belongs to
group ``i % SUM_GROUPS``, each group is summed in name order, and the group sums are added in
group order. An update that arrives before a predecessor in its group waits in a small reorder
buffer until the predecessor arrives or is known not to come (:meth:`StreamingMean.skip`).

Hierarchical aggregation. Because a group's sum is a fixed sub-expression of that order, whoever
holds all of a group's updates can compute it (:meth:`StreamingMean.partial_sum` on a one-group
stream) and hand it over as a :class:`PartialSum` (:meth:`StreamingMean.add_partial`): a
process-pool worker that trains a whole group sends one pre-summed update instead of one per
participant, with the per-update sketch rows, and the result is bit-for-bit what summing the
updates one by one gives. Whatever the arrival order, the transport and the number of workers,
the same set of updates gives the same bits. (The batch
:func:`~phalanx.core.aggregation.base.weighted_mean` orders by a digest of the contents instead,
which needs every update at hand; the two agree to float rounding, tested.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from phalanx.core.aggregation.suspicion import sketch_stride
from phalanx.core.errors import AggregationError
from phalanx.core.types import ParticipantId, Weights

SUM_GROUPS = 12
"""Groups of the canonical summation order (position ``i`` of the sorted names is in group
``i % SUM_GROUPS``): 12 so that 1, 2, 3, 4 or 6 round-robin workers each own whole groups."""


@dataclass(frozen=True)
class StreamedMean:
    """What a finished :class:`StreamingMean` hands the algorithm.

    Attributes
    ----------
    mean:
        The sample-weighted mean, one float32 array per layer.
    participants:
        Who contributed, sorted (the rows of ``deltas``).
    num_examples:
        The sum of the contributors' sample counts.
    deltas:
        ``n x ceil(d / stride)`` float64 sketch of each update minus the global weights.
    stride:
        The sketch's coordinate stride (1: every coordinate).
    """

    mean: Weights
    participants: list[ParticipantId]
    num_examples: int
    deltas: NDArray[np.float64]
    stride: int


@dataclass(frozen=True)
class PartialSum:
    """One group's share of a :class:`StreamingMean`: ``sum_k n_k w_k`` over its contributors.

    Attributes
    ----------
    group:
        The group of the canonical order it stands for.
    participants:
        Who was folded in, sorted (the rows of ``rows``).
    num_examples:
        Their summed sample counts.
    sums:
        The flat float64 sum of every layer, back to back.
    kept:
        ``len(participants) x width`` float32: every ``stride``-th coordinate of each update,
        the sketch before the global weights are subtracted (``0 x 0`` without a sketch).
    stride:
        The sketch stride the coordinates were taken with.
    """

    group: int
    participants: tuple[ParticipantId, ...]
    num_examples: int
    sums: NDArray[np.float64]
    kept: NDArray[np.float32]
    stride: int


class StreamingMean:
    """A sample-weighted mean folded one update (or one group's partial sum) at a time.

    Parameters
    ----------
    global_weights:
        The weights the round started from: they fix the layout every update must have, and the
        sketch rows are taken of ``update - global_weights``.
    expected:
        Everyone asked for an update this round; only they may contribute, each once.
    sketch:
        Keep the per-update sketch rows the suspicion scores need (default ``True``).
    stride:
        The sketch stride; default :func:`~phalanx.core.aggregation.suspicion.sketch_stride`
        of the expected count (a worker summing one group passes the round's stride).
    groups:
        Groups of the canonical order (default :data:`SUM_GROUPS`; 1 for a worker's one-group
        partial sum).

    Raises
    ------
    AggregationError
        When nobody is expected, a name repeats, or ``stride`` / ``groups`` is below 1.
    """

    def __init__(
        self,
        global_weights: Weights,
        expected: Sequence[ParticipantId],
        *,
        sketch: bool = True,
        stride: int | None = None,
        groups: int = SUM_GROUPS,
    ) -> None:
        order = sorted(expected)
        if not order:
            raise AggregationError(
                "a streamed aggregation needs at least one expected participant",
                hint="start the stream only for a stage that asked someone",
            )
        if len(set(order)) != len(order):
            raise AggregationError(f"participants expected twice in one round: {order}")
        if groups < 1 or (stride is not None and stride < 1):
            raise AggregationError(
                f"a streamed aggregation needs groups >= 1 and stride >= 1; found groups"
                f" {groups}, stride {stride}"
            )
        self._global = list(global_weights)
        self._shapes = [np.shape(w) for w in self._global]
        self._sizes = [int(np.prod(s, dtype=np.int64)) for s in self._shapes]
        self._order = order
        self._index = {p: i for i, p in enumerate(order)}
        self._g = groups
        self._next = [0] * groups  # per group: how many of its members are settled
        self._waiting: dict[int, tuple[NDArray[np.float32], int] | None] = {}  # None: skipped
        d = sum(self._sizes)
        self._d = d
        self._sums: list[NDArray[np.float64] | None] = [None] * groups  # flat, layer by layer
        self._totals = [0] * groups
        self._tmp = np.empty(d, dtype=np.float64)
        self._flat_in = np.empty(d, dtype=np.float32)  # the update being added, flattened
        self._folded: set[int] = set()  # positions in the sorted order
        self._stride = stride if stride is not None else sketch_stride(len(order), d)
        self._sketch = sketch
        self._width = len(range(0, d, self._stride))
        # row i: the sketch coordinates of the update at position i, as float32 (exact); the
        # float64 deltas are made once, by finish() (at most SKETCH_BUDGET values)
        self._kept = np.empty((len(order) if sketch else 0, self._width), dtype=np.float32)
        # every stride-th coordinate of the flattened layers (suspicion.flatten_deltas's sketch)
        self._global_sketch = self._flat(self._global)[:: self._stride].astype(np.float64)
        self._finished = False

    @property
    def stride(self) -> int:
        """The sketch stride."""
        return self._stride

    def groups(self) -> list[list[ParticipantId]]:
        """The members of each group of the canonical order, sorted."""
        return [self._order[g :: self._g] for g in range(self._g)]

    @property
    def waiting(self) -> int:
        """Updates held in the reorder buffer now (arrived ahead of a predecessor)."""
        return sum(1 for v in self._waiting.values() if v is not None)

    def add(self, participant: ParticipantId, weights: Weights, num_examples: int) -> None:
        """Fold ``participant``'s update (or buffer it until its predecessors are settled).

        Raises
        ------
        AggregationError
            When the participant was not expected or already settled, the layout differs from
            the global weights', a value is not finite, or the count is negative.
        """
        i = self._slot(participant)
        if isinstance(num_examples, bool) or int(num_examples) != num_examples or num_examples < 0:
            raise AggregationError(
                f"{participant} reported {num_examples!r} training examples; expected a whole"
                " number >= 0"
            )
        if len(weights) != len(self._shapes):
            raise AggregationError(
                f"{participant} sent {len(weights)} layers; expected {len(self._shapes)} as in"
                " the global model",
                hint="every participant must train the same model architecture",
            )
        for layer, (w, shape) in enumerate(zip(weights, self._shapes, strict=True)):
            if np.shape(w) != shape:
                raise AggregationError(
                    f"{participant}: layer {layer} has shape {np.shape(w)}; expected {shape} as"
                    " in the global model",
                    hint="every participant must train the same model architecture",
                )
        flat = self._flat(weights, out=self._flat_in)
        if not np.isfinite(flat).all():
            bad = next(i for i, w in enumerate(weights) if not np.isfinite(w).all())
            raise AggregationError(
                f"{participant}: layer {bad} contains NaN or infinite values",
                hint="the participant's training diverged; lower its learning rate",
            )
        if i != self._position(i):  # ahead of a predecessor: wait, in a copy of its own
            flat = flat.copy()
        self._waiting[i] = (flat, int(num_examples))
        self._drain()

    def skip(self, participant: ParticipantId) -> None:
        """Record that ``participant`` will not contribute (failed, refused, late)."""
        self._waiting[self._slot(participant)] = None
        self._drain()

    def add_partial(self, partial: PartialSum) -> None:
        """Take a whole group's sum, computed elsewhere by :meth:`partial_sum`.

        Members of the group missing from ``partial.participants`` are settled as skipped.

        Raises
        ------
        AggregationError
            When the group is unknown or already has updates, a participant is not one of its
            members, or the sums or rows do not fit this stream.
        """
        g = partial.group
        if self._finished:
            raise AggregationError("this streamed aggregation was already finished")
        if not 0 <= g < self._g:
            raise AggregationError(f"a partial sum for group {g}; this round has {self._g}")
        members = set(self._order[g :: self._g])
        waiting = [i for i, v in self._waiting.items() if i % self._g == g and v is not None]
        if waiting or any(self._index[p] in self._folded for p in members):
            raise AggregationError(f"group {g} already has updates; its partial sum comes too late")
        strangers = sorted(set(partial.participants) - members)
        if strangers:
            raise AggregationError(f"the partial sum of group {g} holds non-members {strangers}")
        width = self._width if self._sketch else 0
        kept_ok = partial.kept.shape == (len(partial.participants), width) or not self._sketch
        if partial.sums.shape != (self._d,) or partial.stride != self._stride or not kept_ok:
            raise AggregationError(
                f"the partial sum of group {g} has sums {partial.sums.shape}, sketch"
                f" {partial.kept.shape} and stride {partial.stride}; expected ({self._d},),"
                f" ({len(partial.participants)}, {width}) and {self._stride}"
            )
        for i in [i for i in self._waiting if i % self._g == g]:
            del self._waiting[i]  # members settled as skipped before the partial came
        self._next[g] = len(members)
        self._sums[g] = np.array(partial.sums, dtype=np.float64)
        self._totals[g] = int(partial.num_examples)
        at = [self._index[p] for p in partial.participants]
        self._folded.update(at)
        if self._sketch and at:
            self._kept[at] = partial.kept

    def partial_sum(self, group: int) -> PartialSum:
        """Settle everything (the missing are skipped) and return this one-group stream's sum,
        as group ``group`` of a round's :class:`StreamingMean` would have summed it."""
        if self._g != 1:
            raise AggregationError(
                f"a partial sum comes from a one-group stream; this one has {self._g} groups"
            )
        self._settle()
        at = sorted(self._folded)
        return PartialSum(
            group=group,
            participants=tuple(self._order[i] for i in at),
            num_examples=self._totals[0],
            sums=self._sums[0] if self._sums[0] is not None else np.zeros(self._d),
            kept=self._kept[at] if self._sketch else np.zeros((0, 0), dtype=np.float32),
            stride=self._stride,
        )

    def finish(self) -> StreamedMean:
        """Fold what is still buffered (the missing are skipped) and return the mean.

        Raises
        ------
        AggregationError
            When nothing was added, or the sample counts sum to zero.
        """
        self._settle()
        if not self._folded:
            raise AggregationError(
                "nothing to aggregate: no updates were given",
                hint="a round needs at least one participant update",
            )
        total = sum(self._totals)
        if total <= 0:
            raise AggregationError(
                "sample counts sum to zero: no participant trained on any example",
                hint="participants with no data should not answer a training task",
            )
        acc = np.zeros(self._d, dtype=np.float64)
        for part in self._sums:  # the group sums, in group order
            if part is not None:
                acc += part
        flat_mean = (acc / float(total)).astype(np.float32)
        mean: Weights = []
        pos = 0
        for shape, size in zip(self._shapes, self._sizes, strict=True):
            mean.append(flat_mean[pos : pos + size].reshape(shape))
            pos += size
        at = sorted(self._folded)
        names = [self._order[i] for i in at]
        if not self._sketch:
            deltas = np.zeros((0, self._width))
        else:  # float64(w) - float64(x) on the kept coordinates, as flatten_deltas computes
            kept = self._kept if len(at) == len(self._order) else self._kept[at]
            self._kept = np.zeros((0, self._width), dtype=np.float32)
            deltas = np.subtract(kept, self._global_sketch[None, :], dtype=np.float64)
            del kept
        self._sums = [None] * self._g
        return StreamedMean(mean, names, total, deltas, self._stride)

    def _settle(self) -> None:
        if self._finished:
            raise AggregationError("this streamed aggregation was already finished")
        for i in range(len(self._order)):
            if i >= self._position(i):
                self._waiting.setdefault(i, None)
        self._drain()
        self._finished = True

    def _position(self, i: int) -> int:
        """The position in the sorted order that group ``i % groups`` folds next."""
        g = i % self._g
        return g + self._next[g] * self._g

    def _slot(self, participant: ParticipantId) -> int:
        if self._finished:
            raise AggregationError("this streamed aggregation was already finished")
        i = self._index.get(participant)
        if i is None:
            raise AggregationError(
                f"an update from {participant!r}, who was not asked this round",
                hint="only the participants a round's tasks went to may contribute",
            )
        if i < self._position(i) or i in self._waiting:
            raise AggregationError(f"a second update from {participant!r} in one round")
        return i

    def _drain(self) -> None:
        for g in {i % self._g for i in self._waiting}:
            while (pos := g + self._next[g] * self._g) in self._waiting:
                item = self._waiting.pop(pos)
                if item is not None:
                    self._fold(g, pos, *item)
                self._next[g] += 1

    def _fold(self, g: int, i: int, flat: NDArray[np.float32], n: int) -> None:
        acc = self._sums[g]
        if acc is None:
            acc = self._sums[g] = np.zeros(self._d, dtype=np.float64)
        # n_k * w_k in float64, as weighted_mean computes each term
        np.multiply(flat, float(n), out=self._tmp, dtype=np.float64)
        acc += self._tmp
        self._totals[g] += n
        self._folded.add(i)
        if self._sketch:
            self._kept[i] = flat[:: self._stride]

    @staticmethod
    def _flat(arrays: Weights, out: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
        """The layers as one float32 vector, back to back (into ``out`` when given)."""
        if not arrays:
            return np.zeros(0, dtype=np.float32)
        parts = [np.ravel(w) for w in arrays]
        if out is None:
            return np.concatenate(parts, dtype=np.float32, casting="same_kind")
        return np.concatenate(parts, out=out, casting="same_kind")
