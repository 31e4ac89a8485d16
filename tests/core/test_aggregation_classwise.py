"""Class-wise averaging of a classifier's output layer (ADR 0018)."""

from __future__ import annotations

import numpy as np
import pytest

from phalanx.core.aggregation import FedAdam, FedAvg, FedAvgM, FedProx, make_algorithm
from phalanx.core.aggregation.base import weighted_mean
from phalanx.core.aggregation.classwise import COUNTS_KEY, classwise_output
from phalanx.core.errors import AggregationError, ConfigError
from phalanx.core.types import ParticipantId, Update, Weights

N_IN, N_CLASSES = 3, 4


def model(rng: np.random.Generator) -> Weights:
    """A one-hidden-layer classifier: hidden (5, 3) + (5,), output (4, 5) + (4,)."""
    shapes = [(5, N_IN), (5,), (N_CLASSES, 5), (N_CLASSES,)]
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def update(weights: Weights, counts: list[float] | None, who: str, n: int | None = None) -> Update:
    extras = {} if counts is None else {COUNTS_KEY: [np.array(counts, dtype=np.float32)]}
    total = int(sum(counts or [0])) if n is None else n
    return Update(ParticipantId(who), 1, weights, total, "hash", extras=extras)


def test_each_output_row_is_the_mean_over_the_class_holders(rng: np.random.Generator) -> None:
    """Class 1 is held by b alone, class 2 by a alone, class 0 by both (10 and 30 rows), and
    class 3 by nobody: rows 1 and 2 are their holder's, row 0 the 1:3 mix, row 3 (and every
    other layer) the sample-weighted mean."""
    a, b = model(rng), model(rng)
    ups = [update(a, [10, 0, 5, 0], "a"), update(b, [30, 4, 0, 0], "b")]
    plain = weighted_mean([a, b], [15, 34])
    out = classwise_output(plain, ups, 2)
    for layer in (2, 3):
        np.testing.assert_allclose(out[layer][0], (10 * a[layer][0] + 30 * b[layer][0]) / 40,
                                   rtol=1e-6)  # fmt: skip
        np.testing.assert_array_equal(out[layer][1], b[layer][1])
        np.testing.assert_array_equal(out[layer][2], a[layer][2])
        np.testing.assert_array_equal(out[layer][3], plain[layer][3])
    for layer in (0, 1):
        np.testing.assert_array_equal(out[layer], plain[layer])
    assert all(x.dtype == np.float32 for x in out)


def test_counts_proportional_to_the_sample_weights_give_fedavg(rng: np.random.Generator) -> None:
    ups = [update(model(rng), [n, 2 * n, 3 * n, n], f"p{n}") for n in (1, 4, 9)]
    plain = FedAvg().aggregate(ups[0].weights, ups)
    classwise = FedAvg(classwise_layer=2).aggregate(ups[0].weights, ups)
    for x, y in zip(plain, classwise, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("extras", "n", "match"),
    [
        (None, 5, "sent no extras\\['class_counts'\\]"),
        ([1.0, 2.0], 5, "shape \\(2,\\); expected \\(4,\\)"),
        ([1.0, -1.0, 0.0, 0.0], 5, "negative or non-finite"),
        ([1.0, np.nan, 0.0, 0.0], 5, "negative or non-finite"),
        ([4.0, 3.0, 0.0, 0.0], 5, "sums to 7 rows but the update reports 5"),
    ],
)
def test_bad_counts_name_the_participant(
    rng: np.random.Generator, extras: list[float] | None, n: int, match: str
) -> None:
    w = model(rng)
    bad = update(w, extras, "org-7", n=n)
    good = update(w, [1, 1, 1, 1], "org-1")
    with pytest.raises(AggregationError, match="org-7") as err:
        FedAvg(classwise_layer=2).aggregate(w, [good, bad])
    assert err.match(match)


def test_a_layer_that_is_not_an_output_layer_is_refused(rng: np.random.Generator) -> None:
    w = model(rng)
    ups = [update(w, [1, 1, 1, 1], "a")]
    with pytest.raises(AggregationError, match="shapes"):
        classwise_output(w, ups, 1)  # (5,) and (4, 5): not a weight and its bias
    with pytest.raises(AggregationError, match="model has 4 arrays"):
        classwise_output(w, ups, 3)


def test_algorithms_ask_for_counts_and_stop_streaming_only_when_on() -> None:
    assert FedAvg().task_config() == {} and FedAvg().streamable
    on = FedAvg(classwise_layer=2)
    assert on.task_config() == {COUNTS_KEY: 1.0} and not on.streamable
    assert FedProx(0.1, classwise_layer=2).task_config() == {"proximal_mu": 0.1, COUNTS_KEY: 1.0}
    for algo in (FedAvgM(classwise_layer=2), FedAdam(classwise_layer=2)):
        assert algo.task_config() == {COUNTS_KEY: 1.0} and not algo.streamable
    assert make_algorithm("fedyogi", classwise_layer=4).classwise_layer == 4  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="classwise_layer"):
        make_algorithm("scaffold", classwise_layer=2)
    with pytest.raises(ConfigError, match="whole array index"):
        FedAvg(classwise_layer=1.5)
    with pytest.raises(ConfigError, match="classwise_layer must be in"):
        FedAvg(classwise_layer=-2)


def test_fedadam_steps_from_the_class_wise_mean(rng: np.random.Generator) -> None:
    """The adaptive step's pseudo-gradient is the class-wise mean minus the global weights: a
    class only one participant holds moves only the way that participant moved it."""
    g = model(rng)
    a = [x.copy() for x in g]
    b = [x.copy() for x in g]
    a[3][1] += 1.0  # a raises class 1's bias; b, which lacks class 1, lowers it
    b[3][1] -= 1.0
    ups = [update(a, [5, 5, 0, 0], "a"), update(b, [50, 0, 0, 0], "b")]
    plain = FedAdam(server_lr=0.1).aggregate(g, ups)
    classwise = FedAdam(server_lr=0.1, classwise_layer=2).aggregate(g, ups)
    assert plain[3][1] < g[3][1] < classwise[3][1]


def test_a_secure_sum_gives_the_class_wise_rows_and_each_buckets_counts(
    rng: np.random.Generator,
) -> None:
    """Under secure aggregation the output rows ride in the masked vector, scaled by each
    participant's per-class weight: the decoded bucket equals the plain class-wise mean, and its
    per-class weights are the bucket's rows per class over the weight cap."""
    from phalanx.core.secagg.params import InstanceParams
    from phalanx.core.secagg.vectors import decode_fit, encode_fit, fit_length

    g = model(rng)
    a = [(x + rng.standard_normal(x.shape)).astype(np.float32) for x in g]
    b = [(x + rng.standard_normal(x.shape)).astype(np.float32) for x in g]
    counts = {"a": [10.0, 0.0, 5.0, 0.0], "b": [30.0, 4.0, 0.0, 0.0]}
    length = fit_length(g, 2)
    assert length == sum(x.size for x in g) + 1 + N_CLASSES * (5 + 1) + N_CLASSES
    params = InstanceParams(
        "r1-fit-cw", "fit", ((ParticipantId("a"), ParticipantId("b")),), 1, 0, 32, 2.0**16,
        100.0, 100, length, classwise_layer=2,
    )  # fmt: skip
    words = [
        encode_fit(params, w, g, int(sum(counts[p])), None, np.array(counts[p]))
        for p, w in (("a", a), ("b", b))
    ]
    total = (words[0].astype(np.uint64) + words[1]).astype(np.uint32)  # the ring sum
    decoded = decode_fit(params, total, g)
    assert decoded is not None and decoded.class_weights is not None
    np.testing.assert_allclose(decoded.class_weights * 100, [40, 4, 5, 0], atol=1e-3)
    ups = [update(a, counts["a"], "a"), update(b, counts["b"], "b")]
    expected = FedAvg(classwise_layer=2).aggregate(g, ups)
    for x, y in zip(decoded.weights, expected, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-3)
    with pytest.raises(Exception, match="no class counts"):
        encode_fit(params, a, g, 15, None)
