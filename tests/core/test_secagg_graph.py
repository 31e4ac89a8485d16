"""The SecAgg+ neighbour graph: regular, symmetric, seeded, complete when small."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.errors import ConfigError
from phalanx.core.secagg.graph import default_degree, default_threshold, neighbours
from phalanx.core.types import ParticipantId


def _ids(n: int) -> list[ParticipantId]:
    return [ParticipantId(f"p{i:03d}") for i in range(n)]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 200), seed=st.integers(0, 1000))
def test_the_default_graph_is_regular_symmetric_and_logarithmic(n: int, seed: int) -> None:
    k = default_degree(n)
    graph = neighbours(_ids(n), k, seed)
    degrees = {len(v) for v in graph.values()}
    assert len(degrees) == 1
    (d,) = degrees
    assert d == min(n - 1, k)
    for p, near in graph.items():
        assert p not in near
        assert all(p in graph[q] for q in near)
    t = default_threshold(d)
    assert 2 * t > d + 1  # a majority of the d + 1 holders
    if n >= 64:
        assert d <= 2 * (1.5 * n.bit_length() + 1)


def test_the_graph_depends_on_the_seed_not_on_the_order() -> None:
    ids = _ids(50)
    assert neighbours(ids, 10, 1) == neighbours(list(reversed(ids)), 10, 1)
    assert neighbours(ids, 10, 1) != neighbours(ids, 10, 2)


def test_small_buckets_get_the_complete_graph_and_bad_input_is_refused() -> None:
    graph = neighbours(_ids(5), 10, 0)
    assert all(len(v) == 4 for v in graph.values())
    with pytest.raises(ConfigError, match="twice"):
        neighbours([ParticipantId("a"), ParticipantId("a")], 1, 0)
    with pytest.raises(ConfigError, match="degree"):
        neighbours(_ids(4), 0, 0)
