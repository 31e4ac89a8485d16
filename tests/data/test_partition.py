"""Partitioners: every row exactly once, reproducible, the promised skew."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.errors import ConfigError
from phalanx.core.taxonomy import CATEGORIES
from phalanx.data.partition import (
    PartitionSpec,
    category_matrix,
    dirichlet,
    families,
    iid,
    parse_partition,
    quantity,
)

CATS = ["benign", "dos", "recon", "web-attack", "botnet-c2", "ddos"]


@st.composite
def labelled(draw: st.DrawFn) -> tuple[np.ndarray, int, int]:
    n_parts = draw(st.integers(1, 8))
    n_rows = draw(st.integers(n_parts * 3, 400))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(len(CATS)))
    return rng.choice(np.array(CATS, dtype=object), n_rows, p=probs), n_parts, seed


def schemes(labels: np.ndarray, n: int, seed: int) -> dict[str, list[np.ndarray]]:
    def r() -> np.random.Generator:
        return np.random.default_rng(seed)

    return {
        "iid": iid(labels, n, r()),
        "dirichlet": dirichlet(labels, n, 0.3, r(), min_rows=3),
        "families": families(labels, n, 2, r()),
        "quantity": quantity(labels, n, 0.5, r()),
    }


@settings(max_examples=60, deadline=None)
@given(labelled())
def test_every_row_once_and_reproducible(case: tuple[np.ndarray, int, int]) -> None:
    labels, n, seed = case
    first = schemes(labels, n, seed)
    again = schemes(labels, n, seed)
    for name, parts in first.items():
        assert len(parts) == n, name
        rows = np.concatenate(parts)
        assert np.array_equal(np.sort(rows), np.arange(len(labels))), name
        for a, b in zip(parts, again[name], strict=True):
            assert np.array_equal(a, b), name
    assert min(p.size for p in first["dirichlet"]) >= 3
    assert min(p.size for p in first["quantity"]) >= 1
    m = category_matrix(labels, first["families"], CATEGORIES)
    attacks = [CATEGORIES.index(c) for c in set(labels.tolist()) - {"benign"}]
    assert np.all(m[:, attacks].sum(axis=0) > 0)  # every attack category reaches someone


def test_families_gives_k_attack_categories(rng: np.random.Generator) -> None:
    labels = rng.choice(np.array(CATS, dtype=object), 5000)
    parts = families(labels, 5, 2, rng)
    m = category_matrix(labels, parts)
    attack_cols = [CATEGORIES.index(c) for c in CATS if c != "benign"]
    assert np.all((m[:, attack_cols] > 0).sum(axis=1) == 2)
    assert np.all(m[:, CATEGORIES.index("benign")] > 0)


def test_dirichlet_skews_labels(rng: np.random.Generator) -> None:
    labels = rng.choice(np.array(CATS, dtype=object), 20_000)
    skewed = category_matrix(labels, dirichlet(labels, 6, 0.1, rng))
    even = category_matrix(labels, iid(labels, 6, rng))

    def spread(m: np.ndarray) -> float:
        share = m / m.sum(axis=1, keepdims=True)
        return float(share[:, m.sum(axis=0) > 0].std(axis=0).mean())

    assert spread(skewed) > 5 * spread(even)


def test_quantity_sizes_vary(rng: np.random.Generator) -> None:
    sizes = [p.size for p in quantity(10_000, 8, 0.3, rng)]
    assert max(sizes) > 3 * min(sizes)


def test_parse_partition() -> None:
    assert parse_partition("iid") == PartitionSpec("iid")
    assert parse_partition("dirichlet:0.5") == PartitionSpec("dirichlet", 0.5)
    assert parse_partition(" Families:3 ") == PartitionSpec("families", 3.0)
    assert parse_partition("quantity:1.0") == PartitionSpec("quantity", 1.0)
    for bad in (
        "",
        "dirichlet",
        "dirichlet:",
        "dirichlet:-1",
        "dirichlet:nan",
        "families:0",
        "families:1.5",
        "iid:2",
        "shards:4",
        "quantity:x",
    ):
        with pytest.raises(ConfigError):
            parse_partition(bad)


def test_spec_apply(rng: np.random.Generator) -> None:
    labels = rng.choice(np.array(CATS, dtype=object), 1000)
    for spec in ("iid", "dirichlet:0.5", "families:2", "quantity:1.0"):
        parts = parse_partition(spec).apply(labels, 4, rng)
        assert sum(p.size for p in parts) == 1000
        assert sum(p.size for p in parse_partition(spec)(labels, 4, rng)) == 1000


def test_errors(rng: np.random.Generator) -> None:
    with pytest.raises(ConfigError):
        iid(5, 6, rng)
    with pytest.raises(ConfigError):
        dirichlet(np.array(["benign"] * 20), 3, 0.5, rng, min_rows=10)
    with pytest.raises(ConfigError):
        category_matrix(np.array(["nonsense"]), [np.array([0])])
