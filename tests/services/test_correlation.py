"""Alert correlation: floods relabelled by fan-in and volume, scans left alone, bounded state."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.errors import ConfigError
from phalanx.services.correlation import (
    FAN_IN,
    SINGLE_SOURCE_FLOOD,
    VOLUMETRIC,
    AlertCorrelator,
    CorrelationRules,
)

T0 = 1_700_000_000_000  # epoch ms


def _alerts(
    cats: list[str], srcs: list[str], dsts: list[str], ports: list[int], ms: Sequence[float]
) -> dict[str, np.ndarray]:
    return {
        "category": np.array(cats, dtype=object),
        "src": np.array(srcs, dtype=object),
        "dst": np.array(dsts, dtype=object),
        "dport": np.array(ports, dtype=object),
        "start_ms": np.array(ms, dtype=np.float64),
    }


def _run(c: AlertCorrelator, a: dict[str, np.ndarray], offset: int = 0):  # type: ignore[no-untyped-def]
    n = len(a["category"])
    return c.correlate(
        a["category"], a["src"], a["dst"], a["dport"],
        start_ms=a["start_ms"], rows=np.arange(offset, offset + n, dtype=np.int64),
    )  # fmt: skip


def test_spoofed_syn_flood_becomes_ddos() -> None:
    n = 500
    a = _alerts(
        ["recon"] * (n - 10) + ["dos"] * 10,
        [f"10.{i // 250}.{i % 250}.1" for i in range(n)],
        ["192.0.2.1"] * n,
        [80] * n,
        [T0 + i for i in range(n)],
    )
    out = _run(AlertCorrelator(), a)
    assert set(out.category.tolist()) == {"ddos"}
    assert set(out.rule.tolist()) == {FAN_IN}
    assert (out.sources == 20).all()  # counting stops at the threshold
    ev = out.evidence(0, 60.0)
    assert ev == {"rule": FAN_IN, "sources": 20, "flows": 1, "window_s": 60.0}
    assert a["category"][0] == "recon"  # the model's categories are not modified in place


def test_vertical_scan_stays_recon() -> None:
    n = 1000
    a = _alerts(["recon"] * n, ["198.51.100.7"] * n, ["192.0.2.1"] * n, list(range(1, n + 1)),
                [T0 + i for i in range(n)])  # fmt: skip
    out = _run(AlertCorrelator(), a)
    assert set(out.category.tolist()) == {"recon"}
    assert not any(out.rule.tolist())
    assert out.evidence(0, 60.0) is None


def test_many_scanners_on_one_host_stay_recon() -> None:
    # 30 sources each sweeping 40 ports of one host: every source fans out, so it is scanning.
    srcs, ports = [], []
    for s in range(30):
        for p in range(40):
            srcs.append(f"203.0.113.{s}")
            ports.append(1000 + 40 * s + p)
    n = len(srcs)
    a = _alerts(["recon"] * n, srcs, ["192.0.2.9"] * n, ports, [T0 + i for i in range(n)])
    out = _run(AlertCorrelator(), a)
    assert set(out.category.tolist()) == {"recon"}


def test_single_source_flood_becomes_dos() -> None:
    n = 300
    a = _alerts(["recon"] * n, ["198.51.100.7"] * n, ["192.0.2.1"] * n, [443] * n,
                [T0 + 10 * i for i in range(n)])  # fmt: skip
    out = _run(AlertCorrelator(), a)
    assert set(out.category.tolist()) == {"dos"}
    assert set(out.rule.tolist()) == {SINGLE_SOURCE_FLOOD}
    assert (out.flows == n).all()
    # Below the volume threshold it stays what the model said.
    small = {k: v[:50] for k, v in a.items()}
    assert set(_run(AlertCorrelator(), small).category.tolist()) == {"recon"}


def test_other_categories_and_ddos_are_never_changed() -> None:
    n = 400
    cats = ["brute-force", "ddos", "web-attack", "botnet-c2"] * (n // 4)
    a = _alerts(cats, [f"10.0.{i // 200}.{i % 200}" for i in range(n)], ["192.0.2.1"] * n,
                [22] * n, [T0 + i for i in range(n)])  # fmt: skip
    out = _run(AlertCorrelator(), a)
    assert out.category.tolist() == cats
    assert not any(out.rule.tolist())


def test_sources_must_meet_in_one_window() -> None:
    # 19 sources in one minute, 19 more in the next: no window reaches 20.
    srcs = [f"10.0.0.{i}" for i in range(38)]
    ms = [T0 + 1000 * i for i in range(19)] + [T0 + 60_000 + 1000 * i for i in range(19)]
    base = T0 - T0 % 60_000  # align to the window grid
    ms = [m - T0 + base for m in ms]
    a = _alerts(["recon"] * 38, srcs, ["192.0.2.1"] * 38, [80] * 38, ms)
    assert set(_run(AlertCorrelator(), a).category.tolist()) == {"recon"}
    a["start_ms"] = np.array([base + 100 * i for i in range(38)], dtype=np.float64)
    assert set(_run(AlertCorrelator(), a).category.tolist()) == {"ddos"}


def test_state_carries_over_batches() -> None:
    c = AlertCorrelator()
    first = _alerts(["recon"] * 25, [f"10.0.0.{i}" for i in range(25)], ["192.0.2.1"] * 25,
                    [80] * 25, [T0 + i for i in range(25)])  # fmt: skip
    assert set(_run(c, first).category.tolist()) == {"ddos"}
    later = _alerts(["recon"], ["10.9.9.9"], ["192.0.2.1"], [80], [T0 + 100])
    out = _run(c, later, offset=25)
    assert out.category.tolist() == ["ddos"]
    assert c.summary.total() == 26
    assert c.summary.relabelled == {(FAN_IN, "recon", "ddos"): 26}


def test_rows_make_the_windows_without_timestamps() -> None:
    c = AlertCorrelator(CorrelationRules(window_rows=100))
    n = 60
    srcs = [f"10.0.0.{i}" for i in range(n)]
    out = c.correlate(
        np.array(["recon"] * n, dtype=object), np.array(srcs, dtype=object),
        np.array(["192.0.2.1"] * n, dtype=object), np.array([80] * n, dtype=object),
        start_ms=None, rows=np.arange(n, dtype=np.int64) * 10,  # rows 0..590: six windows
    )  # fmt: skip
    assert set(out.category.tolist()) == {"recon"}  # 10 sources per 100-row window
    out = c.correlate(
        np.array(["recon"] * n, dtype=object), np.array(srcs, dtype=object),
        np.array(["192.0.2.1"] * n, dtype=object), None, start_ms=None,
        rows=np.arange(1000, 1000 + n, dtype=np.int64),
    )  # fmt: skip
    assert set(out.category.tolist()) == {"ddos"}


def test_without_addresses_nothing_changes() -> None:
    cats = np.array(["recon"] * 50, dtype=object)
    out = AlertCorrelator().correlate(
        cats, None, None, None, start_ms=None, rows=np.arange(50, dtype=np.int64)
    )
    assert out.category.tolist() == ["recon"] * 50


def test_state_is_bounded() -> None:
    c = AlertCorrelator(CorrelationRules(max_keys=100))
    for w in range(10):
        n = 500
        a = _alerts(["recon"] * n, [f"10.0.{i // 250}.{i % 250}" for i in range(n)],
                    [f"192.0.2.{i % 7}" for i in range(n)], [80] * n,
                    [T0 + 60_000 * w + i for i in range(n)])  # fmt: skip
        _run(c, a, offset=w * n)
    assert len(c._windows) <= 2
    assert all(len(win.flows) <= 100 for win in c._windows.values())
    assert all(len(s) <= 20 for win in c._windows.values() for s in win.sources.values())


@pytest.mark.parametrize(
    "kw", [{"window_s": 0.0}, {"window_s": float("nan")}, {"fan_in_sources": 1},
           {"flood_flows": 0}, {"scan_targets": 2.5}],
)  # fmt: skip
def test_bad_rules_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="correlation"):
        CorrelationRules(**kw)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["benign", "recon", "dos", "ddos", "brute-force", "other"]),
            st.integers(0, 30), st.integers(0, 3), st.integers(0, 5), st.integers(0, 200_000),
        ),
        max_size=200,
    ),
    st.integers(1, 4),
)  # fmt: skip
def test_only_upward_relabels_within_volumetric(
    rows: list[tuple[str, int, int, int, int]], chunks: int
) -> None:
    rules = CorrelationRules(fan_in_sources=3, flood_flows=4, scan_targets=3)
    c = AlertCorrelator(rules)
    allowed = {("recon", "dos"), ("recon", "ddos"), ("dos", "ddos")}
    parts = np.array_split(np.arange(len(rows)), chunks)
    for part in parts:
        sub = [rows[i] for i in part]
        a = _alerts([r[0] for r in sub], [f"s{r[1]}" for r in sub], [f"d{r[2]}" for r in sub],
                    [r[3] for r in sub], [T0 + r[4] for r in sub])  # fmt: skip
        out = _run(c, a, offset=int(part[0]) if len(part) else 0)
        for before, after, rule in zip(a["category"], out.category, out.rule, strict=True):
            if before == after:
                assert rule == ""
            else:
                assert (before, after) in allowed and before in VOLUMETRIC
                assert rule in (FAN_IN, SINGLE_SOURCE_FLOOD)
