"""weighted_mean and FedAvg / FedProx: correctness, invariants and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.aggregation import (
    ALGORITHMS,
    FedAvg,
    FedProx,
    ServerAlgorithm,
    make_algorithm,
    weighted_mean,
)
from phalanx.core.errors import AggregationError, ConfigError
from phalanx.core.types import ParticipantId, Update, Weights

SHAPES = [(3, 2), (2,)]


def update(weights: Weights, n: int, who: str = "p", **extras: Weights) -> Update:
    return Update(ParticipantId(who), 1, weights, n, "hash", extras=dict(extras))


def random_weights(rng: np.random.Generator, scale: float = 1.0) -> Weights:
    return [(rng.standard_normal(s) * scale).astype(np.float32) for s in SHAPES]


@st.composite
def participant_sets(draw: st.DrawFn) -> tuple[list[Weights], list[int], list[int]]:
    k = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    weights = [random_weights(rng, scale) for _ in range(k)]
    counts = draw(st.lists(st.integers(1, 10_000), min_size=k, max_size=k))
    perm = draw(st.permutations(list(range(k))))
    return weights, counts, list(perm)


@settings(max_examples=60, deadline=None)
@given(participant_sets())
def test_weighted_mean_is_permutation_invariant_bit_for_bit(
    case: tuple[list[Weights], list[int], list[int]],
) -> None:
    weights, counts, perm = case
    a = weighted_mean(weights, counts)
    b = weighted_mean([weights[i] for i in perm], [counts[i] for i in perm])
    for x, y in zip(a, b, strict=True):
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, y)


@settings(max_examples=60, deadline=None)
@given(participant_sets())
def test_weighted_mean_matches_the_definition(
    case: tuple[list[Weights], list[int], list[int]],
) -> None:
    weights, counts, _ = case
    out = weighted_mean(weights, counts)
    total = sum(counts)
    for layer, got in enumerate(out):
        expected = sum(
            n * w[layer].astype(np.float64) for w, n in zip(weights, counts, strict=True)
        )
        np.testing.assert_allclose(
            got, expected / total, rtol=1e-6, atol=1e-6 * np.abs(expected / total).max()
        )


def test_weighted_mean_hand_computed() -> None:
    a = [np.array([1.0, 2.0], dtype=np.float32)]
    b = [np.array([3.0, 6.0], dtype=np.float32)]
    (out,) = weighted_mean([a, b], [1, 3])
    np.testing.assert_array_equal(out, np.array([2.5, 5.0], dtype=np.float32))


def test_equal_counts_give_the_plain_mean_and_identical_inputs_are_fixed_points(
    rng: np.random.Generator,
) -> None:
    w = random_weights(rng)
    for x, y in zip(weighted_mean([w, w, w], [5, 7, 11]), w, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-7)


def test_zero_count_participant_is_ignored(rng: np.random.Generator) -> None:
    a, b = random_weights(rng), random_weights(rng)
    for x, y in zip(weighted_mean([a, b], [10, 0]), a, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-7)


@pytest.mark.parametrize(
    ("weights", "counts", "match"),
    [
        ([], [], "no updates"),
        ([[np.zeros(2, np.float32)]], [1, 2], "sample counts"),
        ([[np.zeros(2, np.float32)]], [0], "sum to zero"),
        ([[np.zeros(2, np.float32)]], [-1], ">= 0"),
        ([[np.zeros(2, np.float32)], [np.zeros(3, np.float32)]], [1, 1], "#1: layer 0"),
        ([[np.zeros(2, np.float32)], []], [1, 1], "#1 sent 0 layers"),
        ([[np.zeros(2, np.float32)], [np.array([np.nan, 0], np.float32)]], [1, 1], "NaN"),
    ],
)
def test_weighted_mean_errors(weights: list[Weights], counts: list[int], match: str) -> None:
    with pytest.raises(AggregationError, match=match):
        weighted_mean(weights, counts)


def test_fedavg_names_the_participant_with_a_wrong_shape(rng: np.random.Generator) -> None:
    g = random_weights(rng)
    bad = [np.zeros((2, 3), np.float32), np.zeros(2, np.float32)]
    with pytest.raises(AggregationError, match=r"mallory: layer 0 has shape \(2, 3\)"):
        FedAvg().aggregate(g, [update(random_weights(rng), 3, "alice"), update(bad, 3, "mallory")])


def test_fedavg_aggregate_is_the_weighted_mean(rng: np.random.Generator) -> None:
    g = random_weights(rng)
    ups = [update(random_weights(rng), n, f"p{n}") for n in (10, 20, 70)]
    out = FedAvg().aggregate(g, ups)
    expected = weighted_mean([u.weights for u in ups], [10, 20, 70])
    for x, y in zip(out, expected, strict=True):
        np.testing.assert_array_equal(x, y)


def test_fedprox_sends_mu_and_averages_like_fedavg(rng: np.random.Generator) -> None:
    algo = FedProx(proximal_mu=0.1)
    assert algo.task_config() == {"proximal_mu": 0.1}
    assert algo.task_extras() == {}
    g = random_weights(rng)
    ups = [update(random_weights(rng), 5, "a"), update(random_weights(rng), 9, "b")]
    for x, y in zip(algo.aggregate(g, ups), FedAvg().aggregate(g, ups), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_make_algorithm_builds_every_algorithm(name: str, rng: np.random.Generator) -> None:
    algo = make_algorithm(name.upper())
    assert isinstance(algo, ServerAlgorithm)
    assert algo.name == name
    g = random_weights(rng)
    extras = {"control_delta": [np.zeros(s, np.float32) for s in SHAPES]}
    out = algo.aggregate(g, [update(random_weights(rng), 4, "a", **extras)])
    assert [w.shape for w in out] == SHAPES
    assert all(w.dtype == np.float32 for w in out)


def test_make_algorithm_rejects_unknown_names_and_params() -> None:
    with pytest.raises(ConfigError, match="fedavg, fedprox, scaffold, fedavgm, fedadam, fedyogi"):
        make_algorithm("bulyan")
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) mu .*proximal_mu \(default"):
        make_algorithm("fedprox", mu=0.1)
    with pytest.raises(ConfigError, match=r"accepts: classwise_layer \(default -1\)$"):
        make_algorithm("fedavg", server_lr=1.0)
    with pytest.raises(ConfigError, match="accepts: none"):
        make_algorithm("median", server_lr=1.0)
    with pytest.raises(ConfigError, match="must be a number"):
        make_algorithm("fedavgm", server_momentum="0.9")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fedprox", {"proximal_mu": -1.0}),
        ("fedavgm", {"server_momentum": 1.0}),
        ("fedavgm", {"server_lr": 0.0}),
        ("fedadam", {"tau": 0.0}),
        ("fedyogi", {"beta2": 1.5}),
        ("scaffold", {"num_participants": 2.5}),
        ("fedadam", {"server_lr": float("nan")}),
    ],
)
def test_make_algorithm_rejects_out_of_range_values(name: str, params: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        make_algorithm(name, **params)
