"""The synthetic traffic generator: determinism, schema, plausibility, families, profiles."""

from __future__ import annotations

import numpy as np
import pytest

from phalanx.core.errors import ConfigError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.taxonomy import CATEGORIES
from phalanx.data.schemas import NETFLOW_V2
from phalanx.data.synthetic import (
    ATTACK_FAMILIES,
    DEFAULT_START,
    PROFILES,
    TIMESTAMP,
    format_ipv4,
    generate,
    generate_day,
    generate_federation,
)

COLS = {name: j for j, name in enumerate(NETFLOW_V2.numeric)}
HIST = [c for c in NETFLOW_V2.numeric if c.startswith("NUM_PKTS_")]


def col(b: FlowBatch, name: str) -> np.ndarray:
    return b.numeric[:, COLS[name]]


@pytest.fixture(scope="module")
def batches() -> dict[str, FlowBatch]:
    return {p: generate(p, 20_000, np.random.default_rng(i)) for i, p in enumerate(PROFILES)}


def assert_same(a: FlowBatch, b: FlowBatch) -> None:
    np.testing.assert_array_equal(a.numeric, b.numeric)
    np.testing.assert_array_equal(a.categorical, b.categorical)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.identifiers.keys() == b.identifiers.keys()
    for k in a.identifiers:
        np.testing.assert_array_equal(a.identifiers[k], b.identifiers[k])


def test_deterministic() -> None:
    a = generate("office", 3000, np.random.default_rng(5))
    b = generate("office", 3000, np.random.default_rng(5))
    assert_same(a, b)
    c = generate("office", 3000, np.random.default_rng(6))
    assert not np.array_equal(a.numeric, c.numeric)


def test_federation_spawns_per_org_generators() -> None:
    fed = generate_federation(3, 1000, seed=11)
    again = generate_federation(4, 1000, seed=11)
    for a, b in zip(fed, again, strict=False):
        assert_same(a, b)
    assert [len(b) for b in fed] == [1000] * 3
    assert {b.label[0] for b in fed} <= {"benign", *ATTACK_FAMILIES}


def test_schema_and_types(batches: dict[str, FlowBatch]) -> None:
    for b in batches.values():
        assert b.schema.hash() == NETFLOW_V2.hash()
        assert b.numeric.shape == (20_000, len(NETFLOW_V2.numeric))
        assert b.categorical.shape == (20_000, len(NETFLOW_V2.categorical))
        assert not np.isnan(b.numeric).any()
        assert np.isfinite(b.numeric).all()
        for name in (*NETFLOW_V2.identifiers, TIMESTAMP):
            assert b.identifiers[name].shape == (20_000,)
        assert b.identifiers["IPV4_SRC_ADDR"].dtype == np.uint32
        ts = b.identifiers[TIMESTAMP]
        assert np.all(np.diff(ts) >= 0)
        assert ts[0] >= DEFAULT_START * 1000
        assert ts[-1] < (DEFAULT_START + 86_400) * 1000
        assert set(b.categorical[:, 1]) <= {"1", "6", "17"}
        assert all(v.isdigit() for v in b.categorical[:1000, 0])
        assert all(v.replace(".", "").isdigit() for v in b.categorical[:1000, 2])
        assert set(b.category) <= set(CATEGORIES)
        assert all(
            ATTACK_FAMILIES.get(lab, "benign") == cat
            for lab, cat in zip(b.label[:2000], b.category[:2000], strict=True)
        )


def test_values_plausible(batches: dict[str, FlowBatch]) -> None:
    for b in batches.values():
        pkts = col(b, "IN_PKTS") + col(b, "OUT_PKTS")
        hist = np.column_stack([col(b, h) for h in HIST])
        np.testing.assert_array_equal(hist.sum(axis=1), pkts)
        assert np.all(col(b, "IN_PKTS") >= 1)
        assert np.all(col(b, "IN_BYTES") >= 28 * col(b, "IN_PKTS"))
        assert np.all(col(b, "OUT_BYTES") >= 28 * col(b, "OUT_PKTS"))
        assert np.all(col(b, "LONGEST_FLOW_PKT") <= 1500)
        assert np.all(col(b, "SHORTEST_FLOW_PKT") <= col(b, "LONGEST_FLOW_PKT"))
        assert np.all(col(b, "IN_BYTES") <= col(b, "IN_PKTS") * col(b, "LONGEST_FLOW_PKT"))
        assert np.all(col(b, "MIN_TTL") <= col(b, "MAX_TTL"))
        assert np.all(col(b, "DURATION_IN") <= col(b, "FLOW_DURATION_MILLISECONDS"))
        assert np.all(col(b, "RETRANSMITTED_IN_PKTS") <= col(b, "IN_PKTS"))
        flags = col(b, "TCP_FLAGS").astype(int)
        both = col(b, "CLIENT_TCP_FLAGS").astype(int) | col(b, "SERVER_TCP_FLAGS").astype(int)
        np.testing.assert_array_equal(flags, both)
        not_tcp = b.categorical[:, 1] != "6"
        assert np.all(flags[not_tcp] == 0)
        assert np.all(col(b, "TCP_WIN_MAX_IN")[not_tcp] == 0)
        icmp = b.categorical[:, 1] == "1"
        assert np.all(col(b, "ICMP_TYPE")[~icmp] == 0)
        dur = col(b, "FLOW_DURATION_MILLISECONDS")
        thr = col(b, "SRC_TO_DST_AVG_THROUGHPUT")
        np.testing.assert_allclose(thr, np.rint(col(b, "IN_BYTES") * 8000 / np.maximum(dur, 1)))


def test_profiles_differ(batches: dict[str, FlowBatch]) -> None:
    top = {
        p: tuple(np.unique(b.categorical[:, 0], return_counts=True)[0][:5])
        for p, b in batches.items()
    }
    port_mix = {
        p: frozenset(np.unique(b.categorical[b.label == "benign", 0]).tolist())
        for p, b in batches.items()
    }
    assert len(set(port_mix.values())) == len(PROFILES), top
    assert "502" in port_mix["iot-ot"]
    assert "502" not in port_mix["office"]
    fams = {p: set(np.unique(b.label).tolist()) for p, b in batches.items()}
    assert "web-attack" not in fams["iot-ot"]
    assert "web-attack" in fams["bank"]
    assert set().union(*fams.values()) == {"benign", *ATTACK_FAMILIES}


def test_families_and_rate_respected() -> None:
    b = generate(
        "office",
        20_000,
        np.random.default_rng(3),
        attack_rate=0.5,
        families={"udp-flood": 1.0, "c2-beacon": 3.0},
    )
    labels, counts = np.unique(b.label, return_counts=True)
    got = dict(zip(labels.tolist(), counts.tolist(), strict=True))
    assert set(got) == {"benign", "udp-flood", "c2-beacon"}
    assert abs(got["benign"] / 20_000 - 0.5) < 0.02
    assert abs(got["c2-beacon"] / got["udp-flood"] - 3.0) < 0.4
    clean = generate("bank", 2000, np.random.default_rng(3), attack_rate=0.0)
    assert set(clean.label) == {"benign"}


def test_every_family_appears_where_configured() -> None:
    for fam in ATTACK_FAMILIES:
        b = generate(
            "isp-edge", 500, np.random.default_rng(1), attack_rate=1.0, families={fam: 1.0}
        )
        assert set(b.label) == {fam}
        assert set(b.category) == {ATTACK_FAMILIES[fam]}


def test_generate_day_and_format_ipv4() -> None:
    b = generate_day("hospital", 100, np.random.default_rng(0), day=2)
    assert b.identifiers[TIMESTAMP].min() >= (DEFAULT_START + 2 * 86_400) * 1000
    addrs = np.array([0x0A000001, 0xC0A80101, 0xFFFFFFFF], dtype=np.uint32)
    assert format_ipv4(addrs).tolist() == ["10.0.0.1", "192.168.1.1", "255.255.255.255"]
    src = format_ipv4(b.identifiers["IPV4_SRC_ADDR"][:5])
    assert all(len(s.split(".")) == 4 for s in src)


def test_empty_and_errors() -> None:
    assert len(generate("office", 0, np.random.default_rng(0))) == 0
    with pytest.raises(ConfigError, match="profile"):
        generate("casino", 10, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        generate("office", 10, np.random.default_rng(0), attack_rate=1.5)
    with pytest.raises(ConfigError, match="unknown attack families"):
        generate("office", 10, np.random.default_rng(0), families={"phishing": 1.0})
    with pytest.raises(ConfigError):
        generate("office", -1, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        generate_federation(0, 10, seed=1)


def test_learnable_by_nearest_centroid() -> None:
    """Crude check that families carry signal: a nearest-centroid classifier beats chance."""
    from phalanx.core.features.stats import compute_stats
    from phalanx.core.features.transform import FeatureTransform

    train = FlowBatch.concat(generate_federation(6, 5000, seed=2))
    test = FlowBatch.concat(generate_federation(6, 3000, seed=3))
    tr = FeatureTransform.fit(compute_stats(train))
    x, xt = tr.transform(train), tr.transform(test)
    classes = np.unique(train.category)
    cent = np.stack([x[train.category == c].mean(axis=0) for c in classes])
    d = ((xt[:, None, :] - cent[None, :, :]) ** 2).sum(axis=2)
    pred = classes[d.argmin(axis=1)]
    recall = [np.mean(pred[test.category == c] == c) for c in classes]
    assert np.mean(recall) > 0.6
