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
from numpy.typing import NDArray

from phalanx.adapters.accounting import RdpAccountant
from phalanx.adapters.crypto import CryptographyBackend, simulation_identities
from phalanx.adapters.inproc import InProcessTransport
from phalanx.adapters.pool import ProcessPoolTransport
from phalanx.adapters.store.ledger import SqliteLedger
from phalanx.core.aggregation import ServerAlgorithm, make_algorithm
from phalanx.core.aggregation.suspicion import Quarantine
from phalanx.core.errors import ConfigError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.stats import compute_stats
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.metrics import confusion_matrix, evaluate, threshold_at_fpr
from phalanx.core.privacy import AdaptiveClip, Budget, DistributedNoise, DPFedAvg, DPTaskSpec
from phalanx.core.rounds import Federation, FederationPlan, RoundRecord
from phalanx.core.secagg.params import SecAggSettings
from phalanx.core.taxonomy import BENIGN, CATEGORIES, CATEGORY_INDEX, FALLBACK
from phalanx.core.types import ParticipantId, Weights
from phalanx.models.federated import Model, build_model
from phalanx.models.mlp import MLPClassifier
from phalanx.ports import Transport
from phalanx.services import privacy as dp
from phalanx.services.coordinator import Coordinator
from phalanx.services.participant import Middleware, ModelCache, Participant, category_indices
from phalanx.services.secure import SecureAggregation
from phalanx.sim import robustness
from phalanx.sim.attacks import COLLUDING_ATTACKS, AdversarialTransport, poison_parts
from phalanx.sim.config import SimConfig
from phalanx.sim.data import SimData, prepare

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


def make_model(spec: dict[str, Any], n_features: int, seed: int) -> Model:
    """The model of ``spec`` (MLP classifier or autoencoder detector), initialized from ``seed``."""
    return build_model(spec, n_features, {"seed": seed})


def class_probabilities(
    model: Model, x: NDArray[np.float32], benign_x: NDArray[np.float32], target_fpr: float
) -> NDArray[np.float64]:
    """Class probabilities over the taxonomy for scoring.

    An autoencoder is a two-class detector: its anomaly score ``s`` and the threshold ``t``
    calibrated at ``target_fpr`` on benign validation flows give P(attack) = s / (s + t), put on
    the fallback category ``other``; so P(attack) > 0.5 exactly when the score exceeds ``t``.
    """
    if isinstance(model, MLPClassifier):
        return np.asarray(model.predict_proba(x), dtype=np.float64)
    threshold = max(float(threshold_at_fpr(model.score(benign_x), target_fpr)), 1e-12)
    s = np.asarray(model.score(x), dtype=np.float64)
    p_attack = s / (s + threshold)
    proba = np.zeros((len(x), len(CATEGORIES)))
    proba[:, CATEGORY_INDEX[BENIGN]] = 1.0 - p_attack
    proba[:, CATEGORY_INDEX[FALLBACK]] = p_attack
    return proba


def scored_labels(model_kind: str, y: NDArray[np.int64]) -> NDArray[np.int64]:
    """True classes as a model of ``model_kind`` is scored: attacks become ``other`` for the
    two-class autoencoder."""
    if model_kind != "autoencoder":
        return y
    return np.where(y == CATEGORY_INDEX[BENIGN], y, CATEGORY_INDEX[FALLBACK])


def train_config(cfg: SimConfig) -> dict[str, Any]:
    """The JSON-ready training parameters sent with every task."""
    return {
        "model": cfg.model.model_dump(mode="json"),
        "local_epochs": cfg.local_epochs,
        **dp.task_section(dp_spec(cfg)),
    }


def dp_spec(cfg: SimConfig) -> DPTaskSpec | None:
    """The DP parameters of the run's training tasks (``None`` without ``--dp``)."""
    return dp.plan_dp(
        cfg.dp,
        accountant=RdpAccountant(),
        clip=cfg.clip,
        noise_multiplier=cfg.noise_multiplier,
        epsilon=cfg.epsilon,
        delta=cfg.delta,
        rounds=cfg.rounds,
        fraction=cfg.fraction,
        min_participants=dp_shares(cfg),
        federation="simulation",
        class_balance=cfg.dp_class_balance,
    )


def dp_shares(cfg: SimConfig) -> int:
    """Noise shares in one secure sum (client-distributed): the smallest bucket's members."""
    expected = max(1, math.ceil(cfg.fraction * cfg.participants))
    return min(expected, cfg.secagg_bucket_size or expected)


def check_dp_composition(cfg: SimConfig) -> None:
    """Refuse DP modes that do not compose with the secure-aggregation setting."""
    if cfg.dp == "client-central" and cfg.secure_aggregation:
        raise ConfigError(
            "--dp client-central adds noise to individual updates the coordinator sees, but"
            " --secure-aggregation hides them",
            hint="use --dp client-distributed with secure aggregation",
        )
    if cfg.dp == "client-distributed":
        if not cfg.secure_aggregation:
            raise ConfigError(
                "--dp client-distributed needs --secure-aggregation (participants add noise"
                " shares to the masked sum)"
            )
        spec = dp_spec(cfg)
        z = spec.noise_multiplier if spec is not None else None
        headroom = cfg.clip + 10.0 * (z or 0.0) * math.hypot(cfg.clip, 1.0) / math.sqrt(
            dp_shares(cfg)
        )
        if headroom > cfg.secagg_clip:
            raise ConfigError(
                f"--secagg-clip {cfg.secagg_clip:g} leaves no room for the DP noise shares:"
                f" clip {cfg.clip:g} plus 10 noise standard deviations needs {headroom:.3g}",
                hint="raise --secagg-clip (the fixed-point range of secure aggregation)",
            )


def dp_algorithm(cfg: SimConfig, algorithm: ServerAlgorithm, n: int) -> ServerAlgorithm:
    """``algorithm`` wrapped in central DP-FedAvg for ``--dp client-central``."""
    spec = dp_spec(cfg)
    if spec is None or spec.mode != "client-central" or spec.noise_multiplier is None:
        return algorithm
    expected = max(1, min(n, math.ceil(cfg.fraction * n)))
    # sigma_b = m / 20 (Andrew et al.), at least 1.5 z so the count takes at most ~6 % more
    # noise from the update (Theorem 1: z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2)
    sigma_b = max(expected / 20, 1.5 * spec.noise_multiplier)
    adaptive = AdaptiveClip(cfg.clip, count_noise_std=sigma_b) if cfg.adaptive_clip else None
    return DPFedAvg(
        algorithm,
        clip_norm=cfg.clip,
        noise_multiplier=spec.noise_multiplier,
        expected_participants=expected,
        adaptive=adaptive,
    )


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
    algorithm = make_algorithm(cfg.algorithm, **algorithm_params(cfg))
    root_rows = robustness.bind_fltrust_root(algorithm, cfg, data, tconf, lambda: fed.transform)
    fed = Federation(
        plan,
        schema,
        dp_algorithm(cfg, algorithm, len(ids)),
        init_weights,
        crypto=secure[0],
    )
    history: list[dict[str, Any]] = []
    test_cache: dict[str, Any] = {}
    last = {"t": time.perf_counter(), "down": 0, "up": 0}

    def on_round(record: RoundRecord) -> None:
        now = time.perf_counter()
        transform = fed.transform
        assert transform is not None  # rounds only complete after the statistics stage
        if "x" not in test_cache:
            test_cache.update(scoring_arrays(cfg, transform, data))
            test_cache["triggered"] = robustness.backdoor_test(cfg, data, transform)
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
    model = make_model(tconf["model"], transform.n_features, cfg.seed)
    model.set_weights(fed.weights)
    proba = class_probabilities(model, test_cache["x"], test_cache["benign"], cfg.target_fpr)
    federated = evaluate(test_cache["y"], proba, CATEGORIES)
    federated["confusion"] = confusion_matrix(
        test_cache["y"], proba.argmax(axis=1), len(CATEGORIES)
    ).tolist()
    thresholds = calibrate(model, transform, data.validation, cfg.target_fpr)
    federated["binary_calibrated"] = calibrated_binary(cfg, model, test_cache, thresholds)
    summary: dict[str, Any] = {
        "federated": federated,
        "rounds": cfg.rounds,
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


def privacy_summary(
    cfg: SimConfig, data: SimData, ledgers: dict[ParticipantId, SqliteLedger]
) -> dict[str, Any] | None:
    """The run's DP guarantee and what each participant's own ledger charged."""
    spec = dp_spec(cfg)
    if spec is None:
        return None
    accountant = RdpAccountant()
    spent = dp.ledger_summary(dict(ledgers), accountant, cfg.delta)
    for ledger in ledgers.values():
        ledger.close()
    if spec.mode != "client-central":
        # the weakest guarantee: the participant whose ledger charged the most
        worst = spent["max_epsilon_spent"]
        z = [p["noise_multiplier"] for p in spent["participants"].values() if p["noise_multiplier"]]
        guarantee: dict[str, Any] = {
            "mechanism": {
                "record": "DP-SGD (Abadi et al. 2016), Poisson sampling, Gaussian noise",
                "client-distributed": "distributed discrete Gaussian under secure aggregation"
                " (Kairouz et al. 2021)",
            }[spec.mode],
            "mode": spec.mode,
            "unit": "record" if spec.mode == "record" else "participant (all its data)",
            "epsilon": worst,
            "delta": cfg.delta,
            "rounds": cfg.rounds,
            "sampling_rate": None,
            "noise_multiplier": (min(z), max(z)) if z else None,
            "clip": cfg.clip,
            "accountant": accountant.name,
        }
    else:
        guarantee = dp.federation_guarantee(
            accountant, spec, rounds=cfg.rounds, sampling_rate=cfg.fraction
        )
    guarantee["participant_budget"] = cfg.participant_epsilon or cfg.epsilon
    guarantee["adaptive_clip"] = cfg.adaptive_clip
    return {**guarantee, **spent}


def scoring_arrays(cfg: SimConfig, transform: FeatureTransform, data: SimData) -> dict[str, Any]:
    """Test features ``x``, scored classes ``y`` and benign validation features ``benign``."""
    return {
        "x": transform.transform(data.test),
        "y": scored_labels(cfg.model.kind, category_indices(data.test)),
        "benign": transform.transform(data.validation.take(data.validation.category == BENIGN)),
    }


def score(
    cfg: SimConfig, model: Model, arrays: dict[str, Any], *, confusion: bool = False
) -> dict[str, Any]:
    """The summary metrics of ``model`` on the test arrays of :func:`scoring_arrays`."""
    proba = class_probabilities(model, arrays["x"], arrays["benign"], cfg.target_fpr)
    result = evaluate(arrays["y"], proba, CATEGORIES)
    if confusion:
        result["confusion"] = confusion_matrix(
            arrays["y"], proba.argmax(axis=1), len(CATEGORIES)
        ).tolist()
    return result


def calibrate(
    model: Model, transform: FeatureTransform, validation: FlowBatch, target_fpr: float
) -> dict[str, float]:
    """Attack-score thresholds at the target false-positive rates on benign validation flows.

    For the MLP the attack score is 1 - P(benign) and ``default`` is 0.5; for the autoencoder
    it is the reconstruction error and ``default`` is the threshold at ``target_fpr``.
    """
    benign = validation.take(validation.category == BENIGN)
    if len(benign) == 0:
        return {"default": 0.5}
    scores = model.attack_score(transform.transform(benign))
    out = {"default": 0.5}
    if not isinstance(model, MLPClassifier):
        out["default"] = float(threshold_at_fpr(scores, target_fpr))
    for fpr in sorted({target_fpr, 0.01, 0.001}):
        out[f"fpr={fpr:g}"] = float(threshold_at_fpr(scores, fpr))
    return out


def calibrated_binary(
    cfg: SimConfig, model: Model, arrays: dict[str, Any], thresholds: dict[str, float]
) -> dict[str, Any]:
    """Binary metrics on the test arrays at the threshold calibrated at ``cfg.target_fpr``.

    The MLP's ``binary`` metrics use the fixed cut ``1 - P(benign) > 0.5``; this is the other
    operating point a deployment can choose (``phalanx detect --fpr``): the threshold that
    flags ``target_fpr`` of the benign validation flows (never the test flows). For the
    autoencoder the two coincide.
    """
    key = f"fpr={cfg.target_fpr:g}"
    threshold = thresholds.get(key, 0.5) if isinstance(model, MLPClassifier) else 0.5
    proba = class_probabilities(model, arrays["x"], arrays["benign"], cfg.target_fpr)
    rates = evaluate(arrays["y"], proba, CATEGORIES, threshold)["binary"]
    return {
        "target_fpr": cfg.target_fpr,
        "threshold": threshold,
        **{k: rates[k] for k in ("accuracy", "detection_rate", "fpr")},
    }


def centralized_baseline(
    cfg: SimConfig, data: SimData, transform: FeatureTransform, test_cache: dict[str, Any]
) -> dict[str, Any]:
    """One model on the pooled training data, ``rounds x local_epochs`` epochs."""
    pooled = FlowBatch.concat(data.parts)
    x = transform.transform(pooled)
    y = category_indices(pooled)
    model = _fit(cfg, x, y, seed=cfg.seed)
    proba = class_probabilities(model, test_cache["x"], test_cache["benign"], cfg.target_fpr)
    result = evaluate(test_cache["y"], proba, CATEGORIES)
    thresholds = calibrate(model, transform, data.validation, cfg.target_fpr)
    result["binary_calibrated"] = calibrated_binary(cfg, model, test_cache, thresholds)
    return result


def local_only_baseline(cfg: SimConfig, data: SimData) -> dict[str, Any]:
    """One model per participant on its own data and its own feature transform."""
    results = []
    for i, part in enumerate(data.parts):
        transform = FeatureTransform.fit(compute_stats(part))
        model = _fit(cfg, transform.transform(part), category_indices(part), seed=cfg.seed + i + 1)
        x_test = transform.transform(data.test)
        benign = transform.transform(data.validation.take(data.validation.category == BENIGN))
        proba = class_probabilities(model, x_test, benign, cfg.target_fpr)
        y_test = scored_labels(cfg.model.kind, category_indices(data.test))
        results.append(evaluate(y_test, proba, CATEGORIES))
        arrays = {"x": x_test, "y": y_test, "benign": benign}
        thresholds = calibrate(model, transform, data.validation, cfg.target_fpr)
        results[-1]["binary_calibrated"] = calibrated_binary(cfg, model, arrays, thresholds)
    return {
        "mean": reduce_nested(results, np.mean),
        "min": reduce_nested(results, np.min),
        "participants": results,
    }


def _fit(cfg: SimConfig, x: NDArray[np.float32], y: NDArray[np.int64], seed: int) -> Model:
    spec = cfg.model.model_dump(mode="json")
    model = make_model(spec, x.shape[1], seed)
    epochs = cfg.rounds * cfg.local_epochs
    model.partial_fit(x, y, epochs=epochs)  # the autoencoder keeps only the benign rows
    return model


def reduce_nested(items: list[dict[str, Any]], fn: Callable[[Any], Any]) -> dict[str, Any]:
    """Element-wise reduction of equally shaped nested metric dicts (None/NaN skipped)."""
    out: dict[str, Any] = {}
    for key, value in items[0].items():
        if isinstance(value, dict):
            out[key] = reduce_nested([it[key] for it in items], fn)
        elif isinstance(value, int | float) or value is None:
            vals = [it[key] for it in items if it[key] is not None and np.isfinite(it[key])]
            out[key] = float(fn(vals)) if vals else None
    return out


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
            "rounds": cfg.rounds,
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
