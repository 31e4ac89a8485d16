"""The simulation's side of poisoning resilience: the attack plan of a run, FLTrust's root
update, attack success rate, and the suspicion summary of ``summary.json``
(:class:`~phalanx.services.quarantine.QuarantineTransport` is re-exported for the runner).

Kept beside :mod:`phalanx.sim.runner` so the runner only wires these in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.core.aggregation import FLTrust, ServerAlgorithm
from phalanx.core.aggregation.suspicion import Report
from phalanx.core.errors import ConfigError
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.taxonomy import BENIGN, CATEGORY_INDEX
from phalanx.core.types import ParticipantId, Weights
from phalanx.models.federated import Model, build_model
from phalanx.models.mlp import MLPClassifier
from phalanx.services.participant import category_indices
from phalanx.services.quarantine import QuarantineTransport
from phalanx.sim.attacks import (
    COLLUDING_ATTACKS,
    LOCAL_ATTACKS,
    TRIGGERS,
    AttackMiddleware,
    AttackPlan,
    apply_trigger,
    choose_attackers,
)
from phalanx.sim.config import SimConfig
from phalanx.sim.data import SimData, stratified_split


def attack_plan(cfg: SimConfig, ids: Sequence[ParticipantId]) -> AttackPlan:
    """The attack of ``cfg`` over the participants ``ids`` (kind ``none`` when no attack).

    Raises
    ------
    ConfigError
        For a colluding attack under secure aggregation (no one sees the honest updates there).
    """
    if cfg.attack in COLLUDING_ATTACKS and getattr(cfg, "secure_aggregation", False):
        raise ConfigError(
            f"--attack {cfg.attack} needs to see the honest updates of the round, which secure"
            " aggregation hides from everyone",
            hint="run it without --secure-aggregation, or pick a local attack",
        )
    if cfg.attack != "none" and cfg.attackers == 0:
        raise ConfigError(
            f"--attack {cfg.attack} without attackers; expected --attackers K with K >= 1"
        )
    attackers = choose_attackers(ids, cfg.attackers if cfg.attack != "none" else 0, cfg.seed)
    return AttackPlan(
        kind=cfg.attack,
        attackers=attackers,
        scale=cfg.attack_scale,
        target=cfg.attack_target,
        poison_rows=cfg.poison_rows,
        seed=cfg.seed,
    )


def attack_middleware(
    plan: AttackPlan, participant: ParticipantId, participants: int
) -> list[AttackMiddleware]:
    """The attacker middleware of ``participant`` (empty for an honest one or a data attack)."""
    if plan.kind in LOCAL_ATTACKS and participant in plan.attackers:
        return [AttackMiddleware(plan, participants)]
    return []


def bind_fltrust_root(
    algorithm: ServerAlgorithm,
    cfg: SimConfig,
    data: SimData,
    tconf: dict[str, Any],
    transform_of: Callable[[], FeatureTransform | None],
) -> int:
    """Give an FLTrust algorithm its root update: the coordinator trains ``local_epochs`` on
    ``cfg.fltrust_root`` labelled flows drawn (stratified, seeded) from the validation split.

    ``transform_of`` returns the federation's fitted feature transform (known only after the
    statistics stage). Returns the root dataset's size (0 when ``algorithm`` is not FLTrust).
    """
    if not isinstance(algorithm, FLTrust):
        return 0
    val = data.validation
    frac = cfg.fltrust_root / max(len(val), 1)
    if frac >= 1.0:
        root = val
    else:
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x7257]))
        _, held = stratified_split(val.category, frac, rng)
        root = val.take(held)
    cache: dict[str, Any] = {"transform": None, "round": 0}
    # as many optimizer steps as a typical participant takes (Cao et al. use the clients' local
    # iterations for the server too): the root set is small, so it is passed over more often
    mean_rows = float(np.mean([len(p) for p in data.parts])) if data.parts else 1.0
    epochs = cfg.local_epochs * max(1, round(mean_rows / max(len(root), 1)))

    def root_update(global_weights: Weights) -> Weights:
        transform = transform_of()
        if transform is None:
            raise ConfigError("FLTrust's root update ran before the feature transform was fit")
        if cache["transform"] is not transform:
            cache.update(transform=transform, x=transform.transform(root))
            cache["y"] = category_indices(root)
        cache["round"] += 1
        model = build_model(
            tconf["model"],
            transform.n_features,
            {"seed": cfg.seed + 7919 * cache["round"], "local_epochs": epochs},
        )
        model.set_weights(global_weights)
        model.partial_fit(cache["x"], cache["y"], epochs=epochs)
        return model.get_weights()

    algorithm.bind_root(root_update)
    return len(root)


def backdoor_test(
    cfg: SimConfig, data: SimData, transform: FeatureTransform
) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
    """Features of the target family's test flows, without and with the trigger; ``None`` when
    the data's schema has no trigger or the test set no flows of that family."""
    if data.test.schema.source not in TRIGGERS:
        return None
    clean = data.test.take(data.test.category.astype(str) == cfg.attack_target)
    if len(clean) == 0:
        return None
    return transform.transform(clean), transform.transform(apply_trigger(clean))


def backdoor_rates(
    model: Model, arrays: tuple[NDArray[np.float32], NDArray[np.float32]] | None
) -> dict[str, float | None]:
    """How the model treats the target family's test flows, with and without the trigger.

    A flow passes as benign when ``P(benign) >= 0.5`` (an attack score below the default
    threshold). ``attack_success_rate``: of the flows the model detects *without* the trigger,
    the share it lets through *with* it (the backdoor's own effect); ``triggered_benign_rate``:
    the share of all triggered flows let through (includes flows missed anyway, e.g. the
    families KDDTest+ adds that training never saw).
    """
    none: dict[str, float | None] = {"attack_success_rate": None, "triggered_benign_rate": None}
    if arrays is None or not isinstance(model, MLPClassifier):
        return none
    clean, triggered = arrays
    benign = CATEGORY_INDEX[BENIGN]
    passed_clean = np.asarray(model.predict_proba(clean))[:, benign] >= 0.5
    passed_trig = np.asarray(model.predict_proba(triggered))[:, benign] >= 0.5
    detected = ~passed_clean
    return {
        "attack_success_rate": (float(passed_trig[detected].mean()) if detected.any() else None),
        "triggered_benign_rate": float(passed_trig.mean()),
    }


def round_suspicion(record: Any, algorithm: ServerAlgorithm) -> Report:
    """The round's suspicion scores: the round record's own when the engine fills them,
    else the algorithm's report."""
    filled = getattr(record, "suspicion", None)
    if filled:
        return dict(filled)
    report = getattr(algorithm, "report", None)
    return dict(report()) if callable(report) else {}


def suspicion_summary(
    history: Sequence[dict[str, Any]], attackers: Sequence[ParticipantId]
) -> dict[str, Any]:
    """Per participant over the run: rounds flagged, mean distance z-score, mean max cosine;
    plus detection counts against the known attackers (simulation only knows them)."""
    per: dict[str, dict[str, float]] = {}
    for line in history:
        for pid, s in line.get("suspicion", {}).items():
            row = per.setdefault(pid, {"rounds": 0, "flagged": 0, "distance_z": 0.0, "cos": 0.0})
            row["rounds"] += 1
            row["flagged"] += s.get("flagged", 0.0)
            row["distance_z"] += s.get("distance_z", 0.0)
            row["cos"] += s.get("max_cosine", 0.0)
    out = {
        pid: {
            "rounds": int(r["rounds"]),
            "flagged_rounds": int(r["flagged"]),
            "mean_distance_z": r["distance_z"] / max(r["rounds"], 1),
            "mean_max_cosine": r["cos"] / max(r["rounds"], 1),
            "attacker": pid in set(attackers),
        }
        for pid, r in sorted(per.items())
    }
    bad = set(attackers)
    flags_bad = sum(v["flagged_rounds"] for p, v in out.items() if p in bad)
    flags_good = sum(v["flagged_rounds"] for p, v in out.items() if p not in bad)
    rounds_bad = sum(v["rounds"] for p, v in out.items() if p in bad)
    rounds_good = sum(v["rounds"] for p, v in out.items() if p not in bad)
    return {
        "participants": out,
        "attacker_flag_rate": flags_bad / rounds_bad if rounds_bad else None,
        "honest_flag_rate": flags_good / rounds_good if rounds_good else None,
    }


__all__ = [
    "QuarantineTransport",
    "attack_middleware",
    "attack_plan",
    "backdoor_rates",
    "backdoor_test",
    "bind_fltrust_root",
    "round_suspicion",
    "suspicion_summary",
]
