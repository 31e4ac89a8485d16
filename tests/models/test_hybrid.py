"""HybridDetector: one weight vector for two nets, the local step, the OR rule, bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from phalanx.core.errors import ConfigError, ModelError
from phalanx.core.taxonomy import CATEGORY_INDEX
from phalanx.models import AutoencoderDetector, HybridDetector, MLPClassifier, build_model
from phalanx.models.bundle import load_model, save_model
from phalanx.models.federated import local_train
from phalanx.models.hybrid import autoencoder_seed
from phalanx.sim.scoring import decision_proba

torch.set_num_threads(1)

D = 12
OTHER = CATEGORY_INDEX["other"]
DOS = CATEGORY_INDEX["dos"]


def _basis() -> NDArray[np.float64]:
    return np.random.default_rng(0).standard_normal((3, D))


def benign(rng: np.random.Generator, n: int) -> NDArray[np.float32]:
    """Flows on a 3-dimensional subspace plus a little noise: easy to reconstruct."""
    x: NDArray[np.float64] = rng.standard_normal((n, 3)) @ _basis()
    return (x + 0.1 * rng.standard_normal((n, D))).astype(np.float32)


def known_attack(rng: np.random.Generator, n: int) -> np.ndarray:
    """A labelled attack: benign-like flows shifted along the first feature."""
    x = benign(rng, n)
    x[:, 0] += 4.0
    return x


def novel_attack(rng: np.random.Generator, n: int) -> np.ndarray:
    """An attack never trained on: off the benign subspace, on the benign side of feature 0."""
    x = benign(rng, n)
    x[:, 5:] += 3.0 * rng.standard_normal((n, D - 5)).astype(np.float32)
    x[:, 0] -= 2.0
    return x


def labelled(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([benign(rng, n), known_attack(rng, n)])
    y = np.array([0] * n + [DOS] * n, dtype=np.int64)
    return x, y


def hybrid(**kw: object) -> HybridDetector:
    params: dict[str, object] = {
        "n_features": D,
        "hidden": (16,),
        "ae_hidden": (16, 4),
        "epochs": 6,
        "lr": 3e-3,
        "anomaly_fpr": 0.02,
    }
    params.update(kw)
    return HybridDetector(**params)  # type: ignore[arg-type]


def test_weights_are_the_classifier_then_the_autoencoder() -> None:
    h = hybrid().initialize()
    mlp = MLPClassifier(D, hidden=(16,), seed=0).initialize()
    ae = AutoencoderDetector(D, hidden=(16, 4), seed=autoencoder_seed(0)).initialize()
    expected = mlp.get_weights() + ae.get_weights()
    got = h.get_weights()
    assert len(got) == len(expected) == 4 + 8
    for a, b in zip(got, expected, strict=True):
        assert np.array_equal(a, b)
    names = h.layer_names()
    assert names[0] == "classifier.layers.0.weight" and names[-1] == "autoencoder.layers.3.bias"
    assert [(n, s) for n, s in zip(names, h.layer_shapes(), strict=True)] == h.expected_layers()


def test_set_weights_round_trips_and_refuses_foreign_weights(rng: np.random.Generator) -> None:
    a, b = hybrid(seed=1).initialize(), hybrid(seed=2).initialize()
    b.set_weights(a.get_weights())
    x = benign(rng, 50)
    assert np.array_equal(a.predict_proba(x), b.predict_proba(x))
    assert np.array_equal(a.anomaly_score(x), b.anomaly_score(x))
    before = b.get_weights()
    with pytest.raises(ModelError, match="expected 12"):
        b.set_weights(a.get_weights()[:4])  # the classifier alone
    bad = a.get_weights()
    bad[-1] = np.full_like(bad[-1], np.nan)
    with pytest.raises(ModelError, match="autoencoder layer 7"):
        b.set_weights(bad)
    for w0, w1 in zip(before, b.get_weights(), strict=True):  # nothing changed
        assert np.array_equal(w0, w1)


def test_local_step_trains_the_classifier_on_all_rows_and_the_ae_on_benign(
    rng: np.random.Generator,
) -> None:
    x, y = labelled(rng, 200)
    h = hybrid(seed=3).fit(x, y)
    mlp = MLPClassifier(D, hidden=(16,), epochs=6, lr=3e-3, seed=3).fit(x, y)
    ae = AutoencoderDetector(D, hidden=(16, 4), epochs=6, lr=3e-3, seed=autoencoder_seed(3))
    ae.fit(x[y == 0])
    for a, b in zip(h.get_weights(), mlp.get_weights() + ae.get_weights(), strict=True):
        assert np.array_equal(a, b)
    assert h.last_stats_.examples == 400 and h.last_anomaly_stats_.examples == 200


def test_no_benign_rows_leave_the_autoencoder_as_it_came(rng: np.random.Generator) -> None:
    h = build_model({"kind": "hybrid", "hidden": [16], "ae_hidden": [8, 2]}, D, {"seed": 1})
    assert isinstance(h, HybridDetector)
    start = h.get_weights()
    x = known_attack(rng, 64)
    weights, n, metrics, _ = local_train(h, x, np.full(64, DOS), {"local_epochs": 1}, {})
    k = len(h.classifier_.get_weights())
    assert n == 64 and "anomaly_loss" not in metrics and np.isfinite(metrics["loss"])
    assert not np.array_equal(weights[0], start[0])
    for a, b in zip(weights[k:], start[k:], strict=True):
        assert np.array_equal(a, b)


def test_fedprox_and_scaffold_are_split_between_the_parts(rng: np.random.Generator) -> None:
    x, y = labelled(rng, 60)
    spec = {"kind": "hybrid", "hidden": [16], "ae_hidden": [8, 2], "optimizer": "sgd"}
    h = build_model(spec, D, {"seed": 0})
    state: dict[str, list[np.ndarray]] = {}
    cfg = {"local_epochs": 1, "scaffold": 1, "proximal_mu": 0.1}
    weights, _, _, extras = local_train(h, x, y, cfg, {}, state=state)
    shapes = [w.shape for w in weights]
    assert [d.shape for d in extras["control_delta"]] == shapes
    assert [c.shape for c in state["scaffold_control"]] == shapes
    assert all(np.abs(d).sum() > 0 for d in extras["control_delta"])
    assert np.isfinite(local_train(h, x, y, {"local_epochs": 1}, {})[2]["anomaly_loss"])


def test_record_level_dp_is_refused_with_a_clear_error(rng: np.random.Generator) -> None:
    x, y = labelled(rng, 20)
    h = build_model({"kind": "hybrid", "hidden": [8], "ae_hidden": [4, 2]}, D)
    dp = {"mode": "record", "noise_multiplier": 1.0, "clip": 1.0}
    with pytest.raises(ConfigError, match="not supported for the hybrid model"):
        local_train(h, x, y, {"local_epochs": 1, "dp": dp}, {}, noise_rng=rng)


def test_bad_parameters_and_missing_calibration_are_named(rng: np.random.Generator) -> None:
    with pytest.raises(ModelError, match="anomaly_fpr"):
        hybrid(anomaly_fpr=0.0).initialize()
    with pytest.raises(ModelError, match="classifier_threshold"):
        hybrid(classifier_threshold=1.5).initialize()
    with pytest.raises(ModelError, match="autoencoder part"):
        hybrid(ae_hidden=()).initialize()
    with pytest.raises(ConfigError, match="unknown hybrid model parameter"):
        build_model({"kind": "hybrid", "bottleneck": 3}, D)
    h = hybrid().initialize()
    with pytest.raises(ModelError, match="not calibrated"):
        h.attack_score(benign(rng, 5))
    with pytest.raises(ModelError, match="needs labels"):
        h.partial_fit(benign(rng, 5), None)  # type: ignore[arg-type]


def test_calibration_hits_the_anomaly_fpr_and_catches_novel_attacks(
    rng: np.random.Generator,
) -> None:
    x, y = labelled(rng, 1500)
    h = hybrid(epochs=10).fit(x, y).calibrate(benign(rng, 4000))
    held_out = benign(rng, 8000)
    anomaly_flags = h.anomaly_score(held_out) > h.threshold_
    assert abs(anomaly_flags.mean() - 0.02) < 0.01
    novel = novel_attack(rng, 1000)
    classifier_dr = float((h.classifier_score(novel) > 0.5).mean())
    hybrid_dr = float((h.attack_score(novel) > 1.0).mean())
    assert classifier_dr < 0.5 < 0.9 < hybrid_dr  # the classifier misses them, the OR does not
    assert (h.predict(novel)[h.classifier_score(novel) <= 0.5] != DOS).all()
    assert (h.attack_score(known_attack(rng, 500)) > 1.0).mean() > 0.95
    parts = h.anomaly_contributions(novel[:20])
    assert parts.shape == (20, D)
    assert np.allclose(parts.mean(axis=1), h.anomaly_score(novel[:20]), rtol=1e-5)
    assert (parts[:, 5:].sum(axis=1) > parts[:, :5].sum(axis=1)).mean() > 0.9  # where it is odd


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    t_c=st.floats(0.05, 0.95),
    t_a=st.floats(1e-3, 10.0),
)
def test_the_or_rule_and_its_scoring_agree(seed: int, t_c: float, t_a: float) -> None:
    rng = np.random.default_rng(seed)
    h = hybrid(classifier_threshold=t_c, seed=seed % 7).initialize().set_anomaly_threshold(t_a)
    x = (2.0 * rng.standard_normal((64, D))).astype(np.float32)
    s_c, s_a = h.classifier_score(x), h.anomaly_score(x)
    alert = (s_c / t_c > 1.0) | (s_a / t_a > 1.0)
    score = h.attack_score(x)
    assert np.array_equal(score > 1.0, alert)
    odds = s_c.astype(np.float64) / np.maximum(1.0 - s_c.astype(np.float64), 1e-12)
    assert np.allclose(score, np.maximum(odds / (t_c / (1 - t_c)), s_a / t_a), rtol=1e-4)
    kind = h.predict(x)
    top_attack = h.predict_proba(x)[:, 1:].argmax(axis=1) + 1
    expected = np.where(~alert, 0, np.where(s_c / t_c > 1.0, top_attack, OTHER))
    assert np.array_equal(kind, expected)
    proba = decision_proba(h, x)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(proba.argmax(axis=1), kind)
    assert np.array_equal(1.0 - proba[:, 0] > 0.5, alert)


def test_bundle_keeps_both_nets_and_both_thresholds(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    x, y = labelled(rng, 200)
    h = hybrid(classifier_threshold=0.4).fit(x, y).calibrate(benign(rng, 500))
    save_model(tmp_path / "m", h, {"thresholds": {"default": 1.0, "anomaly": h.threshold_}})
    loaded, meta = load_model(tmp_path / "m")
    assert isinstance(loaded, HybridDetector)
    assert loaded.threshold_ == h.threshold_ and loaded.classifier_threshold == 0.4
    assert meta["thresholds"]["anomaly"] == h.threshold_
    probe = np.concatenate([x, novel_attack(rng, 50)])
    assert np.array_equal(loaded.attack_score(probe), h.attack_score(probe))
    assert np.array_equal(loaded.predict(probe), h.predict(probe))


def test_reseed_trains_like_a_fresh_model(rng: np.random.Generator) -> None:
    x, y = labelled(rng, 100)
    fresh = hybrid(seed=9).initialize()
    reused = hybrid(seed=4).fit(x, y)
    reused.set_weights(fresh.get_weights())
    reused.reseed(9)
    fresh.partial_fit(x, y, epochs=1)
    reused.partial_fit(x, y, epochs=1)
    for a, b in zip(fresh.get_weights(), reused.get_weights(), strict=True):
        assert np.array_equal(a, b)


def test_ae_epochs_multiplies_the_autoencoder_passes_only(rng: np.random.Generator) -> None:
    x, y = labelled(rng, 200)
    h = hybrid(seed=3, epochs=2, ae_epochs=3).fit(x, y)
    mlp = MLPClassifier(D, hidden=(16,), epochs=2, lr=3e-3, seed=3).fit(x, y)
    ae = AutoencoderDetector(D, hidden=(16, 4), epochs=6, lr=3e-3, seed=autoencoder_seed(3))
    ae.fit(x[y == 0])
    for a, b in zip(h.get_weights(), mlp.get_weights() + ae.get_weights(), strict=True):
        assert np.array_equal(a, b)
    assert h.get_params()["ae_epochs"] == 3
    for bad in (0, 1.5, True):
        with pytest.raises(ModelError, match="ae_epochs"):
            hybrid(ae_epochs=bad).initialize()


def test_server_params_keep_the_adaptive_step_off_the_autoencoder() -> None:
    """Under FedAdam/FedYogi a hybrid's autoencoder layers are averaged plainly (ADR 0016): the
    adaptive step covers the classifier's weight and bias arrays only."""
    from phalanx.models.federated import server_params

    spec = {"kind": "hybrid", "hidden": [16, 8]}
    h = build_model(spec, D, {"seed": 0})
    assert isinstance(h, HybridDetector)
    n_classifier = len(h.classifier_.get_weights())
    assert server_params(spec, "fedadam", {"server_lr": 0.03}) == {
        "server_lr": 0.03,
        "adaptive_layers": float(n_classifier),
    }
    assert server_params(spec, "fedyogi", {})["adaptive_layers"] == n_classifier
    assert server_params(spec, "fedavg", {}) == {}
    assert server_params({"kind": "mlp"}, "fedadam", {}) == {}
    assert server_params(spec, "fedadam", {"adaptive_layers": 0.0}) == {"adaptive_layers": 0.0}


def test_the_autoencoder_can_keep_its_own_optimizer(rng: np.random.Generator) -> None:
    """A classifier trained with SGD (momentum) beside an autoencoder trained with Adam: each
    part trains exactly as the standalone model with those settings would."""
    x, y = labelled(rng, 200)
    h = hybrid(seed=3, optimizer="sgd", lr=0.05, momentum=0.9, ae_optimizer="adam", ae_lr=3e-3)
    h.fit(x, y)
    mlp = MLPClassifier(D, hidden=(16,), epochs=6, lr=0.05, seed=3, optimizer="sgd", momentum=0.9)
    ae = AutoencoderDetector(D, hidden=(16, 4), epochs=6, lr=3e-3, seed=autoencoder_seed(3))
    mlp.fit(x, y)
    ae.fit(x[y == 0])
    for a, b in zip(h.get_weights(), mlp.get_weights() + ae.get_weights(), strict=True):
        assert np.array_equal(a, b)
    with pytest.raises(ModelError, match="autoencoder part"):
        hybrid(ae_optimizer="rmsprop").initialize()
