"""Stateful server algorithms: FedAvgM, FedAdam, FedYogi and SCAFFOLD."""

from __future__ import annotations

import numpy as np
import pytest

from phalanx.core.aggregation import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedYogi,
    Scaffold,
    make_algorithm,
)
from phalanx.core.errors import AggregationError, ConfigError
from phalanx.core.types import ParticipantId, Update, Weights


def w(*values: float) -> Weights:
    return [np.array(values, dtype=np.float32)]


def update(weights: Weights, n: int, who: str = "p", **extras: Weights) -> Update:
    return Update(ParticipantId(who), 1, weights, n, "hash", extras=dict(extras))


def test_fedavgm_without_momentum_and_unit_lr_is_fedavg(rng: np.random.Generator) -> None:
    g = [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
    algo = FedAvgM(server_lr=1.0, server_momentum=0.0)
    for _ in range(3):
        ups = [
            update([(x + rng.standard_normal(x.shape)).astype(np.float32) for x in g], n, f"p{n}")
            for n in (3, 5, 8)
        ]
        out = algo.aggregate(g, ups)
        for a, b in zip(out, FedAvg().aggregate(g, ups), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        g = out


def test_fedavgm_momentum_hand_computed() -> None:
    algo = FedAvgM(server_lr=0.5, server_momentum=0.9)
    # round 1: d = 1 - 3 = -2; v = -2; x = 1 - 0.5 * -2 = 2
    (x1,) = algo.aggregate(w(1.0), [update(w(3.0), 1)])
    assert x1[0] == pytest.approx(2.0)
    # round 2: d = 2 - 3 = -1; v = 0.9 * -2 - 1 = -2.8; x = 2 + 1.4 = 3.4
    (x2,) = algo.aggregate([x1], [update(w(3.0), 1)])
    assert x2[0] == pytest.approx(3.4)
    assert set(algo.state()) == {"velocity"}


@pytest.mark.parametrize("cls", [FedAdam, FedYogi])
def test_adaptive_servers_move_toward_the_mean(cls: type[FedAdam]) -> None:
    algo = cls(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    target = w(1.0, -2.0, 0.5)
    x = w(0.0, 0.0, 0.0)
    dist = [float(np.abs(x[0] - target[0]).max())]
    for _ in range(40):
        x = algo.aggregate(x, [update(target, 10, "a"), update(target, 30, "b")])
        dist.append(float(np.abs(x[0] - target[0]).max()))
    assert dist[1] < dist[0]
    assert dist[-1] < 0.2 * dist[0]
    # the first step has the sign of the pseudo-gradient in every coordinate
    first = cls(server_lr=0.1).aggregate(w(0.0, 0.0, 0.0), [update(target, 1)])
    np.testing.assert_array_equal(np.sign(first[0]), np.sign(target[0]))


def test_fedadam_first_step_hand_computed() -> None:
    # d = 2; m = 0.1 * 2 = 0.2; v = 0.99 * tau^2 + 0.01 * 4; x = 0.5 * m / (sqrt(v) + tau)
    algo = FedAdam(server_lr=0.5, beta1=0.9, beta2=0.99, tau=1e-3)
    (x,) = algo.aggregate(w(0.0), [update(w(2.0), 1)])
    v = 0.99 * 1e-6 + 0.01 * 4.0
    assert x[0] == pytest.approx(0.5 * 0.2 / (np.sqrt(v) + 1e-3), rel=1e-5)


def test_fedyogi_second_moment_hand_computed() -> None:
    algo = FedYogi(server_lr=0.5, beta1=0.0, beta2=0.9, tau=1e-3)
    algo.aggregate(w(0.0), [update(w(2.0), 1)])
    # v0 = tau^2 < d^2 = 4, so v = v0 + 0.1 * 4
    assert algo.state()["v"][0][0] == pytest.approx(1e-6 + 0.4, rel=1e-5)


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi", "scaffold"])
def test_state_roundtrip_resumes_identically(name: str, rng: np.random.Generator) -> None:
    def ups(seed: int) -> list[Update]:
        r = np.random.default_rng(seed)
        return [
            update(w(*r.standard_normal(3)), 2, "a", control_delta=w(*r.standard_normal(3))),
            update(w(*r.standard_normal(3)), 5, "b", control_delta=w(*r.standard_normal(3))),
        ]

    a = make_algorithm(name)
    g = w(*rng.standard_normal(3))
    g = a.aggregate(g, ups(1))
    b = make_algorithm(name)
    b.load_state(a.state())
    assert b.task_extras().keys() == a.task_extras().keys()
    np.testing.assert_array_equal(a.aggregate(g, ups(2))[0], b.aggregate(g, ups(2))[0])


def test_load_state_refuses_another_algorithms_state() -> None:
    with pytest.raises(AggregationError, match=r"fedadam state has keys \['velocity'\]"):
        FedAdam().load_state({"velocity": w(1.0)})


def test_scaffold_control_update_arithmetic() -> None:
    algo = Scaffold(num_participants=4)
    assert algo.task_config() == {"scaffold": 1.0}
    assert algo.task_extras() == {}  # c = 0 before the first aggregation
    x = w(0.0, 0.0)
    ups = [
        update(w(1.0, 2.0), 1, "a", control_delta=w(0.4, -0.8)),
        update(w(3.0, 4.0), 3, "b", control_delta=w(1.2, 0.4)),
    ]
    (new_x,) = algo.aggregate(x, ups)
    np.testing.assert_allclose(new_x, [2.5, 3.5])  # sample-weighted mean, server_lr 1
    # c = 0 + (|S| / N) * mean(delta) = (2 / 4) * [0.8, -0.2]
    (c,) = algo.task_extras()["control"]
    np.testing.assert_allclose(c, [0.4, -0.1], rtol=1e-6)
    # second round accumulates
    algo.aggregate([new_x], [update(w(0.0, 0.0), 1, "c", control_delta=w(4.0, 4.0))])
    np.testing.assert_allclose(algo.task_extras()["control"][0], [1.4, 0.9], rtol=1e-6)


def test_scaffold_server_lr_scales_the_step() -> None:
    (x,) = Scaffold(server_lr=0.5).aggregate(w(1.0), [update(w(3.0), 1, control_delta=w(0.0))])
    assert x[0] == pytest.approx(2.0)


def test_scaffold_errors() -> None:
    with pytest.raises(AggregationError, match=r"bob sent no extras\['control_delta'\]"):
        Scaffold().aggregate(w(0.0), [update(w(1.0), 1, "bob")])
    with pytest.raises(AggregationError, match="bob control_delta: layer 0"):
        Scaffold().aggregate(w(0.0), [update(w(1.0), 1, "bob", control_delta=w(1.0, 2.0))])
    two = [update(w(1.0), 1, f"p{i}", control_delta=w(0.0)) for i in range(2)]
    with pytest.raises(AggregationError, match="num_participants is 1"):
        Scaffold(num_participants=1).aggregate(w(0.0), two)


def test_updates_must_match_the_global_layout() -> None:
    with pytest.raises(AggregationError, match="a: layer 0 has shape"):
        FedAvgM().aggregate(w(0.0), [update(w(1.0, 2.0), 1, "a")])


@pytest.mark.parametrize("cls", [FedAdam, FedYogi])
def test_adaptive_layers_limits_the_adaptive_step_to_the_leading_layers(
    cls: type[FedAdam], rng: np.random.Generator
) -> None:
    """With adaptive_layers = 1, layer 0 follows the full algorithm and layer 1 the FedAvg mean,
    round after round (the moments of the plain layer are kept but not used)."""
    g = [rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal(4).astype(np.float32)]
    split, full = cls(adaptive_layers=1), cls()
    g_split, g_full = g, g
    for rnd in range(3):
        noise = [rng.standard_normal(x.shape).astype(np.float32) for x in g]
        ups_split = [update([x + k * d for x, d in zip(g_split, noise, strict=True)], 2 + k,
                            f"p{k}") for k in range(3)]  # fmt: skip
        ups_full = [update([x + k * d for x, d in zip(g_full, noise, strict=True)], 2 + k,
                           f"p{k}") for k in range(3)]  # fmt: skip
        out = split.aggregate(g_split, ups_split)
        mean = FedAvg().aggregate(g_split, ups_split)
        np.testing.assert_allclose(out[1], mean[1], rtol=1e-6, atol=1e-6)
        g_full = full.aggregate(g_full, ups_full)
        np.testing.assert_allclose(out[0], g_full[0], rtol=1e-6, atol=1e-6)
        if rnd == 0:  # same start: the full algorithm's step on layer 1 is not the mean
            assert not np.allclose(g_full[1], mean[1])
        g_split = out


def test_adaptive_layers_is_validated() -> None:
    with pytest.raises(ConfigError, match="whole number"):
        FedAdam(adaptive_layers=1.5)
    with pytest.raises(ConfigError, match="adaptive_layers must be in"):
        FedAdam(adaptive_layers=-1)
    with pytest.raises(AggregationError, match="the model has 1 layers"):
        FedAdam(adaptive_layers=2).aggregate(w(0.0), [update(w(1.0), 1)])
    assert make_algorithm("fedadam", adaptive_layers=3.0).adaptive_layers == 3  # type: ignore[attr-defined]
