"""Participant-side differential privacy: budget check, clipping, and the ledger.

:class:`PrivacyGuard` is participant middleware ``(task, call_next) -> Reply`` (the shape of
:func:`phalanx.services.participant.log_sent`). For every training task it

1. reads the task's ``dp`` parameters (:class:`~phalanx.core.privacy.spec.DPTaskSpec`) and turns
   them into the mechanism it will run, with its **own** accountant: a cost the coordinator might
   state is never read;
2. composes that with everything its own ledger already holds and **refuses** the task (the
   ``Reply.refused`` path, so the federation goes on without it) when the result would pass its
   configured ``(epsilon, delta)`` budget, or when the task asks for no DP at all;
3. for record-level DP fills in the noise multiplier it calibrated itself when the task gives
   only a target epsilon, lets local training run DP-SGD, and checks the reply ran exactly the
   schedule it charged, no class sampled above the charged rate (class-balanced sampling);
4. for client-level DP clips its model delta to the task's norm (McMahan et al., ICLR 2018) and
   reports whether it fit (for adaptive clipping, Andrew et al., NeurIPS 2021);
5. writes the charge to its ledger **before** the update leaves.

Secure aggregation wraps this middleware from outside: it receives the plain clipped update.
``STATS`` and ``EVALUATE`` tasks pass through untouched (see ``docs/privacy.md``: the feature
statistics round is not covered by the DP guarantee).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from phalanx.core.errors import PrivacyError
from phalanx.core.messages import Reply, Stage, Task
from phalanx.core.privacy.central import CLIP_CONFIG_KEY, UNCLIPPED_METRIC
from phalanx.core.privacy.clipping import clip_update
from phalanx.core.privacy.distributed import (
    DistributedNoise,
    distributed_event,
    min_scale,
    secagg_spec,
)
from phalanx.core.privacy.spec import (
    BUDGET_REFUSAL,
    Budget,
    DPTaskSpec,
    LedgerEntry,
    PrivacyEvent,
    client_event,
    record_event,
    record_schedule,
)
from phalanx.core.types import ParticipantId
from phalanx.ports import Accountant, PrivacyLedger

log = logging.getLogger("phalanx.privacy")

Handler = Callable[[Task], Reply]

DEFAULT_BATCH_SIZE = 256
"""The model spec's default batch size (``ModelSpec.batch_size``) when a task omits it."""


class PrivacyGuard:
    """Participant middleware enforcing the participant's own privacy budget.

    Parameters
    ----------
    participant:
        Who this guard speaks for (named in refusals).
    ledger:
        The participant's own ledger (:class:`~phalanx.adapters.store.ledger.SqliteLedger`).
    accountant:
        The participant's own accountant (:class:`~phalanx.adapters.accounting.RdpAccountant`).
    budget:
        Its total ``(epsilon, delta)`` over every federation it takes part in.
    num_examples:
        Rows its local training uses (the DP-SGD sampling rate depends on it).
    distributed:
        The integer-noise hook given to secure aggregation (``SecureAggregation(...,
        integer_noise=...)``); needed for ``client-distributed`` tasks, refused without it.
    """

    def __init__(
        self,
        participant: ParticipantId,
        *,
        ledger: PrivacyLedger,
        accountant: Accountant,
        budget: Budget,
        num_examples: int,
        distributed: DistributedNoise | None = None,
    ) -> None:
        self.distributed = distributed
        self.participant = participant
        self.ledger = ledger
        self.accountant = accountant
        self.budget = budget
        self.num_examples = int(num_examples)

    def spent(self) -> float:
        """Epsilon spent so far over all federations, at the budget's delta."""
        return self.accountant.epsilon([e.event for e in self.ledger.entries()], self.budget.delta)

    def __call__(self, task: Task, call_next: Handler) -> Reply:
        """Check, run, clip and charge one task (see the module docstring)."""
        if task.stage is not Stage.FIT:
            return call_next(task)
        try:
            spec = DPTaskSpec.from_config(task.config)
        except PrivacyError as exc:
            return self._refuse(task, "default", f"malformed DP parameters: {exc}")
        if spec is None:
            return self._refuse(
                task,
                "default",
                "the task asks for no differential privacy; my privacy budget"
                f" (epsilon {self.budget.epsilon:g}, delta {self.budget.delta:g}) requires it",
            )
        try:
            task, event = self._plan(task, spec)
            history = [e.event for e in self.ledger.entries()]
            before = self.accountant.epsilon(history, self.budget.delta)
            after = self.accountant.epsilon([*history, event], self.budget.delta)
        except PrivacyError as exc:
            return self._refuse(task, spec.federation, str(exc))
        if after > self.budget.epsilon:
            return self._refuse(
                task,
                spec.federation,
                f"{BUDGET_REFUSAL} this round would raise my epsilon from {before:.3f} to"
                f" {after:.3f}, past my budget of {self.budget.epsilon:g} at delta"
                f" {self.budget.delta:g}",
            )
        reply = call_next(task)
        if reply.refused:
            return reply
        try:
            reply = self._finish(task, spec, event, reply)
        except PrivacyError as exc:
            return self._refuse(task, spec.federation, f"update withheld: {exc}")
        self.ledger.record(
            LedgerEntry(
                federation=spec.federation,
                round=task.round,
                mode=spec.mode,
                event=event,
                epsilon_round=self.accountant.epsilon([event], self.budget.delta),
                epsilon_total=after,
                delta=self.budget.delta,
            )
        )
        log.info(
            "%s round %d: DP %s charged, epsilon %.3f -> %.3f of %g",
            self.participant,
            task.round,
            spec.mode,
            before,
            after,
            self.budget.epsilon,
        )
        return reply

    # -- steps ------------------------------------------------------------------------------

    def _plan(self, task: Task, spec: DPTaskSpec) -> tuple[Task, PrivacyEvent]:
        """The task to run (noise multiplier filled in) and the event it will cost."""
        if spec.mode == "record":
            batch, epochs = _record_params(task.config)
            if spec.noise_multiplier is None:
                if spec.target_epsilon is None:
                    raise PrivacyError("record-level DP needs noise_multiplier or target_epsilon")
                q, steps = record_schedule(self.num_examples, batch, epochs)
                z = self.accountant.noise_multiplier(
                    epsilon=spec.target_epsilon,
                    delta=spec.delta,
                    sampling_rate=q,
                    steps=steps * spec.rounds,
                )
                raw = dict(task.config["dp"])
                raw["noise_multiplier"] = z
                task = dataclasses.replace(task, config={**task.config, "dp": raw})
                spec = dataclasses.replace(spec, noise_multiplier=z)
            return task, record_event(spec, self.num_examples, batch, epochs)
        if spec.mode == "client-central":
            return task, client_event(spec)
        if self.distributed is not None:
            dim = int(sum(int(np.size(w)) for w in task.weights)) + 1  # + the weight word
            return task, distributed_event(secagg_spec(spec), min_scale(spec), dim)
        raise PrivacyError(
            "client-distributed DP needs secure aggregation to add the integer noise shares,"
            " which this participant does not run",
            hint="use --dp client-central, or enable secure aggregation",
        )

    def _finish(self, task: Task, spec: DPTaskSpec, event: PrivacyEvent, reply: Reply) -> Reply:
        """Check a record-level reply ran what was charged; clip a client-level update."""
        if spec.mode == "record":
            q = reply.metrics.get("dp_sampling_rate")
            steps = reply.metrics.get("dp_steps")
            z = reply.metrics.get("dp_noise_multiplier")
            if (
                q is None
                or steps is None
                or z is None
                or not math.isclose(q, event.sampling_rate, rel_tol=1e-9)
                or int(steps) != event.steps
                or not math.isclose(z, event.noise_multiplier, rel_tol=1e-9)
            ):
                raise PrivacyError(
                    f"local training ran (q={q}, steps={steps}, z={z}) but (q="
                    f"{event.sampling_rate}, steps={event.steps}, z={event.noise_multiplier})"
                    " was charged",
                    hint="num_examples given to the privacy guard must be the rows trained on",
                )
            top = reply.metrics.get("dp_max_class_rate", q)
            if not top <= event.sampling_rate * (1 + 1e-9):
                raise PrivacyError(
                    f"local training sampled a class at rate {top}, above the rate"
                    f" {event.sampling_rate} that was charged",
                    hint="class-balanced sampling must never exceed the accounted rate",
                )
            return reply
        clip = float(task.config.get(CLIP_CONFIG_KEY, spec.clip))
        if len(reply.arrays) != len(task.weights):
            raise PrivacyError(
                f"update has {len(reply.arrays)} arrays, the task's model {len(task.weights)}"
            )
        delta = [
            np.asarray(a, dtype=np.float64) - np.asarray(g, dtype=np.float64)
            for a, g in zip(reply.arrays, task.weights, strict=True)
        ]
        clipped, norm = clip_update(delta, clip)
        arrays = [
            (np.asarray(g, dtype=np.float64) + d).astype(np.float32)
            for g, d in zip(task.weights, clipped, strict=True)
        ]
        metrics = {**reply.metrics, UNCLIPPED_METRIC: 1.0 if norm <= clip else 0.0}
        if spec.mode == "client-distributed" and self.distributed is not None:
            self.distributed.arm(spec, min_scale(spec), task.weights)
        return dataclasses.replace(reply, arrays=arrays, metrics=metrics)

    def _refuse(self, task: Task, federation: str, reason: str) -> Reply:
        log.warning("%s refuses round %d: %s", self.participant, task.round, reason)
        self.ledger.refusal(federation, task.round, reason)
        return Reply(
            participant=self.participant,
            round=task.round,
            stage=task.stage,
            schema_hash=task.schema_hash,
            refused=reason,
        )


def _record_params(config: dict[str, Any]) -> tuple[int, int]:
    """``(batch_size, local_epochs)`` of a task, as local training will read them."""
    model = config.get("model", {})
    batch = model.get("batch_size", DEFAULT_BATCH_SIZE) if isinstance(model, dict) else None
    epochs = config.get("local_epochs", model.get("epochs", 1) if isinstance(model, dict) else 1)
    try:
        b, e = int(batch), int(epochs)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PrivacyError(
            f"task batch_size {batch!r} and local_epochs {epochs!r} must be whole numbers"
        ) from None
    return b, e


# -- composition helpers (the simulation and the CLI pick the adapters) ----------------------


def ledger_summary(
    ledgers: dict[ParticipantId, PrivacyLedger], accountant: Accountant, delta: float
) -> dict[str, Any]:
    """Per participant: rounds charged, epsilon spent (composed), refusals; and the maximum."""
    per: dict[str, dict[str, Any]] = {}
    for pid, ledger in sorted(ledgers.items()):
        entries = ledger.entries()
        per[str(pid)] = {
            "rounds_charged": len(entries),
            "epsilon": accountant.epsilon([e.event for e in entries], delta),
            "noise_multiplier": entries[-1].event.noise_multiplier if entries else None,
        }
    spent = [p["epsilon"] for p in per.values()]
    return {
        "max_epsilon_spent": max(spent) if spent else 0.0,
        "participants": per,
    }


def training_rows(labels_benign: np.ndarray[Any, Any] | None, total: int, model_kind: str) -> int:
    """Rows local training uses: all for the classifier; benign ones for the autoencoder.

    ``labels_benign`` marks the benign rows (``None`` when the flows are unlabelled: the
    autoencoder then trains on all of them).
    """
    if model_kind != "autoencoder" or labels_benign is None:
        return int(total)
    return int(np.count_nonzero(labels_benign))
