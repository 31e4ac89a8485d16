"""``phalanx simulate``: a whole federation in one machine, with honest baselines.

The coordinator and participants are the production classes; only the transport differs (a
process pool so both cores train, or in-process). The federated model is scored on the test set
after every round; with baselines, a centralized model (pooled training data) and one local-only
model per participant are trained for the same number of epochs over the data.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.adapters.inproc import InProcessTransport
from phalanx.adapters.pool import ProcessPoolTransport
from phalanx.core.aggregation import make_algorithm
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.stats import compute_stats
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.metrics import confusion_matrix, evaluate, threshold_at_fpr
from phalanx.core.rounds import Federation, FederationPlan, RoundRecord
from phalanx.core.taxonomy import BENIGN, CATEGORIES, CATEGORY_INDEX, FALLBACK
from phalanx.core.types import ParticipantId, Weights
from phalanx.models.federated import Model, build_model
from phalanx.models.mlp import MLPClassifier
from phalanx.ports import Transport
from phalanx.services.coordinator import Coordinator
from phalanx.services.participant import ModelCache, Participant, category_indices
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
    return params


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
    return {"model": cfg.model.model_dump(mode="json"), "local_epochs": cfg.local_epochs}


def run_simulation(
    cfg: SimConfig, *, progress: Progress | None = None, data: SimData | None = None
) -> SimulationResult:
    """Run the federation of ``cfg`` (and its baselines); nothing is written to disk here."""
    t_start = time.perf_counter()
    data = data if data is not None else prepare(cfg)
    ids = [ParticipantId(f"org-{i + 1:02d}") for i in range(len(data.parts))]
    models = ModelCache()  # one per process: a worker reuses one network for its participants
    participants = {
        pid: Participant(pid, part, models=models)
        for pid, part in zip(ids, data.parts, strict=True)
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
    )
    fed = Federation(
        plan, schema, make_algorithm(cfg.algorithm, **algorithm_params(cfg)), init_weights
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
        model = make_model(tconf["model"], transform.n_features, cfg.seed)
        model.set_weights(fed.weights)
        proba = class_probabilities(model, test_cache["x"], test_cache["benign"], cfg.target_fpr)
        result = evaluate(test_cache["y"], proba, CATEGORIES)
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
    if cfg.baselines:
        if progress is not None:
            progress({"phase": "baselines"})
        summary["centralized"] = centralized_baseline(cfg, data, transform, test_cache)
        summary["local_only"] = local_only_baseline(cfg, data)
    summary["wall_s"] = time.perf_counter() - t_start
    return SimulationResult(cfg, summary, history, fed.weights, transform, thresholds, data)


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


def centralized_baseline(
    cfg: SimConfig, data: SimData, transform: FeatureTransform, test_cache: dict[str, Any]
) -> dict[str, Any]:
    """One model on the pooled training data, ``rounds x local_epochs`` epochs."""
    pooled = FlowBatch.concat(data.parts)
    x = transform.transform(pooled)
    y = category_indices(pooled)
    model = _fit(cfg, x, y, seed=cfg.seed)
    proba = class_probabilities(model, test_cache["x"], test_cache["benign"], cfg.target_fpr)
    return evaluate(test_cache["y"], proba, CATEGORIES)


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
            "dp_epsilon": None,
        },
    }
    save_model(out / "model", model, metadata)
    write_report(out, result.summary, result.history, result.data.category_matrix)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
