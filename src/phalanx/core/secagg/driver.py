"""The round engine's handle on secure aggregation: start, request, feed, outcome.

:class:`~phalanx.core.rounds.Federation` delegates here when its plan has
``secure_aggregation`` on: a plain ``STATS`` or ``FIT`` stage is turned into a
:class:`~phalanx.core.secagg.round.SecureRound`, its four stages are planned and fed one by one,
and the last one yields an :class:`Outcome`: the summed statistics vector, or one pseudo-update per
bucket for the server algorithm (see :mod:`phalanx.core.secagg.vectors`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from phalanx.core.aggregation.classwise import COUNTS_KEY
from phalanx.core.errors import ProtocolError, RoundError, SecAggError
from phalanx.core.messages import Reply, Stage, Task
from phalanx.core.secagg import vectors
from phalanx.core.secagg.crypto import SecAggCrypto
from phalanx.core.secagg.params import Kind, SecAggSettings
from phalanx.core.secagg.round import SecureRound
from phalanx.core.types import ParticipantId, Update, Weights


@dataclass(frozen=True)
class Outcome:
    """What a completed secure aggregation gives the round engine."""

    kind: Kind
    stats: NDArray[np.float64] | None = None
    updates: list[Update] = field(default_factory=list)
    members: tuple[ParticipantId, ...] = ()
    metrics: list[dict[str, float]] = field(default_factory=list)
    refused: dict[ParticipantId, str] = field(default_factory=dict)


class SecureDriver:
    """Runs one secure aggregation at a time for a federation.

    Parameters
    ----------
    settings:
        The federation's secure-aggregation settings.
    crypto:
        The cryptographic port.
    rng:
        The coordinator's generator (buckets, graph seeds, instance nonces).
    """

    def __init__(
        self, settings: SecAggSettings, crypto: SecAggCrypto, rng: np.random.Generator
    ) -> None:
        self.settings = settings
        self.crypto = crypto
        self.rng = rng
        self.running: SecureRound | None = None
        self._refused: dict[ParticipantId, str] = {}
        self._metrics: list[dict[str, float]] = []

    def start(
        self,
        round_id: int,
        kind: Kind,
        tasks: Mapping[ParticipantId, Task],
        length: int,
        classwise_layer: int = -1,
    ) -> None:
        """Begin a secure aggregation in place of the plain stage of ``tasks``
        (``classwise_layer``: see :class:`~phalanx.core.secagg.params.InstanceParams`)."""
        self.running = SecureRound(
            round_id, kind, sorted(tasks), self.settings, self.crypto, self.rng, tasks, length,
            classwise_layer,
        )  # fmt: skip
        self._refused, self._metrics = {}, []

    def request(self, min_participants: int) -> tuple[int, Stage, dict[ParticipantId, Task], int]:
        """``(round, stage, tasks, min_replies)`` of the current stage.

        ``min_participants`` counts the inputs in the sum: the masked-input stage and those
        before it need that many replies; unmasking only needs the per-bucket thresholds.
        """
        run = self._run()
        plain = run.params.kind == "stats" or run.stage is Stage.SECAGG_UNMASK
        return run.round, run.stage, run.tasks(), 1 if plain else min_participants

    def abort(self) -> None:
        """Forget the running aggregation (a retry starts over with fresh keys)."""
        self.running = None

    def feed(
        self,
        stage: Stage,
        valid: Mapping[ParticipantId, Reply],
        refused: Mapping[ParticipantId, str],
        global_weights: Weights,
        schema_hash: str,
    ) -> Outcome | None:
        """Feed one stage's replies; the :class:`Outcome` after the last stage.

        Raises
        ------
        SecAggError
            When every bucket failed; the message includes what participants said.
        RoundError
            When no bucket carried any training weight.
        """
        run = self._run()
        if stage is not run.stage:
            raise ProtocolError(f"{stage.value} replies arrived during {run.stage.value}")
        self._refused.update(refused)
        if stage is Stage.SECAGG_MASKED:
            self._metrics = [dict(r.metrics) for r in valid.values()]
        try:
            sums = run.receive(valid)
        except SecAggError as exc:
            self.running = None
            told = f"; participants said: {self._refused}" if self._refused else ""
            raise SecAggError(f"round {run.round}: {exc.message}{told}", hint=exc.hint) from None
        if sums is None:
            return None
        self.running = None
        left_out = {**self._refused, **run.refused}
        if run.params.kind == "stats":
            total = np.zeros(run.params.length // 4, dtype=np.float64)
            for s in sums:
                total += vectors.decode_stats(run.params, s.words)
            return Outcome("stats", stats=total, refused=left_out)
        updates: list[Update] = []
        members: list[ParticipantId] = []
        for i, bucket in enumerate(sums):
            decoded = vectors.decode_fit(
                run.params, bucket.words, global_weights, members=len(bucket.members)
            )
            if decoded is None:
                continue
            members.extend(bucket.members)
            cap = run.params.weight_cap
            extras: dict[str, Weights] = {}
            if decoded.class_weights is not None:  # the bucket's rows per class, for the algorithm
                extras[COUNTS_KEY] = [(decoded.class_weights * cap).astype(np.float32)]
            updates.append(
                Update(
                    participant=ParticipantId(f"bucket-{i + 1}"),
                    round=run.round,
                    weights=decoded.weights,
                    num_examples=max(1, round(decoded.weight * cap)),
                    schema_hash=schema_hash,
                    extras=extras,
                )
            )
        if not updates:
            raise RoundError(
                f"round {run.round}: no bucket of the secure aggregation carried any weight",
                hint="participants must train on at least one example",
            )
        return Outcome(
            "fit",
            updates=updates,
            members=tuple(sorted(members)),
            metrics=self._metrics,
            refused=left_out,
        )

    def _run(self) -> SecureRound:
        if self.running is None:
            raise ProtocolError("no secure aggregation is running")
        return self.running
