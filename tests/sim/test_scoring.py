"""Scoring of simulated models, hybrid detector included: the federation, baselines, bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from phalanx.cli.main import app
from phalanx.core.taxonomy import BENIGN, CATEGORY_INDEX
from phalanx.models.bundle import load_model
from phalanx.models.hybrid import HybridDetector
from phalanx.sim.config import ModelSpec, SimConfig
from phalanx.sim.runner import SimulationResult, run_simulation, write_run
from phalanx.sim.scoring import make_model, scoring_arrays

torch.set_num_threads(1)


def _cfg(**kw: object) -> SimConfig:
    base: dict[str, object] = {
        "participants": 3,
        "rounds": 2,
        "synthetic_flows": 600,
        "workers": 1,
        "seed": 5,
        "model": ModelSpec(kind="hybrid", hidden=(32,), ae_hidden=(16, 4), anomaly_fpr=0.05),
    }
    base.update(kw)
    return SimConfig.model_validate(base)


@pytest.fixture(scope="module")
def hybrid_run() -> SimulationResult:
    return run_simulation(_cfg(baselines=True))


def test_hybrid_federation_is_scored_by_its_or_rule(hybrid_run: SimulationResult) -> None:
    cfg, res = hybrid_run.config, hybrid_run
    thresholds = res.thresholds
    assert thresholds["default"] == 1.0 and thresholds["classifier"] == 0.5
    assert thresholds["anomaly"] > 0.0 and thresholds["anomaly_fpr"] == 0.05
    model = make_model(cfg.model.model_dump(mode="json"), res.transform.n_features, cfg.seed)
    assert isinstance(model, HybridDetector)
    model.set_weights(res.weights).set_anomaly_threshold(thresholds["anomaly"])
    arrays = scoring_arrays(cfg, res.transform, res.data)
    attack = arrays["y"] != CATEGORY_INDEX[BENIGN]
    flagged = (model.classifier_score(arrays["x"]) > 0.5) | (
        model.anomaly_score(arrays["x"]) > thresholds["anomaly"]
    )
    fed = res.summary["federated"]
    assert fed["binary"]["accuracy"] == pytest.approx(float((flagged == attack).mean()))
    assert fed["binary"]["detection_rate"] == pytest.approx(float(flagged[attack].mean()))
    # the anomaly part flags about anomaly_fpr of the benign validation flows it was set on
    val = res.data.validation
    benign_val = res.transform.transform(val.take(val.category == BENIGN))
    assert len(benign_val) > 0
    assert np.mean(model.anomaly_score(benign_val) > thresholds["anomaly"]) <= 0.05
    parts = fed["parts"]
    assert set(parts) == {"classifier", "anomaly"}
    assert parts["anomaly"]["binary"]["detection_rate"] <= fed["binary"]["detection_rate"]
    assert parts["classifier"]["binary"]["detection_rate"] <= fed["binary"]["detection_rate"]


def test_hybrid_baselines_use_the_hybrid_too(hybrid_run: SimulationResult) -> None:
    s = hybrid_run.summary
    assert "parts" in s["centralized"] and "parts" in s["local_only"]["mean"]
    assert s["centralized"]["binary_calibrated"]["threshold"] > 0.0


def test_hybrid_bundle_holds_both_thresholds(hybrid_run: SimulationResult, tmp_path: Path) -> None:
    write_run(hybrid_run, tmp_path)
    model, meta = load_model(tmp_path / "model")
    assert isinstance(model, HybridDetector)
    assert model.threshold_ == hybrid_run.thresholds["anomaly"]
    assert meta["thresholds"]["anomaly"] == model.threshold_
    assert meta["model"]["kind"] == "hybrid" and meta["model"]["ae_hidden"] == [16, 4]
    report = (tmp_path / "report.md").read_text()
    assert "Hybrid detector" in report and "| centralized |" in report


def test_record_dp_with_the_hybrid_is_refused() -> None:
    with pytest.raises(ValidationError, match="not supported with --model hybrid"):
        _cfg(dp="record", epsilon=8.0)


def test_cli_trains_a_hybrid(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["simulate", "--participants", "2", "--rounds", "1", "--synthetic-flows", "300"]
    args += ["--workers", "1", "--model", "hybrid", "--hidden", "16", "--ae-hidden", "8,2"]
    args += ["--anomaly-fpr", "0.05", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    model, meta = load_model(out / "model")
    assert isinstance(model, HybridDetector) and model.anomaly_fpr == 0.05
    assert meta["thresholds"]["default"] == 1.0
    bad = CliRunner().invoke(app, [*args[:-2], "--anomaly-fpr", "1.5"])
    assert bad.exit_code != 0 and "anomaly-fpr" in bad.output


@pytest.mark.parametrize("algorithm", ["fedavg", "fedprox"])
def test_hybrid_through_secure_aggregation_equals_the_plain_sum(algorithm: str) -> None:
    """The round engine and SecAgg+ carry the hybrid's one weight vector unchanged."""
    kw: dict[str, object] = {"algorithm": algorithm, "participants": 4, "rounds": 1}
    plain = run_simulation(_cfg(**kw))
    secure = run_simulation(_cfg(**kw, secure_aggregation=True))  # one round: quantization only
    assert len(plain.weights) == 4 + 8  # (32,) classifier: 2 layers; autoencoder 16-4: 4 layers
    for a, b in zip(plain.weights, secure.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
