"""AutoencoderDetector: training on benign flows, calibration, scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phalanx.core.errors import ModelError
from phalanx.models import AutoencoderDetector

torch.set_num_threads(1)

D = 12


def benign(rng: np.random.Generator, n: int) -> np.ndarray:
    """Flows on a 3-dimensional subspace plus a little noise: easy to reconstruct."""
    basis = np.random.default_rng(0).standard_normal((3, D))
    return (rng.standard_normal((n, 3)) @ basis + 0.1 * rng.standard_normal((n, D))).astype(
        np.float32
    )


def detector(**kw: object) -> AutoencoderDetector:
    params: dict[str, object] = {"n_features": D, "hidden": (16, 4), "epochs": 8, "lr": 3e-3}
    params.update(kw)
    return AutoencoderDetector(**params)  # type: ignore[arg-type]


def test_a_diverging_reconstruction_loss_is_an_error(rng: np.random.Generator) -> None:
    with pytest.raises(ModelError, match=r"training diverged.*SGD, lr 1e"):
        detector(optimizer="sgd", lr=1e10).fit(benign(rng, 400) * 50)


def test_architecture_mirrors_the_encoder() -> None:
    ae = AutoencoderDetector(n_features=122).initialize()
    assert [s for s in ae.layer_shapes() if len(s) == 2] == [
        (64, 122),
        (16, 64),
        (64, 16),
        (122, 64),
    ]


def test_calibration_hits_the_target_fpr_on_held_out_benign(rng: np.random.Generator) -> None:
    ae = detector().fit(benign(rng, 3000))
    ae.calibrate(benign(rng, 4000), target_fpr=0.05)
    held_out = ae.predict(benign(rng, 8000))
    assert abs(held_out.mean() - 0.05) < 0.015
    anomalies = (3.0 * rng.standard_normal((500, D))).astype(np.float32)
    assert ae.predict(anomalies).mean() > 0.9


def test_scores_drop_with_training(rng: np.random.Generator) -> None:
    X = benign(rng, 2000)
    untrained = detector().initialize().score(X).mean()
    trained = detector().fit(X).score(X).mean()
    assert trained < 0.5 * untrained


def test_labels_select_benign_rows(rng: np.random.Generator) -> None:
    X = benign(rng, 100)
    y = np.array([0, 3] * 50)
    ae = detector(epochs=1).fit(X, y)
    assert ae.n_seen_ == 50
    assert ae.last_stats_.examples == 50


def test_deterministic_and_weights_roundtrip(rng: np.random.Generator) -> None:
    X = benign(rng, 500)
    a = detector(seed=3).fit(X)
    b = detector(seed=3).fit(X)
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)
    c = detector(seed=9).set_weights(a.get_weights())
    np.testing.assert_array_equal(a.score(X), c.score(X))
    np.testing.assert_array_equal(a.attack_score(X), a.score(X))


def test_errors(rng: np.random.Generator) -> None:
    ae = detector(epochs=1).fit(benign(rng, 50))
    with pytest.raises(ModelError, match="calibrate"):
        ae.predict(benign(rng, 5))
    with pytest.raises(ModelError, match="cannot calibrate"):
        ae.calibrate(benign(rng, 5), target_fpr=1.5)
    with pytest.raises(ModelError, match="expected shape"):
        ae.set_weights([w.T.copy() for w in ae.get_weights()])
