"""Record-level DP-SGD: per-example gradients, clipping, noise, and the schedule charged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.nn import functional as F

from phalanx.core.errors import ConfigError, ModelError, PrivacyError
from phalanx.core.privacy import record_schedule
from phalanx.core.privacy.spec import DPTaskSpec, class_inclusion_rates
from phalanx.models.autoencoder import AutoencoderDetector
from phalanx.models.dpsgd import _example_grads, dp_sgd_fit, poisson_sample
from phalanx.models.federated import local_train
from phalanx.models.mlp import CLASS_WEIGHT_CLIP, MLPClassifier


def _data(rng: np.random.Generator, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) * 2
    return x, y


def test_per_example_gradients_equal_one_backward_pass_per_example(
    rng: np.random.Generator,
) -> None:
    model = MLPClassifier(6, hidden=(5,), class_weight="balanced").initialize()
    x, y = _data(rng, 8)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model._prepare_loss(yt)
    net = model.net_
    params = {k: p.detach() for k, p in net.named_parameters()}
    grads, losses = _example_grads(net, model._loss_weight, None, smoothing=0.0,
                                   autoencoder=False)(params, xt, yt)  # fmt: skip
    for i in range(8):
        net.zero_grad()
        loss = F.cross_entropy(net(xt[i : i + 1]), yt[i : i + 1], weight=model._loss_weight,
                               reduction="sum")  # fmt: skip
        loss.backward()  # type: ignore[no-untyped-call]
        assert float(losses[i]) == pytest.approx(float(loss.detach()), rel=1e-5)
        for k, p in net.named_parameters():
            torch.testing.assert_close(grads[k][i], p.grad, rtol=1e-5, atol=1e-6)


def test_one_step_moves_the_weights_by_at_most_lr_times_c(rng: np.random.Generator) -> None:
    """Full batch (q = 1), plain SGD, negligible noise: the averaged clipped gradient has norm
    <= C, so one step moves the weights by <= lr * C however large the raw gradients are."""
    x, y = _data(rng, 64)
    x *= 1000.0  # huge gradients: every one is clipped
    model = MLPClassifier(6, hidden=(5,), batch_size=64, optimizer="sgd", lr=0.1).initialize()
    before = model.get_weights()
    run = dp_sgd_fit(model, x, y, epochs=1, noise_multiplier=1e-9, max_grad_norm=0.5, rng=rng)
    assert (run.sampling_rate, run.steps) == (1.0, 1)
    assert run.clipped_fraction > 0.9
    moved = np.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in
                        zip(model.get_weights(), before, strict=True)))  # fmt: skip
    assert 0.0 < moved <= 0.1 * 0.5 * (1 + 1e-4)


def test_noise_dominates_when_the_multiplier_is_large(rng: np.random.Generator) -> None:
    x, y = _data(rng, 64)
    model = MLPClassifier(6, hidden=(5,), batch_size=64, optimizer="sgd", lr=1.0).initialize()
    before = model.get_weights()
    dp_sgd_fit(model, x, y, epochs=1, noise_multiplier=1000.0, max_grad_norm=1.0, rng=rng)
    step = np.concatenate([(a - b).ravel() for a, b in zip(model.get_weights(), before,
                                                            strict=True)])  # fmt: skip
    # noise std per coordinate: z * C / (q n) = 1000 / 64
    assert abs(step.std() - 1000.0 / 64) < 0.25 * 1000.0 / 64


def test_a_diverging_dp_sgd_run_is_an_error(rng: np.random.Generator) -> None:
    x, y = _data(rng, 64)
    model = MLPClassifier(6, hidden=(5,), batch_size=64, optimizer="sgd", lr=1e30).initialize()
    with pytest.raises(ModelError, match=r"training diverged: the mean loss of the DP-SGD run"):
        dp_sgd_fit(model, x, y, epochs=3, noise_multiplier=1000.0, max_grad_norm=1.0, rng=rng)


def test_schedule_is_the_one_the_accountant_charges(rng: np.random.Generator) -> None:
    x, y = _data(rng, 1000)
    model = MLPClassifier(6, hidden=(5,), batch_size=128).initialize()
    run = dp_sgd_fit(model, x, y, epochs=2, noise_multiplier=1.0, max_grad_norm=1.0, rng=rng)
    assert (run.sampling_rate, run.steps) == record_schedule(1000, 128, 2)
    assert model.last_stats_.steps == run.steps


def test_autoencoder_trains_on_benign_rows_only(rng: np.random.Generator) -> None:
    x, y = _data(rng, 200)
    model = AutoencoderDetector(6, hidden=(4, 2), batch_size=32).initialize()
    run = dp_sgd_fit(model, x, y, epochs=1, noise_multiplier=1.0, max_grad_norm=1.0, rng=rng)
    benign = int((y == 0).sum())
    assert run.sampling_rate == pytest.approx(32 / benign)


def test_local_train_runs_dp_sgd_from_the_task_config(rng: np.random.Generator) -> None:
    x, y = _data(rng, 400)
    model = MLPClassifier(6, hidden=(5,), batch_size=100).initialize()
    config = {"local_epochs": 1, "dp": {"mode": "record", "clip": 1.0, "noise_multiplier": 1.3}}
    _weights, n, metrics, extras = local_train(model, x, y, config, {}, noise_rng=rng)
    assert n == 400 and extras == {}
    assert metrics["dp_sampling_rate"] == 0.25 and metrics["dp_steps"] == 4.0
    assert metrics["dp_noise_multiplier"] == 1.3
    with pytest.raises(ConfigError, match="SCAFFOLD"):
        local_train(model, x, y, {**config, "scaffold": 1.0}, {}, state={}, noise_rng=rng)
    bad = {"dp": {"mode": "record", "clip": 1.0, "target_epsilon": 3.0}}
    with pytest.raises(ConfigError, match="no noise_multiplier"):
        local_train(model, x, y, bad, {}, noise_rng=rng)


def test_bad_parameters_are_refused(rng: np.random.Generator) -> None:
    x, y = _data(rng, 50)
    model = MLPClassifier(6, hidden=(5,)).initialize()
    with pytest.raises(ConfigError, match="noise_multiplier"):
        dp_sgd_fit(model, x, y, epochs=1, noise_multiplier=0.0, max_grad_norm=1.0, rng=rng)
    with pytest.raises(ConfigError, match="max_grad_norm"):
        dp_sgd_fit(model, x, y, epochs=1, noise_multiplier=1.0, max_grad_norm=-1.0, rng=rng)
    before = [w.copy() for w in model.get_weights()]
    oversampling = MLPClassifier(6, hidden=(5,), min_class_rows=32).set_weights(before)
    with pytest.raises(ConfigError, match="min_class_rows = 32") as err:
        dp_sgd_fit(oversampling, x, y, epochs=1, noise_multiplier=1.0, max_grad_norm=1.0, rng=rng)
    assert "class_balance" in str(err.value.hint)
    for w, w0 in zip(oversampling.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, w0)  # refused before any step


@given(
    counts=st.lists(st.integers(0, 5000), min_size=1, max_size=12),
    q=st.floats(1e-4, 1.0),
    balance=st.floats(0.0, 1.0),
)
def test_class_rates_never_exceed_the_accounted_rate(
    counts: list[int], q: float, balance: float
) -> None:
    arr = np.asarray(counts, dtype=np.int64)
    rates = class_inclusion_rates(arr, q, weight_bounds=CLASS_WEIGHT_CLIP, balance=balance)
    assert rates.shape == arr.shape
    assert (rates >= 0).all() and (rates <= q).all()
    assert (rates[arr == 0] == 0).all()
    if (arr > 0).any():
        present = rates[arr > 0]
        assert present.max() == pytest.approx(q) and (present > 0).all()
        # rarer classes are never sampled less often than commoner ones
        order = np.argsort(arr[arr > 0], kind="stable")
        assert (np.diff(present[order]) <= 1e-12).all()
    if balance == 0.0:
        assert np.allclose(rates[arr > 0], q)


def test_balanced_rates_follow_the_balanced_class_weights() -> None:
    model = MLPClassifier(6, hidden=(5,), n_classes=3)
    y = np.array([0] * 80 + [1] * 15 + [2] * 5)
    w = model.class_weights(y).astype(np.float64)
    rates = class_inclusion_rates(np.bincount(y), 0.5, weight_bounds=CLASS_WEIGHT_CLIP)
    np.testing.assert_allclose(rates, 0.5 * w / w.max(), rtol=1e-6)


def test_bad_class_rate_inputs_are_refused() -> None:
    with pytest.raises(PrivacyError, match="class counts"):
        class_inclusion_rates(np.array([3, -1]), 0.5)
    with pytest.raises(PrivacyError, match="sampling rate"):
        class_inclusion_rates(np.array([3, 1]), 1.5)
    with pytest.raises(PrivacyError, match="balance"):
        class_inclusion_rates(np.array([3, 1]), 0.5, balance=2.0)
    with pytest.raises(PrivacyError, match="class_balance"):
        DPTaskSpec.from_config({"dp": {"mode": "record", "clip": 1.0, "noise_multiplier": 1.0,
                                       "class_balance": -0.5}})  # fmt: skip


def test_poisson_sample_includes_each_example_at_its_rate(rng: np.random.Generator) -> None:
    rates = np.repeat([0.5, 0.05], 200)
    hits = np.zeros(400)
    for _ in range(2000):
        hits[poisson_sample(rates, 400, rng)] += 1
    freq = hits / 2000
    # binomial std of a class mean: sqrt(q (1 - q) / (200 * 2000)) < 1e-3
    assert abs(freq[:200].mean() - 0.5) < 0.005
    assert abs(freq[200:].mean() - 0.05) < 0.005


def test_balanced_classifier_samples_by_class_and_reports_the_accounted_rate(
    rng: np.random.Generator,
) -> None:
    x = rng.normal(size=(1000, 6)).astype(np.float32)
    y = np.array([0] * 900 + [1] * 80 + [2] * 20)
    model = MLPClassifier(6, hidden=(5,), batch_size=100, class_weight="balanced").initialize()
    run = dp_sgd_fit(
        model, x, y, epochs=1, noise_multiplier=1.0, max_grad_norm=1.0, rng=rng, class_balance=1.0
    )
    q, steps = record_schedule(1000, 100, 1)
    assert (run.sampling_rate, run.steps) == (q, steps)
    expected = class_inclusion_rates(
        np.bincount(y, minlength=11), q, weight_bounds=CLASS_WEIGHT_CLIP
    )
    np.testing.assert_allclose(run.class_rates, expected)
    assert max(run.class_rates) == pytest.approx(q) and run.class_rates[0] < run.class_rates[2]
    uniform = dp_sgd_fit(model, x, y, epochs=1, noise_multiplier=1.0, max_grad_norm=1.0,
                         rng=rng, class_balance=0.0)  # fmt: skip
    np.testing.assert_allclose(uniform.class_rates[:3], q)
    plain = MLPClassifier(6, hidden=(5,), batch_size=100, class_weight=None).initialize()
    run = dp_sgd_fit(plain, x, y, epochs=1, noise_multiplier=1.0, max_grad_norm=1.0, rng=rng)
    assert run.class_rates == ()
