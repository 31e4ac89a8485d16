"""MLPClassifier: shapes, determinism, learning, weights API, class weighting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.errors import ModelError
from phalanx.core.taxonomy import CATEGORIES
from phalanx.models import MLPClassifier
from phalanx.models.mlp import ABSENT_PRIOR

torch.set_num_threads(1)


def blobs(
    rng: np.random.Generator, n: int = 1500, d: int = 10, k: int = 3, spread: float = 4.0
) -> tuple[np.ndarray, np.ndarray]:
    centers = rng.standard_normal((k, d)) * spread
    y = rng.integers(0, k, n)
    X = (centers[y] + rng.standard_normal((n, d))).astype(np.float32)
    return X, y


def small(**kw: object) -> MLPClassifier:
    params: dict[str, object] = {"n_features": 10, "hidden": (32, 16), "batch_size": 64}
    params.update(kw)
    return MLPClassifier(**params)  # type: ignore[arg-type]


def test_constructor_only_stores_parameters() -> None:
    m = MLPClassifier(122)
    assert m.n_classes == len(CATEGORIES)
    assert not m.is_initialized()
    assert m.get_params()["hidden"] == [256, 128]
    with pytest.raises(ModelError, match="no weights yet"):
        m.predict_proba(np.zeros((1, 122), np.float32))


def test_shapes_and_weight_order(rng: np.random.Generator) -> None:
    X, y = blobs(rng, n=200)
    m = small(n_classes=5).fit(X, y)
    proba = m.predict_proba(X)
    assert proba.shape == (200, 5)
    assert proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert m.predict(X).shape == (200,)
    np.testing.assert_allclose(m.attack_score(X), 1.0 - proba[:, 0], rtol=1e-6)
    assert m.layer_names() == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
        "layers.2.weight", "layers.2.bias",
    ]  # fmt: skip
    assert [w.shape for w in m.get_weights()] == [(32, 10), (32,), (16, 32), (16,), (5, 16), (5,)]
    assert all(w.dtype == np.float32 for w in m.get_weights())
    assert m.n_seen_ == 200


def test_same_seed_same_data_gives_identical_weights(rng: np.random.Generator) -> None:
    X, y = blobs(rng, n=500)
    a = small(seed=7, epochs=2).fit(X, y).get_weights()
    b = small(seed=7, epochs=2).fit(X, y).get_weights()
    c = small(seed=8, epochs=2).fit(X, y).get_weights()
    for x1, x2 in zip(a, b, strict=True):
        np.testing.assert_array_equal(x1, x2)
    assert any(not np.array_equal(x1, x3) for x1, x3 in zip(a, c, strict=True))


def test_fit_does_not_touch_torch_global_rng(rng: np.random.Generator) -> None:
    X, y = blobs(rng, n=100)
    before = torch.random.get_rng_state()
    small().fit(X, y)
    assert torch.equal(before, torch.random.get_rng_state())


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_learns_a_separable_problem(rng: np.random.Generator, optimizer: str) -> None:
    X, y = blobs(rng, n=2000)
    Xt, yt = X[:1500], y[:1500]
    lr = 1e-2 if optimizer == "adam" else 0.1
    m = small(n_classes=3, epochs=5, lr=lr, optimizer=optimizer).fit(Xt, yt)
    assert np.mean(m.predict(X[1500:]) == y[1500:]) > 0.95
    assert m.last_stats_.steps == 5 * int(np.ceil(1500 / 64))


def test_partial_fit_continues_from_current_weights(rng: np.random.Generator) -> None:
    X, y = blobs(rng, n=300)
    m = small(n_classes=3).fit(X, y)
    w1 = m.get_weights()
    m.partial_fit(X, y, epochs=0)
    for a, b in zip(w1, m.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    m.partial_fit(X, y)
    assert m.n_seen_ == 600
    assert any(not np.array_equal(a, b) for a, b in zip(w1, m.get_weights(), strict=True))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_diverging_loss_is_an_error_that_names_the_settings(optimizer: str) -> None:
    """A learning rate far too large sends the loss to NaN: training stops with an error that
    says so and names what to change, instead of leaving NaN weights for a later step to trip
    over (a threshold calibrated on NaN scores, a federated update left out as non-finite)."""
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((600, 10)) * 50).astype(np.float32)
    y = rng.integers(0, 3, 600)
    m = small(n_classes=3, epochs=3, lr=1e10 if optimizer == "sgd" else 1e30, optimizer=optimizer)
    with pytest.raises(
        ModelError, match=r"training diverged: the mean loss of epoch 1 of 3 is nan"
    ):
        m.fit(X, y)
    with pytest.raises(ModelError, match=r"lower the learning rate"):
        small(n_classes=3, lr=1e10, optimizer="sgd", momentum=0.9).fit(X, y)
    small(n_classes=3, lr=1e-3).fit(X, y)  # the same data at a sane rate trains


def test_get_set_weights_roundtrip(rng: np.random.Generator) -> None:
    X, y = blobs(rng, n=200)
    a = small(n_classes=3, seed=1).fit(X, y)
    b = small(n_classes=3, seed=2).set_weights(a.get_weights())
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    w = a.get_weights()
    w[0][0, 0] += 1.0  # get_weights returns a copy
    assert a.get_weights()[0][0, 0] != w[0][0, 0]


def test_set_weights_validates(rng: np.random.Generator) -> None:
    m = small(n_classes=3).initialize()
    w = m.get_weights()
    with pytest.raises(ModelError, match="has 6 weight arrays; found 5"):
        m.set_weights(w[:-1])
    bad = [*w[:2], np.zeros((16, 33), np.float32), *w[3:]]
    with pytest.raises(ModelError, match=r"layer 2 \(layers.1.weight\): expected shape \(16, 32\)"):
        m.set_weights(bad)
    with pytest.raises(ModelError, match=r"layer 0 \(layers.0.weight\): expected dtype float32"):
        m.set_weights([w[0].astype(np.float64), *w[1:]])
    nan = [w[0].copy(), *w[1:]]
    nan[0][0, 0] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        m.set_weights(nan)
    np.testing.assert_array_equal(m.get_weights()[0], w[0])  # unchanged after refusals


def test_input_validation(rng: np.random.Generator) -> None:
    m = small(n_classes=3)
    X, y = blobs(rng, n=20)
    with pytest.raises(ModelError, match=r"shape \(n, 10\)"):
        m.fit(X[:, :5], y)
    with pytest.raises(ModelError, match=r"expected 0..2"):
        m.fit(X, y + 5)
    X[3, 2] = np.inf
    with pytest.raises(ModelError, match="row 3"):
        m.fit(X, y)
    with pytest.raises(ModelError, match="class_weight"):
        small(class_weight="auto").initialize()


def test_read_only_and_float64_inputs_are_accepted(rng: np.random.Generator) -> None:
    X, y = blobs(rng, n=50)
    X64 = X.astype(np.float64)
    X.setflags(write=False)
    a = small(n_classes=3).fit(X, y).get_weights()
    b = small(n_classes=3).fit(X64, y).get_weights()
    for x1, x2 in zip(a, b, strict=True):
        np.testing.assert_array_equal(x1, x2)


def test_balanced_class_weights_are_clipped() -> None:
    m = small(n_classes=4)
    y = np.array([0] * 900 + [1] * 99 + [2] * 1)
    w = m.class_weights(y)
    # n / (k * n_c) with k = 3 present classes: 0.37, 3.37, 333 -> clipped to 10
    np.testing.assert_allclose(w, [1000 / 2700, 1000 / 297, 10.0, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(small(class_weight=None).class_weights(y), np.ones(11))


def test_class_weighting_raises_minority_recall(rng: np.random.Generator) -> None:
    n = 3000
    y = (rng.random(n) < 0.05).astype(np.int64)
    X = (rng.standard_normal((n, 10)) + y[:, None] * 0.8).astype(np.float32)
    kw = {"n_classes": 2, "epochs": 3, "lr": 3e-3, "dropout": 0.0}
    plain = small(class_weight=None, **kw).fit(X, y)
    balanced = small(class_weight="balanced", **kw).fit(X, y)
    minority = y == 1
    assert np.mean(balanced.predict(X[minority]) == 1) > np.mean(plain.predict(X[minority]) == 1)


def test_logit_offsets_are_tau_log_prior_with_absent_classes_floored() -> None:
    y = np.array([0] * 75 + [1] * 25)
    offsets = small(n_classes=4, logit_adjust=0.5).logit_offsets(y)
    expected = 0.5 * np.log([0.75, 0.25, ABSENT_PRIOR, ABSENT_PRIOR])
    np.testing.assert_allclose(offsets, expected, rtol=1e-6)
    np.testing.assert_array_equal(small(n_classes=4).logit_offsets(y), np.zeros(4))
    np.testing.assert_array_equal(
        small(n_classes=4, logit_adjust=1.0).logit_offsets(np.zeros(0, np.int64)), np.zeros(4)
    )


@given(
    counts=st.lists(st.integers(0, 1000), min_size=2, max_size=11).filter(lambda c: sum(c) > 0),
    tau=st.floats(0.0, 10.0),
)
@settings(max_examples=50, deadline=None)
def test_logit_offsets_never_favour_a_rarer_class(counts: list[int], tau: float) -> None:
    y = np.repeat(np.arange(len(counts)), counts)
    offsets = small(n_classes=len(counts), logit_adjust=tau).logit_offsets(y)
    assert np.all(np.isfinite(offsets)) and np.all(offsets <= 0.0)
    order = np.argsort(counts, kind="stable")
    assert np.all(np.diff(offsets[order]) >= -1e-6)  # more rows, a larger (or equal) offset


def test_logit_adjustment_keeps_a_locally_absent_class(rng: np.random.Generator) -> None:
    """Training on data without class 2 barely lowers class 2's scores when the loss is
    logit-adjusted (its prior is tiny), while plain cross-entropy pushes them down."""
    X, y = blobs(rng, n=1500, k=3)
    kw = {"n_classes": 3, "epochs": 3, "class_weight": None, "dropout": 0.0}
    start = small(**kw).fit(X, y)
    local = y != 2
    drops = {}
    for tau in (0.0, 1.0):
        m = small(**kw, logit_adjust=tau).set_weights(start.get_weights())
        m.partial_fit(X[local], y[local])
        drops[tau] = float(np.mean(start.predict_proba(X[~local])[:, 2]))
        drops[tau] -= float(np.mean(m.predict_proba(X[~local])[:, 2]))
    assert drops[1.0] < drops[0.0]
    assert drops[1.0] < 0.05


def test_label_smoothing_softens_confidence(rng: np.random.Generator) -> None:
    X, y = blobs(rng, n=600, k=3, spread=6.0)
    kw = {"n_classes": 3, "epochs": 5, "dropout": 0.0, "lr": 3e-3}
    sharp = small(**kw).fit(X, y).predict_proba(X).max(axis=1).mean()
    smooth = small(**kw, label_smoothing=0.3).fit(X, y).predict_proba(X).max(axis=1).mean()
    assert smooth < sharp


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"logit_adjust": -1.0}, "logit_adjust must be in"),
        ({"logit_adjust": float("nan")}, "logit_adjust must be in"),
        ({"label_smoothing": 1.0}, "label_smoothing must be in"),
    ],
)
def test_new_loss_parameters_are_validated(kw: dict[str, float], match: str) -> None:
    with pytest.raises(ModelError, match=match):
        small(**kw).initialize()


def test_restricted_softmax_leaves_absent_class_rows_alone_at_alpha_zero(
    rng: np.random.Generator,
) -> None:
    """FedRS with alpha 0: the output row and bias of a class absent from the call's labels
    take no gradient, so Adam leaves them exactly as they were; present classes' rows move."""
    X, y = blobs(rng, n=900, k=3)
    kw = {"n_classes": 3, "dropout": 0.0}
    start = small(**kw).fit(X, y)
    local = y != 2
    m = small(**kw).set_weights(start.get_weights())
    m.partial_fit(X[local], y[local], absent_scale=0.0)
    w0, w1 = start.get_weights(), m.get_weights()
    out_w, out_b = len(w0) - 2, len(w0) - 1
    assert np.array_equal(w0[out_w][2], w1[out_w][2])
    assert w0[out_b][2] == w1[out_b][2]
    assert not np.array_equal(w0[out_w][:2], w1[out_w][:2])


def test_restricted_softmax_moves_an_absent_class_row_less(rng: np.random.Generator) -> None:
    """The absent class's output row moves less under alpha 0.5 than under the plain softmax
    (SGD, so step sizes follow the gradient: the row's gradient is scaled by alpha)."""
    X, y = blobs(rng, n=1500, k=3)
    kw = {"n_classes": 3, "epochs": 2, "class_weight": None, "dropout": 0.0, "optimizer": "sgd"}
    start = small(**kw).fit(X, y)
    local = y != 2
    moved = {}
    for alpha in (1.0, 0.5):
        m = small(**kw).set_weights(start.get_weights())
        m.partial_fit(X[local], y[local], absent_scale=alpha)
        moved[alpha] = float(np.linalg.norm(m.get_weights()[-2][2] - start.get_weights()[-2][2]))
    assert 0.0 < moved[0.5] < moved[1.0]


def test_restricted_softmax_is_a_no_op_when_every_class_is_present(
    rng: np.random.Generator,
) -> None:
    X, y = blobs(rng, n=600, k=3)
    a = small(n_classes=3).fit(X, y)
    b = small(n_classes=3).initialize()
    b.partial_fit(X, y, absent_scale=0.3)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        assert np.array_equal(wa, wb)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_restricted_softmax_alpha_is_validated(rng: np.random.Generator, alpha: float) -> None:
    X, y = blobs(rng, n=100, k=3)
    with pytest.raises(ModelError, match="FedRS alpha"):
        small(n_classes=3).partial_fit(X, y, absent_scale=alpha)


def test_restricted_softmax_applies_to_one_call_only(rng: np.random.Generator) -> None:
    """A cached model serves many participants: alpha must not leak into the next call."""
    X, y = blobs(rng, n=600, k=3)
    local = y != 2
    start = small(n_classes=3).fit(X, y).get_weights()
    used = small(n_classes=3).set_weights(start)
    used.partial_fit(X[local], y[local], absent_scale=0.0)
    used.set_weights(start).reseed(0)
    used.partial_fit(X[local], y[local])
    fresh = small(n_classes=3).set_weights(start).reseed(0)
    fresh.partial_fit(X[local], y[local])
    for wa, wb in zip(fresh.get_weights(), used.get_weights(), strict=True):
        assert np.array_equal(wa, wb)


def test_oversampled_rows_repeat_only_the_classes_below_the_minimum() -> None:
    y = np.array([0] * 50 + [1] * 3 + [3] * 40 + [2])
    rows = small(n_classes=4, min_class_rows=10).oversampled_rows(y)
    assert rows is not None
    presented = np.bincount(y[rows.numpy()], minlength=4)
    # class 1: 3 rows x ceil(10 / 3) = 12; class 2: 1 row x 10; the others once
    np.testing.assert_array_equal(presented, [50, 12, 10, 40])
    np.testing.assert_array_equal(np.bincount(rows.numpy(), minlength=y.size)[y == 1], [4, 4, 4])
    assert small(n_classes=4).oversampled_rows(y) is None  # off by default
    assert small(n_classes=4, min_class_rows=1).oversampled_rows(y) is None
    assert small(n_classes=4, min_class_rows=3).oversampled_rows(y[:53]) is None  # none rarer
    # the federation's counts, when given, set the repeats: class 2 held 5 times -> 2 each
    federation = small(n_classes=4, min_class_rows=10).oversampled_rows(y, [500, 30, 5, 400])
    assert federation is not None
    np.testing.assert_array_equal(np.bincount(y[federation.numpy()], minlength=4), [50, 3, 2, 40])
    with pytest.raises(ModelError, match=r"class_totals has shape \(2,\)"):
        small(n_classes=4, min_class_rows=10).oversampled_rows(y, [1, 2])


def test_oversampling_adds_steps_and_keeps_the_example_count(rng: np.random.Generator) -> None:
    X, y = blobs(rng, n=300, k=3)
    y[:2] = 3  # a class of two rows
    m = small(n_classes=4, min_class_rows=32, epochs=2).fit(X, y)
    # 298 rows once + 2 rows x 16 = 330 presented per epoch: ceil(330 / 64) = 6 steps
    assert (m.last_stats_.steps, m.last_stats_.examples, m.n_seen_) == (12, 300, 300)
    plain = small(n_classes=4, epochs=2).fit(X, y)
    assert (plain.last_stats_.steps, plain.last_stats_.examples) == (10, 300)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oversampling_teaches_a_two_row_class(seed: int) -> None:
    """SGD with momentum, as the NSL-KDD recipe trains: a class of two rows among 1,000 (two
    rows of class 0, shifted), held to the weight clip, is not learned in one epoch (P < 0.3
    on its own rows at these seeds); oversampled to 32 rows it is (P > 0.98)."""
    rng = np.random.default_rng(seed)
    X, y = blobs(rng, n=1000, k=3, spread=3.0)
    X = np.concatenate([X, X[y == 0][:2] + 2.0]).astype(np.float32)
    y = np.concatenate([y, [3, 3]])
    kw = {"n_classes": 4, "epochs": 1, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9}
    p_plain = small(**kw).fit(X, y).predict_proba(X[-2:])[:, 3]
    p_over = small(**kw, min_class_rows=32).fit(X, y).predict_proba(X[-2:])[:, 3]
    assert p_over.min() > 0.5 > p_plain.max()


@pytest.mark.parametrize("bad", [-1, 100_001])
def test_min_class_rows_is_validated(bad: int) -> None:
    with pytest.raises(ModelError, match=r"min_class_rows must be in \[0, 100000\]"):
        small(min_class_rows=bad).initialize()
