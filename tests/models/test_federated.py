"""local_train: FedAvg, FedProx and SCAFFOLD hooks, and a small federation end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phalanx.core.aggregation import make_algorithm
from phalanx.core.errors import ConfigError, ModelError
from phalanx.core.types import ParticipantId, Update, Weights
from phalanx.models import (
    SCAFFOLD_STATE_KEY,
    AutoencoderDetector,
    MLPClassifier,
    build_model,
    local_train,
)

torch.set_num_threads(1)


def blobs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    centers = np.random.default_rng(1).standard_normal((3, 10)) * 3
    y = rng.integers(0, 3, n)
    return (centers[y] + rng.standard_normal((n, 10))).astype(np.float32), y


def model(**kw: object) -> MLPClassifier:
    params: dict[str, object] = {
        "n_features": 10,
        "n_classes": 3,
        "hidden": (16,),
        "batch_size": 32,
    }
    params.update(kw)
    return MLPClassifier(**params)  # type: ignore[arg-type]


def distance(a: Weights, b: Weights) -> float:
    return float(np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b, strict=True))))


def test_fedavg_task(rng: np.random.Generator) -> None:
    X, y = blobs(rng, 200)
    m = model()
    g = model(seed=5).initialize().get_weights()
    weights, n, metrics, extras = local_train(m.set_weights(g), X, y, {"local_epochs": 2}, {})
    assert n == 200
    assert extras == {}
    assert set(metrics) == {"loss", "steps", "epochs"}
    assert metrics["steps"] == 2 * 7
    assert [w.shape for w in weights] == [w.shape for w in g]


def test_proximal_term_pulls_toward_the_reference(rng: np.random.Generator) -> None:
    X, y = blobs(rng, 400)
    g = model(seed=5).initialize().get_weights()
    free, _, _, _ = local_train(model(lr=1e-2).set_weights(g), X, y, {"local_epochs": 3}, {})
    prox, _, _, _ = local_train(
        model(lr=1e-2).set_weights(g), X, y, {"local_epochs": 3, "proximal_mu": 5.0}, {}
    )
    assert distance(prox, g) < 0.7 * distance(free, g)


def test_scaffold_option_ii_control_variates(rng: np.random.Generator) -> None:
    X, y = blobs(rng, 128)
    m = model(lr=0.05, dropout=0.0)
    g = model(seed=5).initialize().get_weights()
    state: dict[str, Weights] = {}
    weights, _, metrics, extras = local_train(
        m.set_weights(g), X, y, {"scaffold": 1.0}, {}, state=state
    )
    delta = extras["control_delta"]
    assert [d.shape for d in delta] == [w.shape for w in g]
    k = metrics["steps"]
    # with c = c_i = 0: c_i+ = (x - y_i) / (K lr) and the delta is c_i+ itself
    for d, x, yi, ci in zip(delta, g, weights, state[SCAFFOLD_STATE_KEY], strict=True):
        np.testing.assert_allclose(d, (x - yi) / (k * 0.05), rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(d, ci)
    # second round: the server control shifts the gradient; delta = c_i+ - c_i
    c = [np.full_like(w, 0.01) for w in g]
    old = [w.copy() for w in state[SCAFFOLD_STATE_KEY]]
    _, _, _, extras2 = local_train(
        m.set_weights(g), X, y, {"scaffold": 1.0}, {"control": c}, state=state
    )
    for d, new, before in zip(
        extras2["control_delta"], state[SCAFFOLD_STATE_KEY], old, strict=True
    ):
        np.testing.assert_allclose(d, new - before, rtol=1e-5, atol=1e-7)


def test_scaffold_needs_persistent_state(rng: np.random.Generator) -> None:
    X, y = blobs(rng, 20)
    g = model().initialize().get_weights()
    with pytest.raises(ConfigError, match="persist"):
        local_train(model().set_weights(g), X, y, {"scaffold": 1.0}, {})


def test_task_errors(rng: np.random.Generator) -> None:
    X, y = blobs(rng, 20)
    g = model().initialize().get_weights()
    with pytest.raises(ConfigError, match="proximal_mu"):
        local_train(model().set_weights(g), X, y, {"proximal_mu": -1.0}, {})
    with pytest.raises(ConfigError, match="local_epochs"):
        local_train(model().set_weights(g), X, y, {"local_epochs": 1.5}, {})
    with pytest.raises(ConfigError, match="restricted_softmax"):
        local_train(model().set_weights(g), X, y, {"restricted_softmax": 2.0}, {})
    record = {"mode": "record", "clip": 1.0, "noise_multiplier": 1.3}
    with pytest.raises(ConfigError, match="record-level DP-SGD"):
        local_train(model().set_weights(g), X, y, {"restricted_softmax": 0.5, "dp": record}, {})
    with pytest.raises(ModelError, match="no weights yet"):
        local_train(model(), X, y, {}, {})
    with pytest.raises(ModelError, match="needs labels"):
        local_train(model().set_weights(g), X, None, {}, {})
    with pytest.raises(ModelError, match="expected shape"):
        model(hidden=(8,)).set_weights(g)


def test_autoencoder_trains_on_benign_rows_only(rng: np.random.Generator) -> None:
    X, y = blobs(rng, 90)
    ae = AutoencoderDetector(n_features=10, hidden=(8, 2))
    g = AutoencoderDetector(n_features=10, hidden=(8, 2), seed=4).initialize().get_weights()
    _, n, _, _ = local_train(ae.set_weights(g), X, y, {}, {})
    assert n == int(np.sum(y == 0))
    with pytest.raises(ModelError, match="no benign rows"):
        local_train(ae.set_weights(g), X[y != 0], y[y != 0], {}, {})


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "scaffold", "fedadam"])
def test_small_federation_learns(rng: np.random.Generator, name: str) -> None:
    parts = [blobs(rng, 300) for _ in range(3)]
    X_test, y_test = blobs(rng, 600)
    params = {"server_lr": 0.05} if name == "fedadam" else {}
    algo = make_algorithm(name, **params)
    lr = 0.1 if name == "scaffold" else 1e-2
    models = [model(seed=i, lr=lr) for i in range(3)]
    states: list[dict[str, Weights]] = [{} for _ in range(3)]
    g = model(seed=99).initialize().get_weights()
    for rnd in range(4):
        updates = []
        for i, ((X, y), m) in enumerate(zip(parts, models, strict=True)):
            w, n, metrics, extras = local_train(
                m.set_weights(g), X, y, algo.task_config(), algo.task_extras(), state=states[i]
            )
            updates.append(Update(ParticipantId(f"p{i}"), rnd, w, n, "h", metrics, extras))
        g = algo.aggregate(g, updates)
    final = model().set_weights(g)
    assert np.mean(final.predict(X_test) == y_test) > 0.95


def test_build_model_from_a_spec() -> None:
    spec = {
        "kind": "mlp",
        "hidden": [32, 16],
        "dropout": 0.2,
        "lr": 0.01,
        "batch_size": 64,
        "class_weight": "none",
    }
    m = build_model(spec, 10, {"seed": 7, "local_epochs": 3, "transform": {}})
    assert isinstance(m, MLPClassifier)
    assert (m.hidden, m.seed, m.epochs, m.class_weight) == ((32, 16), 7, 3, None)
    assert m.layer_shapes()[0] == (32, 10)
    same = build_model(spec, 10, {"seed": 7})
    np.testing.assert_array_equal(m.get_weights()[0], same.get_weights()[0])
    ae = build_model({**spec, "kind": "autoencoder", "hidden": [8, 2]}, 10)
    assert isinstance(ae, AutoencoderDetector)
    assert ae.layer_shapes()[0] == (8, 10)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"kind": "forest"}, "unknown model kind 'forest'"),
        ({"kind": "mlp", "depth": 3}, "unknown mlp model parameter"),
        ({"kind": "mlp", "dropout": 1.5}, "invalid mlp model spec"),
        ({"kind": "mlp", "class_weight": "auto"}, "invalid mlp model spec"),
    ],
)
def test_build_model_errors(spec: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_model(spec, 10)


def test_reseeded_model_trains_exactly_like_a_fresh_one() -> None:
    import numpy as np
    import torch

    from phalanx.models.federated import build_model, local_train

    torch.set_num_threads(1)
    spec = {"kind": "mlp", "hidden": [16], "dropout": 0.2, "lr": 0.01, "batch_size": 32}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=200)
    start = build_model(spec, 6, {"seed": 99}).get_weights()

    fresh = build_model(spec, 6, {"seed": 7, "local_epochs": 2})
    fresh.set_weights(start)
    a = local_train(fresh, x, y, {"local_epochs": 2}, {})[0]

    reused = build_model(spec, 6, {"seed": 3, "local_epochs": 2})
    local_train(reused, x, y, {"local_epochs": 2}, {})  # some earlier task
    reused.reseed(7).set_weights(start)
    b = local_train(reused, x, y, {"local_epochs": 2}, {})[0]
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_restricted_softmax_task_key_reaches_local_training(rng: np.random.Generator) -> None:
    """``restricted_softmax: 0`` in the task config: a participant without class 2 sends class
    2's output row back unchanged (FedRS); without the key that row moves."""
    X, y = blobs(rng, 300)
    keep = y != 2
    g = model(seed=5).initialize().get_weights()
    rows = {}
    for cfg in ({}, {"restricted_softmax": 0.0}):
        weights, _, _, _ = local_train(model().set_weights(g), X[keep], y[keep], cfg, {})
        rows[len(cfg)] = weights[-2][2]
    assert np.array_equal(rows[1], g[-2][2])
    assert not np.array_equal(rows[0], g[-2][2])


def test_class_counts_task_key_returns_the_label_counts(rng: np.random.Generator) -> None:
    """``class_counts`` in the task config: the update carries the rows per class it trained on
    (class-wise averaging, ADR 0018); without it, no counts leave the participant."""
    X, y = blobs(rng, 120)
    keep = y != 2
    g = model(seed=5).initialize().get_weights()
    _, n, _, extras = local_train(model().set_weights(g), X[keep], y[keep], {"class_counts": 1}, {})
    counts = extras["class_counts"][0]
    assert counts.dtype == np.float32 and counts.shape == (3,)
    assert counts.tolist() == [float((y[keep] == c).sum()) for c in range(3)]
    assert counts.sum() == n
    assert "class_counts" not in local_train(model().set_weights(g), X, y, {}, {})[3]


def test_class_totals_set_the_repeats_of_rare_classes(rng: np.random.Generator) -> None:
    """With ``min_class_rows``, the federation's class counts (``class_totals``) decide how often
    a local row repeats: one local row of a class the federation holds twice repeats
    ceil(32 / 2) = 16 times, not 32. The aggregation weight stays the distinct rows."""
    X, y = blobs(rng, 97)
    y[0] = 2
    y[1:][y[1:] == 2] = 1  # class 2: one local row
    totals = [400, 400, 2]
    m = model(min_class_rows=32, batch_size=8)
    rows = m.oversampled_rows(y, totals)
    assert rows is not None
    assert np.bincount(y[rows.numpy()]).tolist() == [(y == 0).sum(), (y == 1).sum(), 16]
    g = m.initialize().get_weights()
    runs = {
        name: local_train(model(batch_size=8, **kw).set_weights(g), X, y, config, {})
        for name, kw, config in (
            ("own counts", {"min_class_rows": 32}, {}),
            ("federation's", {"min_class_rows": 32}, {"class_totals": totals}),
            ("off", {}, {"class_totals": totals}),  # totals alone change nothing
        )
    }
    # 96 rows + 32, 16 or 1 presentations of the rare row, in batches of 8
    assert {k: v[2]["steps"] for k, v in runs.items()} == {
        "own counts": 16, "federation's": 14, "off": 13}  # fmt: skip
    assert {v[1] for v in runs.values()} == {97}
    for bad in ([1, 2], [1, -2, 3], [1.5, 2, 3], "many"):
        with pytest.raises(ConfigError, match="class_totals must be 3 non-negative whole"):
            local_train(model(min_class_rows=32).set_weights(g), X, y, {"class_totals": bad}, {})


def test_class_counts_are_refused_with_dp_and_for_an_autoencoder(rng: np.random.Generator) -> None:
    X, y = blobs(rng, 60)
    dp = {"mode": "record", "noise_multiplier": 1.0, "clip": 1.0}
    with pytest.raises(ConfigError, match="differential privacy"):
        local_train(model().initialize(), X, y, {"class_counts": 1, "dp": dp}, {})
    ae = AutoencoderDetector(10, hidden=(4,)).initialize()
    with pytest.raises(ConfigError, match="autoencoder"):
        local_train(ae, X, np.zeros(60, dtype=np.int64), {"class_counts": 1}, {})


def test_server_params_name_the_output_layer_for_class_wise_averaging() -> None:
    from phalanx.models.federated import server_params

    mlp = build_model({"kind": "mlp", "hidden": [16, 8]}, 10, {"seed": 0})
    out = len(mlp.get_weights()) - 2  # the output weight array; its bias follows
    spec = {"kind": "mlp", "hidden": [16, 8]}
    assert server_params(spec, "fedavg", {}, classwise_head=True) == {"classwise_layer": out}
    hybrid = {"kind": "hybrid", "hidden": [16, 8]}
    assert server_params(hybrid, "fedadam", {}, classwise_head=True) == {
        "adaptive_layers": float(out + 2),
        "classwise_layer": float(out),
    }
    with pytest.raises(ConfigError, match="scaffold"):
        server_params(spec, "scaffold", {}, classwise_head=True)
    with pytest.raises(ConfigError, match="no classes"):
        server_params({"kind": "autoencoder"}, "fedavg", {}, classwise_head=True)
