"""``phalanx simulate``: a whole federation in one machine, with honest baselines.

The coordinator and participants are the production classes; only the transport differs (a
process pool so both cores train, or in-process). The federated model is scored on the test set
after every round; with baselines, a centralized model (pooled training data) and one local-only
model per participant are trained for the same number of epochs over the data.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phalanx.adapters.accounting import RdpAccountant
from phalanx.adapters.crypto import CryptographyBackend, simulation_identities
from phalanx.adapters.inproc import InProcessTransport
from phalanx.adapters.pool import ProcessPoolTransport
from phalanx.adapters.store.ledger import SqliteLedger
from phalanx.core.aggregation import make_algorithm
from phalanx.core.aggregation.suspicion import Quarantine
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.metrics import confusion_matrix, evaluate
from phalanx.core.privacy import Budget, DistributedNoise
from phalanx.core.rounds import Federation, FederationPlan, RoundRecord
from phalanx.core.secagg.params import SecAggSettings
from phalanx.core.taxonomy import BENIGN, CATEGORIES
from phalanx.core.types import ParticipantId, Weights
from phalanx.models.federated import build_model, server_params
from phalanx.ports import Transport
from phalanx.services import privacy as dp
from phalanx.services.coordinator import Coordinator
from phalanx.services.participant import Middleware, ModelCache, Participant
from phalanx.services.privacy_plan import task_section
from phalanx.services.secure import SecureAggregation
from phalanx.sim import robustness
from phalanx.sim.attacks import COLLUDING_ATTACKS, AdversarialTransport, poison_parts
from phalanx.sim.baselines import centralized_baseline, local_only_baseline
from phalanx.sim.config import SimConfig
from phalanx.sim.data import SimData, prepare
from phalanx.sim.privacy import check_dp_composition, dp_algorithm, dp_spec, privacy_summary
from phalanx.sim.scoring import (
    calibrate,
    calibrated_binary,
    class_probabilities,
    make_model,
    part_metrics,
    restore_thresholds,
    scoring_arrays,
)

log = logging.getLogger("phalanx.sim")

Progress = Callable[[dict[str, Any]], None]


@dataclass
class SimulationResult:
    """Everything a simulation produced."""

    config: SimConfig
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    weights: Weights
    transform: FeatureTransform
    thresholds: dict[str, float]
    data: SimData
    extra: dict[str, Any] = field(default_factory=dict)


def algorithm_params(cfg: SimConfig) -> dict[str, float]:
    """The algorithm parameters of ``cfg`` that apply to its algorithm."""
    params: dict[str, float] = {}
    if cfg.algorithm == "fedprox":
        params["proximal_mu"] = cfg.proximal_mu
    if cfg.algorithm == "fedavgm":
        params["server_momentum"] = cfg.server_momentum
    if cfg.server_lr is not None and cfg.algorithm in ("fedavgm", "fedadam", "fedyogi", "scaffold"):
        params["server_lr"] = cfg.server_lr
    params.update(cfg.algorithm_options)
    return params


def secure_setup(
    cfg: SimConfig, ids: list[ParticipantId]
) -> tuple[CryptographyBackend | None, dict[ParticipantId, list[Middleware]]]:
    """The crypto backend and each participant's secure-aggregation middleware (if enabled).

    Simulated identities are throwaway in-memory Ed25519 keys with a directory of their public
    keys (a deployment signs with each organization's mTLS certificate key instead). The secure
    middleware is outermost, so privacy middleware runs inside it on the plain update.
    """
    if not cfg.secure_aggregation:
        return None, {}
    crypto = CryptographyBackend()
    signers, verifier = simulation_identities(ids)
    return crypto, {p: [SecureAggregation(p, crypto, signers[p], verifier)] for p in ids}


def train_config(cfg: SimConfig) -> dict[str, Any]:
    """The JSON-ready training parameters sent with every task."""
    return {
        "model": cfg.model.model_dump(mode="json"),
        "local_epochs": cfg.local_epochs,
        **({"restricted_softmax": cfg.restricted_softmax} if cfg.restricted_softmax != 1.0 else {}),
        **task_section(dp_spec(cfg)),
    }


def run_simulation(
    cfg: SimConfig, *, progress: Progress | None = None, data: SimData | None = None
) -> SimulationResult:
    """Run the federation of ``cfg`` (and its baselines); nothing is written to disk here."""
    t_start = time.perf_counter()
    data = data if data is not None else prepare(cfg)
    ids = [ParticipantId(f"org-{i + 1:02d}") for i in range(len(data.parts))]
    attack = robustness.attack_plan(cfg, ids)
    secure = secure_setup(cfg, ids)
    models = ModelCache()  # one per process: a worker reuses one network for its participants
    # each participant's own privacy ledger (DP runs only), read back for the report
    ledger_dir = (
        tempfile.TemporaryDirectory(prefix="phalanx-ledgers-") if cfg.dp != "none" else None
    )
    ledgers = (
        {p: SqliteLedger(Path(ledger_dir.name) / f"{p}.sqlite") for p in ids} if ledger_dir else {}
    )
    budget = Budget(cfg.participant_epsilon or cfg.epsilon or math.inf, cfg.delta)

    check_dp_composition(cfg)

    def privacy(pid: ParticipantId, part: FlowBatch) -> list[Any]:
        if cfg.dp == "none":
            return []
        benign = None if not len(part) else part.category.astype(str) == BENIGN
        rows = dp.training_rows(benign, len(part), cfg.model.kind)
        noise = None
        if cfg.dp == "client-distributed":  # the guard arms the noise secure aggregation adds
            noise = DistributedNoise()
            for mw in secure[1][pid]:
                if isinstance(mw, SecureAggregation):
                    mw.integer_noise = noise
        guard = dp.PrivacyGuard(
            pid,
            ledger=ledgers[pid],
            accountant=RdpAccountant(),
            budget=budget,
            num_examples=rows,
            distributed=noise,
        )
        return [guard]

    participants = {
        pid: Participant(
            pid,
            part,
            models=models,
            middleware=[
                *secure[1].get(pid, []),
                *robustness.attack_middleware(attack, pid, len(ids)),
                *privacy(pid, part),
            ],
        )
        for pid, part in zip(ids, poison_parts(data.parts, ids, attack), strict=True)
    }
    transport: Transport
    if cfg.workers > 1 and len(ids) > 1:
        transport = ProcessPoolTransport(
            {p: h.handle for p, h in participants.items()},
            workers=cfg.workers,
            worker_init=_one_thread,
        )
    else:
        transport = InProcessTransport({p: h.handle for p, h in participants.items()})
    if attack.kind in COLLUDING_ATTACKS:
        transport = AdversarialTransport(transport, attack, len(ids))
    quarantine = Quarantine(cfg.quarantine_after)
    if cfg.quarantine_after:
        transport = robustness.QuarantineTransport(transport, quarantine)
    schema = data.parts[0].schema
    tconf = train_config(cfg)

    def init_weights(n_features: int) -> Weights:
        return build_model(tconf["model"], n_features, {"seed": cfg.seed}).get_weights()

    plan = FederationPlan(
        rounds=cfg.rounds,
        fraction=cfg.fraction,
        min_participants=min(cfg.min_participants, len(ids)),
        seed=cfg.seed,
        train_config=tconf,
        secure_aggregation=cfg.secure_aggregation,
        secagg=SecAggSettings(
            bucket_size=cfg.secagg_bucket_size,
            clip_norm=cfg.secagg_clip,
            # buckets of 2 only when asked for: the coordinator then learns pair sums
            min_members=min(3, max(2, len(ids)), cfg.secagg_bucket_size or 3),
            # distributed DP: every member weighs 1, so the noisy sum of weights is m + noise
            weight_cap=1 if cfg.dp == "client-distributed" else SecAggSettings.weight_cap,
        ),
    )
    algorithm = make_algorithm(
        cfg.algorithm,
        **server_params(
            cfg.model.model_dump(mode="json"),
            cfg.algorithm,
            algorithm_params(cfg),
            classwise_head=cfg.classwise_head,
        ),
    )
    root_rows = robustness.bind_fltrust_root(algorithm, cfg, data, tconf, lambda: fed.transform)
    fed = Federation(
        plan,
        schema,
        dp_algorithm(cfg, algorithm, len(ids)),
        init_weights,
        crypto=secure[0],
        roster=ids,
    )
    history: list[dict[str, Any]] = []
    test_cache: dict[str, Any] = {}

    def scoring_cache(transform: Any) -> None:
        """Build the test arrays once the transform is known: at the first round, or at the end
        of a federation that stopped before any round completed."""
        if "x" not in test_cache:
            test_cache.update(scoring_arrays(cfg, transform, data))
            test_cache["triggered"] = robustness.backdoor_test(cfg, data, transform)

    last = {"t": time.perf_counter(), "down": 0, "up": 0}

    def on_round(record: RoundRecord) -> None:
        now = time.perf_counter()
        transform = fed.transform
        assert transform is not None  # rounds only complete after the statistics stage
        scoring_cache(transform)
        model = make_model(tconf["model"], transform.n_features, cfg.seed)
        model.set_weights(fed.weights)
        proba = class_probabilities(model, test_cache["x"], test_cache["benign"], cfg.target_fpr)
        result = evaluate(test_cache["y"], proba, CATEGORIES)
        suspicion = robustness.round_suspicion(record, algorithm)
        quarantined = quarantine.observe(record.round, suspicion)
        line = {
            "round": record.round,
            "participants": len(record.participants),
            "examples": record.num_examples,
            "train": record.train_metrics,
            "test": {
                "accuracy": result["accuracy"],
                "macro_f1": result["macro_f1"],
                "binary": result["binary"],
            },
            "bytes_down": transport.bytes_down - last["down"],
            "bytes_up": transport.bytes_up - last["up"],
            "seconds": now - last["t"],
            "left_out": dict(record.refused),
            "backdoor": robustness.backdoor_rates(model, test_cache["triggered"]),
            "suspicion": suspicion,
            "quarantined": list(quarantined),
        }
        history.append(line)
        if progress is not None:
            progress(line)
        last.update(t=time.perf_counter(), down=transport.bytes_down, up=transport.bytes_up)

    coordinator = Coordinator(fed, transport, on_round=on_round)
    try:
        t_fed = time.perf_counter()
        coordinator.run()
        fed_seconds = time.perf_counter() - t_fed
    finally:
        transport.close()
    transform = fed.transform
    assert transform is not None
    scoring_cache(transform)
    model = make_model(tconf["model"], transform.n_features, cfg.seed)
    model.set_weights(fed.weights)
    proba = class_probabilities(model, test_cache["x"], test_cache["benign"], cfg.target_fpr)
    federated = evaluate(test_cache["y"], proba, CATEGORIES)
    federated["confusion"] = confusion_matrix(
        test_cache["y"], proba.argmax(axis=1), len(CATEGORIES)
    ).tolist()
    thresholds = calibrate(model, transform, data.validation, cfg.target_fpr)
    federated["binary_calibrated"] = calibrated_binary(cfg, model, test_cache, thresholds)
    federated.update(part_metrics(model, test_cache))  # the hybrid's parts, alone
    summary: dict[str, Any] = {
        "federated": federated,
        "rounds": fed.round,
        "rounds_planned": cfg.rounds,
        "stopped": fed.stopped,
        "participants": len(ids),
        "bytes_up": transport.bytes_up,
        "bytes_down": transport.bytes_down,
        "federation_s": fed_seconds,
        "algorithm": cfg.algorithm,
        "partition": cfg.partition,
        "data": data.source,
        "test_rows": len(data.test),
        "train_rows": int(sum(len(p) for p in data.parts)),
        "schema": {"source": schema.source, "version": schema.version, "hash": schema.hash()},
        "thresholds": thresholds,
        "attack": {
            "kind": attack.kind,
            "attackers": list(attack.attackers),
            "scale": attack.scale,
            "target": attack.target,
            **robustness.backdoor_rates(model, test_cache["triggered"]),
        },
        "suspicion": robustness.suspicion_summary(history, attack.attackers),
        "quarantine": {"after": cfg.quarantine_after, "excluded": dict(quarantine.excluded)},
        "fltrust_root_rows": root_rows,
        "stages": [
            {
                "round": t.round,
                "stage": t.stage.value,
                "seconds": t.seconds,
                "bytes_down": t.bytes_down,
                "bytes_up": t.bytes_up,
                "replies": t.replies,
            }
            for t in coordinator.timings
        ],
    }
    summary["privacy"] = privacy_summary(cfg, data, ledgers)
    if ledger_dir is not None:
        ledger_dir.cleanup()
    if cfg.baselines:
        if progress is not None:
            progress({"phase": "baselines"})
        summary["centralized"] = centralized_baseline(cfg, data, transform, test_cache)
        summary["local_only"] = local_only_baseline(cfg, data)
    summary["wall_s"] = time.perf_counter() - t_start
    return SimulationResult(cfg, summary, history, fed.weights, transform, thresholds, data)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def write_run(result: SimulationResult, out: Path) -> None:
    """Write the run directory: config, metrics, summary, model bundle and report."""
    from phalanx.models.bundle import save_model
    from phalanx.sim.report import write_report

    out.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    (out / "config.json").write_text(cfg.model_dump_json(indent=2) + "\n")
    with (out / "metrics.jsonl").open("w") as fh:
        for line in result.history:
            fh.write(json.dumps(line, default=_json_default) + "\n")
    (out / "summary.json").write_text(
        json.dumps(result.summary, indent=2, default=_json_default) + "\n"
    )
    schema = result.data.parts[0].schema
    model = make_model(cfg.model.model_dump(mode="json"), result.transform.n_features, cfg.seed)
    model.set_weights(result.weights)
    restore_thresholds(model, result.thresholds)  # the hybrid's anomaly threshold t_a
    metadata = {
        "model": cfg.model.model_dump(mode="json"),
        "n_features": result.transform.n_features,
        "schema": schema.to_dict(),
        "schema_hash": schema.hash(),
        "transform": result.transform.to_dict(),
        "taxonomy": list(CATEGORIES),
        "thresholds": result.thresholds,
        "provenance": {
            "federation": "simulation",
            "algorithm": cfg.algorithm,
            "rounds": result.summary["rounds"],
            "participants": result.summary["participants"],
            "seed": cfg.seed,
            "dp_epsilon": (result.summary.get("privacy") or {}).get("epsilon"),
            "privacy": _bundle_privacy(result.summary.get("privacy")),
        },
    }
    save_model(out / "model", model, metadata)
    write_report(out, result.summary, result.history, result.data.category_matrix)


def _bundle_privacy(privacy: dict[str, Any] | None) -> dict[str, Any] | None:
    """The DP guarantee as the model bundle states it (no per-participant detail)."""
    if privacy is None:
        return None
    return {k: v for k, v in privacy.items() if k != "participants"}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
