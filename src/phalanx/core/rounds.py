"""The coordinator's round state machine, written once for simulation and deployment.

A federation moves through phases: an optional ``STATS`` stage in which every participant
contributes additive feature statistics (so the feature transform is fit on the union of the
participants' data without pooling it), then ``rounds`` training rounds, each a ``FIT`` stage
followed by an optional ``EVALUATE`` stage. With ``secure_aggregation`` on, the ``STATS`` and
``FIT`` stages each run as the four SecAgg+ stages of
:class:`~phalanx.core.secagg.round.SecureRound` and the coordinator only ever sees per-bucket sums:
one pseudo-update per bucket goes to the algorithm.

This module only decides: which participants get which :class:`~phalanx.core.messages.Task`, and
what the replies mean. It has no loops, clocks, sockets or timeouts; the coordinator service
(``phalanx.services.coordinator``) drives it over a transport and enforces deadlines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from phalanx.core.aggregation import ServerAlgorithm
from phalanx.core.aggregation.classwise import COUNTS_KEY
from phalanx.core.errors import (
    AggregationError,
    ConfigError,
    ProtocolError,
    RoundError,
    SchemaMismatchError,
)
from phalanx.core.features.schema import FeatureSchema
from phalanx.core.features.stats import FeatureStats, vector_length
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.fit_stream import FitStream, SumPlan
from phalanx.core.messages import Reply, Stage, Task
from phalanx.core.plan import FederationPlan, StageRequest, participant_seed
from phalanx.core.privacy.spec import is_budget_refusal
from phalanx.core.records import RoundRecord, record_from_dict, record_to_dict, weighted_metrics
from phalanx.core.secagg.crypto import SecAggCrypto
from phalanx.core.secagg.driver import SecureDriver
from phalanx.core.secagg.round import is_secure
from phalanx.core.secagg.vectors import fit_length, stats_length
from phalanx.core.types import ParticipantId, Update, Weights

__all__ = ["Federation", "FederationPlan", "RoundRecord", "StageRequest", "participant_seed"]


class Federation:
    """The coordinator's decisions for one federation.

    Parameters
    ----------
    plan:
        Rounds, sampling and training parameters.
    schema:
        The agreed feature schema; its hash is in every task and must be echoed.
    algorithm:
        Server-side aggregation (FedAvg, FedProx, SCAFFOLD, FedAvgM, FedAdam, FedYogi ...).
    init_weights:
        Builds the initial global weights once the input width is known.
    transform:
        A feature transform fixed in advance; required when ``plan.federated_stats`` is off.
    crypto:
        The secure-aggregation crypto port; required when ``plan.secure_aggregation`` is on.
    roster:
        Every participant enrolled in the federation, connected or not. When budget refusals
        have left fewer members than ``plan.min_participants`` who could still train, the
        federation ends (:attr:`stopped`). With a roster that count is over the roster, so
        members who are only offline for a while still count, and a round short of members
        is a round error, retried as usual. Without one it is over the participants available
        at the time.
    """

    def __init__(
        self,
        plan: FederationPlan,
        schema: FeatureSchema,
        algorithm: ServerAlgorithm,
        init_weights: Callable[[int], Weights],
        transform: FeatureTransform | None = None,
        crypto: SecAggCrypto | None = None,
        roster: Collection[ParticipantId] | None = None,
    ) -> None:
        if transform is None and not plan.federated_stats:
            raise ConfigError("a federation without the statistics stage needs a fixed transform")
        if plan.secure_aggregation and crypto is None:
            raise ConfigError("secure aggregation needs a crypto backend (crypto=...)")
        if plan.secure_aggregation and algorithm.name == "scaffold":
            raise ConfigError(
                "SCAFFOLD needs each participant's control-variate delta, which secure"
                " aggregation hides",
                hint="choose fedavg, fedprox, fedavgm, fedadam or fedyogi, or turn secure"
                " aggregation off",
            )
        self._secure: SecureDriver | None = None
        self.plan = plan
        self.schema = schema
        self.schema_hash = schema.hash()
        self.algorithm = algorithm
        self.roster: frozenset[ParticipantId] | None = None if roster is None else frozenset(roster)
        self._init_weights = init_weights
        self.transform: FeatureTransform | None = transform
        # rows per taxonomy category over the federation, from the statistics stage (None with
        # a fixed transform); tasks carry them only when the model oversamples rare classes
        self.class_totals: list[int] | None = None
        self.weights: Weights = []
        self.round = 0
        self.history: list[RoundRecord] = []
        # participants whose own privacy budget refused a round: never asked to train again
        self.spent: dict[ParticipantId, str] = {}
        # why the federation ended before its planned rounds (None: it has not)
        self.stopped: str | None = None
        self._rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 0x5A3]))
        self._pending: StageRequest | None = None
        self._fit_record: RoundRecord | None = None
        # a plain FIT stage of a streamable (FedAvg-family) algorithm folds replies as they come
        self._stream: FitStream | None = None
        # the transform's JSON form, built once per transform (every task carries it)
        self._transform_dict: tuple[FeatureTransform | None, dict[str, Any]] = (None, {})
        if transform is not None:
            self.weights = init_weights(transform.n_features)
        if plan.secure_aggregation and crypto is not None:
            self._secure = SecureDriver(plan.secagg, crypto, self._rng)

    def snapshot(self) -> tuple[dict[str, Any], dict[str, Weights]]:
        """The state to checkpoint after a completed round: JSON-ready metadata and arrays.

        A pending stage is not part of it: a coordinator restarted from a snapshot redoes the
        round that was in flight, so no round is lost or counted twice.
        """
        if self._fit_record is not None:
            raise RoundError(
                "cannot snapshot between a fit stage and its evaluate stage",
                hint="snapshot after a round completes",
            )
        meta: dict[str, Any] = {
            "round": self.round,
            "schema_hash": self.schema_hash,
            "transform": self.transform.to_dict() if self.transform is not None else None,
            "class_totals": self.class_totals,
            "rng": self._rng.bit_generator.state,
            "history": [record_to_dict(r) for r in self.history],
            "spent": dict(self.spent),
            "stopped": self.stopped,
        }
        arrays: dict[str, Weights] = {"weights": list(self.weights)}
        for key, value in self.algorithm.state().items():
            arrays[f"algo:{key}"] = list(value)
        return meta, arrays

    def restore(self, meta: dict[str, Any], arrays: dict[str, Weights]) -> None:
        """Continue from a :meth:`snapshot` (same plan, schema and algorithm)."""
        if meta.get("schema_hash") != self.schema_hash:
            raise SchemaMismatchError(
                f"checkpoint was taken for schema {str(meta.get('schema_hash'))[:12]}, this"
                f" federation uses {self.schema_hash[:12]}",
                hint="restart with the configuration the checkpoint was written under",
            )
        self.round = int(meta["round"])
        self.transform = (
            FeatureTransform.from_dict(meta["transform"]) if meta.get("transform") else None
        )
        self.class_totals = meta.get("class_totals")
        self.weights = [np.asarray(w, dtype=np.float32) for w in arrays["weights"]]
        self.algorithm.load_state({k[5:]: v for k, v in arrays.items() if k.startswith("algo:")})
        self._rng.bit_generator.state = meta["rng"]
        self.history = [record_from_dict(d) for d in meta.get("history", [])]
        self.spent = {ParticipantId(str(k)): str(v) for k, v in meta.get("spent", {}).items()}
        self.stopped = meta.get("stopped")
        self._pending = None
        self._fit_record = None
        self._stream = None
        if self._secure is not None:
            self._secure.abort()

    @property
    def done(self) -> bool:
        """True once every planned round has completed, or the federation has :attr:`stopped`."""
        if self.stopped is not None:
            return True
        return self.round >= self.plan.rounds and self._fit_record is None

    def next_stage(self, available: Sequence[ParticipantId]) -> StageRequest | None:
        """The next stage to run given who is available now, or ``None`` when finished."""
        if self._pending is not None:
            return self._pending
        avail = sorted(set(available))
        if self._secure is not None and self._secure.running is not None:
            req = self._secure_request()
        elif self.transform is None:
            # the members' rows per class only when the model oversamples by them (ADR 0019)
            config = {COUNTS_KEY: 1.0} if _oversamples(self.plan.train_config) else {}
            tasks = {
                p: Task(
                    round=0, stage=Stage.STATS, schema_hash=self.schema_hash, config=dict(config)
                )
                for p in avail
            }
            req = StageRequest(0, Stage.STATS, tasks, min_replies=min(len(avail), 1) or 1)
            if self._secure is not None and tasks:
                self._secure.start(0, "stats", tasks, stats_length(vector_length(self.schema)))
                req = self._secure_request()
        elif self._fit_record is not None:
            chosen = self._fit_record.participants
            tasks = {
                p: Task(
                    round=self.round,
                    stage=Stage.EVALUATE,
                    schema_hash=self.schema_hash,
                    weights=self.weights,
                    config=self._task_config(p, self.round),
                )
                for p in chosen
                if p in set(avail)
            }
            req = StageRequest(self.round, Stage.EVALUATE, tasks, min_replies=1)
        elif self.round < self.plan.rounds:
            r = self.round + 1
            eligible = [p for p in avail if p not in self.spent]
            able = (frozenset(avail) if self.roster is None else self.roster) - self.spent.keys()
            if self.spent and len(able) < self.plan.min_participants:
                among = "available" if self.roster is None else "enrolled"
                self.stopped = (
                    f"stopped after round {self.round} of {self.plan.rounds}: the privacy budgets"
                    f" of {sorted(self.spent)} are spent, which leaves {len(able)} {among}"
                    f" participant(s) of the {self.plan.min_participants} a round needs; the"
                    " model is "
                    + (f"round {self.round}'s" if self.round else "the untrained initial one")
                )
                return None
            sampled = self._sample(eligible)
            extras = self.algorithm.task_extras()
            algo_config = self.algorithm.task_config()
            tasks = {
                p: Task(
                    round=r,
                    stage=Stage.FIT,
                    schema_hash=self.schema_hash,
                    weights=self.weights,
                    config={**self._task_config(p, r), **algo_config},
                    extras=extras,
                )
                for p in sampled
            }
            req = StageRequest(r, Stage.FIT, tasks, min_replies=self.plan.min_participants)
            if self._secure is not None:
                classwise = int(getattr(self.algorithm, "classwise_layer", -1))
                length = fit_length(self.weights, classwise)
                self._secure.start(r, "fit", tasks, length, classwise)
                req = self._secure_request()
            elif tasks and getattr(self.algorithm, "streamable", False) is True:
                self._stream = FitStream(
                    self.weights, sorted(tasks), lambda p, reply: self._check(p, reply, req)
                )
        else:
            return None
        if not req.tasks:
            raise RoundError(
                f"no participant is available for the {req.stage.value} stage of round {req.round}",
                hint="start participants, or lower min_participants",
            )
        self._pending = req
        return req

    def complete_stage(self, replies: Mapping[ParticipantId, Reply]) -> RoundRecord | None:
        """Feed the replies of the pending stage; returns the record when a round completes.

        Raises :class:`RoundError` when fewer than the stage's minimum answered; the stage stays
        pending so the caller can retry it with whoever is available.
        """
        req = self._pending
        if req is None:
            raise ProtocolError("replies arrived but no stage is pending")
        valid: dict[ParticipantId, Reply] = {}
        refused: dict[ParticipantId, str] = {}
        stream = self._stream if req.stage is Stage.FIT else None
        for pid, reply in sorted(replies.items()):
            verdict = stream.verdict(pid, reply) if stream is not None else None
            if verdict is not None:  # judged by absorb() when it arrived: "" is folded
                if verdict:
                    refused[pid] = verdict
                else:
                    valid[pid] = reply
                continue
            try:
                self._check(pid, reply, req)
                if stream is not None and not reply.refused:
                    stream.take(pid, reply)
            except (ProtocolError, SchemaMismatchError, AggregationError) as exc:
                # One bad reply costs that participant the round, never the federation.
                refused[pid] = f"rejected: {exc}"
                continue
            if reply.refused:
                refused[pid] = reply.refused
            else:
                valid[pid] = reply
        self.spent.update({p: why for p, why in refused.items() if is_budget_refusal(why)})
        lost = sorted(stream.absorbed - set(valid)) if stream is not None else []
        if len(valid) < req.min_replies or lost:
            self._pending = None
            self._stream = None
            if self._secure is not None:
                self._secure.abort()
            raise RoundError(
                f"round {req.round} {req.stage.value}: {len(valid)} usable replies of"
                f" {len(req.tasks)} asked, at least {req.min_replies} needed"
                + (f"; refused: {refused}" if refused else "")
                + (f"; folded on arrival but missing from the result: {lost}" if lost else ""),
                hint="the round will be retried with the participants available then"
                + (
                    "; those whose privacy budget is spent are not asked again, and the"
                    " federation stops when too few are left"
                    if any(p in self.spent for p in refused)
                    else ""
                ),
            )
        self._pending = None
        if is_secure(req.stage):
            return self._secure_stage(req, valid, refused)
        if req.stage is Stage.STATS:
            self._finish_stats(valid)
            return None
        if req.stage is Stage.FIT:
            return self._finish_fit(req, valid, refused)
        return self._finish_eval(valid)

    @property
    def streaming(self) -> bool:
        """True while the pending stage folds replies as they arrive (:mod:`.fit_stream`)."""
        return self._stream is not None and self._pending is not None

    def absorb(self, pid: ParticipantId, reply: Reply | None) -> Reply | None:
        """A transport's ``on_reply``: check and fold a streamed ``FIT`` reply on arrival and
        return it without arrays (``complete_stage`` must get that very object); any other
        reply comes back unchanged. ``None`` says ``pid`` will not answer."""
        return reply if not self.streaming or not self._stream else self._stream.absorb(pid, reply)

    def sum_plan(self) -> SumPlan | None:
        """Groups a transport may pre-sum in a streamed stage; ``None`` when not streaming."""
        return self._stream.plan() if self.streaming and self._stream else None

    # -- stages -----------------------------------------------------------------------------

    def _finish_stats(self, valid: Mapping[ParticipantId, Reply]) -> None:
        total: np.ndarray | None = None
        for reply in valid.values():
            if len(reply.arrays) != 1:
                raise ProtocolError(
                    f"statistics reply from {reply.participant!r} holds {len(reply.arrays)}"
                    " arrays, expected 1"
                )
            vec = np.asarray(reply.arrays[0], dtype=np.float64)
            total = vec.copy() if total is None else total + vec
        assert total is not None  # valid is non-empty (min_replies >= 1)
        self._fit_transform(FeatureStats.from_vector(self.schema, total))

    def _fit_transform(self, stats: FeatureStats) -> None:
        """The statistics stage's outcome: the transform, the federation's class counts (sent
        with the tasks when the model oversamples rare classes) and the initial weights."""
        self.transform = FeatureTransform.fit(stats)
        # a negative sum (a member lying in the clear) would make every member refuse its tasks
        self.class_totals = [max(int(c), 0) for c in stats.classes]
        self.weights = self._init_weights(self.transform.n_features)

    def _finish_fit(
        self,
        req: StageRequest,
        valid: Mapping[ParticipantId, Reply],
        refused: dict[ParticipantId, str],
    ) -> RoundRecord | None:
        updates = []
        for pid, reply in valid.items():
            updates.append(
                Update(
                    participant=pid,
                    round=reply.round,
                    # empty when the reply was folded into the streamed aggregate
                    weights=[np.asarray(a, dtype=np.float32) for a in reply.arrays],
                    num_examples=reply.num_examples,
                    schema_hash=reply.schema_hash,
                    metrics=reply.metrics,
                    extras=reply.extras,
                )
            )
        n = sum(u.num_examples for u in updates)
        train_metrics = weighted_metrics([(u.num_examples, u.metrics) for u in updates])
        return self._aggregate(req, updates, tuple(sorted(valid)), n, train_metrics, refused)

    def _aggregate(
        self,
        req: StageRequest,
        updates: Sequence[Update],
        participants: tuple[ParticipantId, ...],
        n: int,
        train_metrics: dict[str, float],
        refused: dict[ParticipantId, str],
    ) -> RoundRecord | None:
        stream = self._stream if req.stage is Stage.FIT else None
        self._stream = None
        streamed = getattr(self.algorithm, "aggregate_streamed", None)
        if stream is not None and callable(streamed):
            self.weights = streamed(self.weights, stream.mean)
        else:
            self.weights = self.algorithm.aggregate(self.weights, updates)
        self.round = req.round
        report = getattr(self.algorithm, "report", None)
        suspicion = dict(report()) if callable(report) else {}
        record = RoundRecord(
            round=req.round,
            participants=participants,
            num_examples=n,
            train_metrics=train_metrics,
            refused=refused,
            suspicion={
                ParticipantId(str(p)): {str(k): float(v) for k, v in scores.items()}
                for p, scores in suspicion.items()
            },
        )
        if self.plan.evaluate:
            self._fit_record = record
            return None
        self.history.append(record)
        return record

    def _finish_eval(self, valid: Mapping[ParticipantId, Reply]) -> RoundRecord:
        record = self._fit_record
        assert record is not None  # an EVALUATE stage only follows a FIT stage
        metrics = weighted_metrics([(r.num_examples, r.metrics) for r in valid.values()])
        done = RoundRecord(
            round=record.round,
            participants=record.participants,
            num_examples=record.num_examples,
            train_metrics=record.train_metrics,
            eval_metrics=metrics,
            refused=record.refused,
            suspicion=record.suspicion,
        )
        self._fit_record = None
        self.history.append(done)
        return done

    # -- secure aggregation -----------------------------------------------------------------

    def _secure_request(self) -> StageRequest:
        assert self._secure is not None  # only called with secure aggregation on
        r, stage, tasks, minimum = self._secure.request(self.plan.min_participants)
        return StageRequest(r, stage, tasks, min_replies=minimum)

    def _secure_stage(
        self,
        req: StageRequest,
        valid: Mapping[ParticipantId, Reply],
        refused: dict[ParticipantId, str],
    ) -> RoundRecord | None:
        if self._secure is None:
            raise ProtocolError(f"{req.stage.value} replies arrived without secure aggregation")
        out = self._secure.feed(req.stage, valid, refused, self.weights, self.schema_hash)
        if out is None:
            return None
        if out.stats is not None:
            self._fit_transform(FeatureStats.from_vector(self.schema, out.stats))
            return None
        n = sum(u.num_examples for u in out.updates)
        metrics = weighted_metrics([(1, m) for m in out.metrics])
        return self._aggregate(req, out.updates, out.members, n, metrics, out.refused)

    # -- helpers ----------------------------------------------------------------------------

    def _sample(self, avail: list[ParticipantId]) -> list[ParticipantId]:
        k = max(self.plan.min_participants, math.ceil(self.plan.fraction * len(avail)))
        if self.plan.max_participants is not None:
            k = min(k, self.plan.max_participants)
        k = min(k, len(avail))
        if k == len(avail):
            return avail
        idx = self._rng.choice(len(avail), size=k, replace=False)
        return sorted(avail[i] for i in idx)

    def _task_config(self, pid: ParticipantId, round_id: int) -> dict[str, Any]:
        assert self.transform is not None  # only called after the statistics stage
        if self._transform_dict[0] is not self.transform:
            self._transform_dict = (self.transform, self.transform.to_dict())
        config = {
            **self.plan.train_config,
            "seed": participant_seed(self.plan.seed, round_id, pid),
            "transform": self._transform_dict[1],
        }
        if self.class_totals is not None and _oversamples(self.plan.train_config):
            config["class_totals"] = self.class_totals
        return config

    def _check(self, pid: ParticipantId, reply: Reply, req: StageRequest) -> None:
        if pid not in req.tasks:
            raise ProtocolError(f"reply from {pid!r}, who was not asked in round {req.round}")
        if reply.participant != pid:
            raise ProtocolError(
                f"reply delivered for {pid!r} claims to be from {reply.participant!r}"
            )
        if reply.round != req.round or reply.stage is not req.stage:
            raise ProtocolError(
                f"stale or replayed reply from {pid!r}: it answers round {reply.round}"
                f" {reply.stage.value}, the pending stage is round {req.round} {req.stage.value}"
            )
        if reply.schema_hash != self.schema_hash:
            raise SchemaMismatchError(
                f"{pid!r} trained on feature schema {reply.schema_hash[:12]}, the federation"
                f" agreed on {self.schema_hash[:12]}",
                hint="the participant must read its data with the federation's schema",
            )
        if req.stage is Stage.FIT and not reply.refused:
            shapes = [w.shape for w in self.weights]
            got = [a.shape for a in reply.arrays]
            if got != shapes:
                raise ProtocolError(
                    f"update from {pid!r} in round {req.round} has layer shapes {got},"
                    f" expected {shapes}"
                )
            if not all(np.isfinite(a).all() for a in reply.arrays):
                raise ProtocolError(f"update from {pid!r} in round {req.round} holds NaN or inf")


def _oversamples(train_config: Mapping[str, Any]) -> bool:
    """Whether the tasks' model oversamples rare classes (``min_class_rows`` above 1)."""
    model = train_config.get("model")
    return isinstance(model, Mapping) and int(model.get("min_class_rows") or 0) > 1
