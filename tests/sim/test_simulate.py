"""Whole simulations on small synthetic federations: files, determinism, one code path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from phalanx.cli.main import app
from phalanx.models import HybridDetector, build_model
from phalanx.sim.config import ModelSpec, SimConfig
from phalanx.sim.runner import run_simulation

torch.set_num_threads(1)


def _cfg(**kw: object) -> SimConfig:
    base: dict[str, object] = {
        "participants": 3,
        "rounds": 2,
        "synthetic_flows": 600,
        "workers": 1,
        "seed": 5,
    }
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


def test_same_seed_same_numbers_and_pool_equals_in_process() -> None:
    a = run_simulation(_cfg())
    b = run_simulation(_cfg())
    pooled = run_simulation(_cfg(workers=2))
    for x, y, z in zip(a.weights, b.weights, pooled.weights, strict=True):
        assert np.array_equal(x, y)
        assert np.array_equal(x, z)
    assert a.summary["federated"] == pooled.summary["federated"]
    assert a.summary["bytes_up"] == pooled.summary["bytes_up"] > 0


def test_another_seed_gives_another_model() -> None:
    a = run_simulation(_cfg())
    c = run_simulation(_cfg(seed=6))
    assert not np.array_equal(a.weights[0], c.weights[0])


@pytest.mark.parametrize("algorithm", ["fedprox", "scaffold", "fedavgm", "fedadam", "fedyogi"])
def test_every_algorithm_runs_end_to_end(algorithm: str) -> None:
    result = run_simulation(_cfg(algorithm=algorithm, rounds=2))
    assert 0.0 <= result.summary["federated"]["accuracy"] <= 1.0
    assert len(result.history) == 2


def test_cli_writes_the_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "simulate", "--participants", "3", "--rounds", "2", "--synthetic-flows", "600",
            "--workers", "1", "--baselines", "--out", str(out), "--partition", "dirichlet:1.0",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    for name in ("config.json", "metrics.jsonl", "summary.json", "report.md", "rounds.png",
                 "per_class_recall.png", "confusion.png", "baselines.png",
                 "model/model.safetensors", "model/model.json"):  # fmt: skip
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    for system in ("federated", "centralized"):
        assert {"accuracy", "macro_f1", "per_class", "binary"} <= set(summary[system])
    assert {"mean", "min"} <= set(summary["local_only"])
    assert {"accuracy", "detection_rate", "fpr", "roc_auc", "pr_auc"} <= set(
        summary["federated"]["binary"]
    )
    for key in ("rounds", "participants", "bytes_up", "bytes_down", "wall_s"):
        assert key in summary
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2]
    meta = json.loads((out / "model/model.json").read_text())["metadata"]
    assert meta["schema_hash"] == summary["schema"]["hash"]
    assert "transform" in meta and "thresholds" in meta


def test_cli_names_a_bad_option() -> None:
    res = CliRunner().invoke(app, ["simulate", "--algorithm", "fedmagic", "--rounds", "1"])
    assert res.exit_code == 2
    assert "fedmagic" in res.output and "fedavg" in res.output


def test_autoencoder_federation_is_scored_as_a_two_class_detector() -> None:
    result = run_simulation(
        _cfg(model=ModelSpec(kind="autoencoder", hidden=(32, 8)), rounds=2, baselines=True)
    )
    fed = result.summary["federated"]
    present = {c for c, v in fed["per_class"].items() if v["support"]}
    assert present <= {"benign", "other"}
    assert fed["accuracy"] == fed["binary"]["accuracy"]
    assert result.thresholds["default"] > 0.0
    assert {"mean", "min"} <= set(result.summary["local_only"])


def test_the_nsl_kdd_recipe_options_reach_the_run(tmp_path: Path) -> None:
    """SGD with momentum, FedRS, rare classes oversampled and a hybrid whose Adam autoencoder
    trains ten passes: the CLI options land in config.json, the tasks and the models built."""
    from phalanx.sim.runner import train_config

    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "simulate", "--participants", "3", "--rounds", "2", "--synthetic-flows", "600",
            "--workers", "1", "--out", str(out), "--model", "hybrid", "--algorithm", "fedadam",
            "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--ae-optimizer", "adam",
            "--ae-lr", "0.001", "--ae-epochs", "10", "--restricted-softmax", "0.5",
            "--min-class-rows", "32",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = SimConfig.model_validate(json.loads((out / "config.json").read_text()))
    assert (cfg.model.optimizer, cfg.model.lr, cfg.model.momentum) == ("sgd", 0.05, 0.9)
    assert (cfg.model.ae_optimizer, cfg.model.ae_lr, cfg.model.ae_epochs) == ("adam", 0.001, 10)
    task = train_config(cfg)
    assert task["restricted_softmax"] == 0.5 and task["model"]["ae_epochs"] == 10
    assert "restricted_softmax" not in train_config(_cfg())
    hybrid = build_model(task["model"], 8, {"seed": 0})
    assert isinstance(hybrid, HybridDetector) and hybrid.classifier_.min_class_rows == 32


def test_fedrs_with_record_level_dp_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="restricted-softmax"):
        _cfg(dp="record", epsilon=8.0, restricted_softmax=0.5)


def test_oversampling_with_record_level_dp_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="--min-class-rows is not supported"):
        _cfg(dp="record", epsilon=8.0, model=ModelSpec(min_class_rows=32))
    _cfg(dp="client-central", epsilon=8.0, model=ModelSpec(min_class_rows=32))  # client-level


def test_classwise_head_through_the_pool_and_secure_aggregation() -> None:
    """--classwise-head through the process pool: every round's task asks for label counts,
    and the run differs from the sample-weighted one only in the output layer (one round from
    the same start: the same local training, the same mean elsewhere)."""
    plain = run_simulation(_cfg(workers=2, rounds=1))
    classwise = run_simulation(_cfg(workers=2, rounds=1, classwise_head=True))
    *hidden_p, _, b_p = plain.weights
    *hidden_c, _, b_c = classwise.weights
    for x, y in zip(hidden_p, hidden_c, strict=True):  # one round: same start, same hidden mean
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(b_p, b_c)
    assert classwise.summary["federated"]["accuracy"] is not None
    masked = run_simulation(_cfg(rounds=1, classwise_head=True, secure_aggregation=True))
    # the same up to fixed point: a row's rounding error is divided by its class's weight, and
    # a class of a few rows weighs rows / weight_cap (docs/adr/0018)
    for x, y in zip(classwise.weights, masked.weights, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-3)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"dp": "client-central", "epsilon": 8.0}, "--dp"),
        ({"model": {"kind": "autoencoder"}}, "autoencoder"),
        ({"algorithm": "krum"}, "krum"),
    ],
)
def test_classwise_head_refusals_name_the_conflict(kw: dict[str, object], match: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=match):
        _cfg(classwise_head=True, **kw)
