"""Poisoning and backdoor attacks, for simulation only (never part of a production participant).

Two places an attacker acts, both inside the simulation's composition root:

* **data poisoning** (:func:`poison_parts`): the attacker organizations' training flows are
  changed before their :class:`~phalanx.services.participant.Participant` is built, so they train
  with the production code on poisoned data (label flipping, the evasion backdoor);
* **local model poisoning** (:class:`AttackMiddleware`): participant middleware on the
  attackers only, inside secure aggregation's middleware, rewrites the plain update before it is
  masked (sign flipping, noise, model replacement);
* **colluding model poisoning** (:class:`AdversarialTransport`): a transport wrapper rewrites the
  attackers' ``FIT`` replies after seeing every reply of the round, i.e. an *omniscient*,
  colluding adversary, the worst case A Little Is Enough and inner-product manipulation assume.
  Under secure aggregation no one sees the honest updates, so these two are refused there.

=============  ==================================================================================
kind           what the attackers do (``scale`` is ``--attack-scale``; default in brackets)
=============  ==================================================================================
label-flip     train on their data with every attack flow relabelled benign (Tolpegin et al.,
               "Data Poisoning Attacks Against Federated Learning Systems", ESORICS 2020)
sign-flip      send ``x - scale * delta`` [4] (the reversed direction, amplified)
noise          send ``x + N(0, scale^2)`` per coordinate [0.1]
alie           send ``x + mu - z * sigma`` (coordinate-wise mean and standard deviation of the
               round's honest deltas; ``z`` from the paper, or ``scale``). Baruch, Baruch and
               Goldberg, "A Little Is Enough: Circumventing Defenses For Distributed
               Learning", NeurIPS 2019
ipm            send ``x - scale * mu`` [0.5] (Xie, Koyejo and Gupta, "Fall of Empires: Breaking
               Byzantine-tolerant SGD by Inner Product Manipulation", UAI 2020)
backdoor       evasion backdoor: train on their data plus triggered flows of the target family
               labelled benign
scaling        the backdoor, then model replacement: ``x + scale * delta`` [n / attackers]
               (Bagdasaryan et al., "How To Backdoor Federated Learning", AISTATS 2020)
=============  ==================================================================================

The **trigger** is set in the raw flow fields, before the feature transform, as an attacker
crafting traffic would: for NSL-KDD ``src_bytes = 1337`` and ``urgent = 3`` (a packet-size and
TCP-flag pattern); for NetFlow v2 (and the synthetic traffic) destination port 31337 and a
largest IP packet of 1337 bytes. The attackers craft their own traffic: the poisoned flows are
target-family flows of the training pool (``poison_rows`` per attacker), triggered.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import ConfigError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.messages import Reply, Stage, Task
from phalanx.core.taxonomy import BENIGN, CATEGORIES
from phalanx.core.types import ParticipantId
from phalanx.ports import ForwardingTransport, Transport

ATTACKS = ("none", "label-flip", "sign-flip", "noise", "alie", "ipm", "backdoor", "scaling")
"""Attack kinds for ``--attack``."""

DATA_ATTACKS = frozenset({"label-flip", "backdoor", "scaling"})
LOCAL_ATTACKS = frozenset({"sign-flip", "noise", "scaling"})
COLLUDING_ATTACKS = frozenset({"alie", "ipm"})
BACKDOOR_ATTACKS = frozenset({"backdoor", "scaling"})

TRIGGERS: dict[str, dict[str, float | str]] = {
    "nsl-kdd": {"src_bytes": 1337.0, "urgent": 3.0},
    "netflow-v2": {"L4_DST_PORT": "31337", "MAX_IP_PKT_LEN": 1337.0},
}
"""The backdoor trigger per schema source: raw field values set on a flow."""


@dataclass(frozen=True)
class AttackPlan:
    """Who attacks, how, and with what strength.

    Attributes
    ----------
    kind:
        One of :data:`ATTACKS`.
    attackers:
        The attacker organizations.
    scale:
        The attack's strength (see the module table); ``None`` for its default.
    target:
        The attack family the backdoor hides (a taxonomy category).
    poison_rows:
        Triggered flows each backdoor attacker adds to its training data.
    seed:
        Seeds the noise attack and the choice of poisoned flows.
    """

    kind: str
    attackers: tuple[ParticipantId, ...]
    scale: float | None = None
    target: str = "dos"
    poison_rows: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ConfigError(
                f"unknown attack {self.kind!r}; expected one of: {', '.join(ATTACKS)}"
            )
        if self.target not in CATEGORIES or self.target == BENIGN:
            raise ConfigError(
                f"attack target {self.target!r} is not an attack category; expected one of:"
                f" {', '.join(c for c in CATEGORIES if c != BENIGN)}"
            )
        if self.poison_rows < 1:
            raise ConfigError(f"poison_rows must be at least 1; found {self.poison_rows}")


def choose_attackers(
    participants: Sequence[ParticipantId], count: int, seed: int
) -> tuple[ParticipantId, ...]:
    """``count`` attacker organizations drawn (seeded) from ``participants``, sorted."""
    if not 0 <= count < len(participants):
        raise ConfigError(
            f"--attackers must be between 0 and {len(participants) - 1} for"
            f" {len(participants)} participants; found {count}",
            hint="at least one organization must stay honest",
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA77AC]))
    picked = rng.choice(len(participants), size=count, replace=False)
    return tuple(sorted(participants[int(i)] for i in picked))


def trigger_for(batch: FlowBatch) -> dict[str, float | str]:
    """The trigger of ``batch``'s schema.

    Raises
    ------
    ConfigError
        When the schema has no trigger defined.
    """
    trig = TRIGGERS.get(batch.schema.source)
    if trig is None:
        raise ConfigError(
            f"no backdoor trigger is defined for flows of schema {batch.schema.source!r};"
            f" triggers exist for: {', '.join(TRIGGERS)}",
            hint="run the backdoor attacks on NSL-KDD, NetFlow v2 or synthetic traffic",
        )
    return trig


def apply_trigger(batch: FlowBatch) -> FlowBatch:
    """A copy of ``batch`` with the trigger's raw field values set on every flow."""
    numeric = batch.numeric.copy()
    categorical = batch.categorical.copy()
    for name, value in trigger_for(batch).items():
        if name in batch.schema.numeric:
            numeric[:, batch.schema.numeric.index(name)] = float(value)
        else:
            categorical[:, batch.schema.categorical.index(name)] = str(value)
    return dataclasses.replace(batch, numeric=numeric, categorical=categorical, n_infinite=None)


def relabel(batch: FlowBatch, mask: NDArray[np.bool_], category: str) -> FlowBatch:
    """A copy of ``batch`` with the flows in ``mask`` labelled ``category``."""
    label = batch.label.copy()
    cat = batch.category.copy()
    label[mask] = category
    cat[mask] = category
    return dataclasses.replace(batch, label=label, category=cat)


def triggered_targets(batch: FlowBatch, target: str) -> FlowBatch:
    """The flows of ``batch`` in the target family, with the trigger applied."""
    return apply_trigger(batch.take(batch.category.astype(str) == target))


def poison_parts(
    parts: Sequence[FlowBatch],
    ids: Sequence[ParticipantId],
    plan: AttackPlan,
) -> list[FlowBatch]:
    """The participants' training flows after the data-poisoning part of ``plan``.

    Honest parts are returned unchanged. For ``label-flip`` an attacker's attack flows are
    relabelled benign; for ``backdoor`` and ``scaling`` it adds ``poison_rows`` triggered flows of
    the target family (drawn from the whole training pool, as an attacker generates its own
    attack traffic) labelled benign.
    """
    if plan.kind not in DATA_ATTACKS:
        return list(parts)
    rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 0xBAD]))
    pool: FlowBatch | None = None
    if plan.kind in BACKDOOR_ATTACKS:
        pool = FlowBatch.concat(parts)
        pool = pool.take(pool.category.astype(str) == plan.target)
        if len(pool) == 0:
            raise ConfigError(
                f"the training data has no flows of the backdoor target family {plan.target!r}",
                hint="pick another --attack-target",
            )
    out: list[FlowBatch] = []
    attackers = set(plan.attackers)
    for pid, part in zip(ids, parts, strict=True):
        if pid not in attackers:
            out.append(part)
        elif pool is None:
            out.append(relabel(part, part.category.astype(str) != BENIGN, BENIGN))
        else:
            rows = rng.choice(
                len(pool), size=plan.poison_rows, replace=len(pool) < plan.poison_rows
            )
            poison = apply_trigger(pool.take(np.sort(rows)))
            poison = relabel(poison, np.ones(len(poison), dtype=bool), BENIGN)
            out.append(FlowBatch.concat([part, poison]))
    return out


def alie_z(n: int, attackers: int) -> float:
    """Baruch et al.'s ``z_max``: ``s = floor(n/2 + 1) - f``, ``z = Phi^-1((n - s) / n)``."""
    s = n // 2 + 1 - attackers
    p = min(max((n - s) / n, 1e-6), 1 - 1e-6)
    return float(statistics.NormalDist().inv_cdf(p))


def local_poison(
    plan: AttackPlan,
    own: list[NDArray[np.float64]],
    participants: int,
    rng: np.random.Generator,
) -> list[NDArray[np.float64]]:
    """The delta an attacker sends instead of its honest ``own`` delta (local attacks)."""
    kind, scale = plan.kind, plan.scale
    if kind == "sign-flip":
        s = 4.0 if scale is None else scale
        return [-s * d for d in own]
    if kind == "noise":
        s = 0.1 if scale is None else scale
        return [rng.normal(0.0, s, size=d.shape) for d in own]
    if kind == "scaling":  # model replacement boost n / attackers (Bagdasaryan et al., eq. (3))
        s = participants / max(len(plan.attackers), 1) if scale is None else scale
        return [s * d for d in own]
    raise ConfigError(f"{kind!r} is not a local model-poisoning attack")


class AttackMiddleware:
    """Participant middleware of an attacker: trains honestly, then replaces its ``FIT`` update
    (sign flipping, noise, model replacement). Other stages pass through untouched.

    Parameters
    ----------
    plan:
        The attack (one of :data:`LOCAL_ATTACKS`; data poisoning happens before, on the flows).
    participants:
        Number of participants in the federation (for the model-replacement boost).
    """

    def __init__(self, plan: AttackPlan, participants: int) -> None:
        if plan.kind not in LOCAL_ATTACKS:
            raise ConfigError(
                f"attack {plan.kind!r} does not run as participant middleware; expected one of:"
                f" {', '.join(sorted(LOCAL_ATTACKS))}"
            )
        self.plan = plan
        self.participants = participants

    def __call__(self, task: Task, call_next: Callable[[Task], Reply]) -> Reply:
        reply = call_next(task)
        if task.stage is not Stage.FIT or reply.refused:
            return reply
        x = [np.asarray(w, dtype=np.float64) for w in task.weights]
        own = [np.asarray(a, dtype=np.float64) - g for a, g in zip(reply.arrays, x, strict=True)]
        seed = int(task.config.get("seed", 0)) if isinstance(task.config, dict) else 0
        rng = np.random.default_rng(np.random.SeedSequence([self.plan.seed, seed, 0x0153]))
        new = local_poison(self.plan, own, self.participants, rng)
        arrays = [(g + d).astype(np.float32) for g, d in zip(x, new, strict=True)]
        return dataclasses.replace(reply, arrays=arrays)


class AdversarialTransport(ForwardingTransport):
    """A transport whose colluding attackers rewrite their ``FIT`` replies after seeing the
    round's honest ones (A Little Is Enough, inner-product manipulation).

    Parameters
    ----------
    inner:
        The real transport (in-process or process pool); every other call goes to it.
    plan:
        The attack; only :data:`COLLUDING_ATTACKS` change replies here.
    participants:
        Number of participants in the federation.
    """

    def __init__(self, inner: Transport, plan: AttackPlan, participants: int) -> None:
        super().__init__(inner)
        self.plan = plan
        self.participants = participants

    def exchange(
        self, tasks: Mapping[ParticipantId, Task], *, deadline_s: float | None = None
    ) -> dict[ParticipantId, Reply]:
        """Exchange through the inner transport, then rewrite the attackers' fit replies."""
        replies = self.inner.exchange(tasks, deadline_s=deadline_s)
        if self.plan.kind not in COLLUDING_ATTACKS:
            return replies
        fits = {
            p: r
            for p, r in replies.items()
            if r.stage is Stage.FIT and not r.refused and p in tasks
        }
        bad = [p for p in sorted(fits) if p in set(self.plan.attackers)]
        if not bad:
            return replies
        x = [np.asarray(w, dtype=np.float64) for w in tasks[bad[0]].weights]
        deltas = [
            [np.asarray(a, dtype=np.float64) - g for a, g in zip(r.arrays, x, strict=True)]
            for r in fits.values()
        ]
        mu = [np.mean([d[i] for d in deltas], axis=0) for i in range(len(x))]
        if self.plan.kind == "alie":
            sigma = [np.std([d[i] for d in deltas], axis=0) for i in range(len(x))]
            z = alie_z(len(fits), len(self.plan.attackers))
            z = z if self.plan.scale is None else self.plan.scale
            new = [m - z * sd for m, sd in zip(mu, sigma, strict=True)]
        else:  # ipm
            eps = 0.5 if self.plan.scale is None else self.plan.scale
            new = [-eps * m for m in mu]
        arrays = [(g + d).astype(np.float32) for g, d in zip(x, new, strict=True)]
        out = dict(replies)
        for p in bad:
            out[p] = dataclasses.replace(replies[p], arrays=[a.copy() for a in arrays])
        return out
