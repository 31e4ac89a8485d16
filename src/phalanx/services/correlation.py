"""Alert correlation: floods and scans told apart by what one flow cannot show.

A detector scores flows one at a time. One spoofed SYN of a flood is, flow by flow, exactly a
scan probe: one packet, no answer, no payload. What separates them is the *shape* of many flows
in a short time, which no per-flow feature holds: a scan is one source fanning **out** over many
ports or hosts; a distributed flood is many sources fanning **in** on one destination; a
single-source flood is one source hammering one destination port. IDSs have always decided this
across flows (Zeek's scan detection, Paxson, "Bro: a system for detecting network intruders in
real-time", Computer Networks 31(23-24), 1999; Jung, Paxson, Berger, Balakrishnan, "Fast portscan
detection using sequential hypothesis testing", IEEE S&P 2004; Snort and Suricata
``detection_filter``/``threshold ... track by_dst``); the shapes follow Mirkovic and Reiher, "A
taxonomy of DDoS attack and DDoS defense mechanisms", ACM SIGCOMM CCR 34(2), 2004.

:class:`AlertCorrelator` runs after scoring, over the alerts whose model category is
*volumetric* (``recon``, ``dos``, ``ddos``), in tumbling windows of flow start time
(``window_s``; when flows carry no timestamp, windows of ``window_rows`` input rows):

1. **Fan-in**: a ``recon`` or ``dos`` alert against a destination address that, in the same
   window, drew volumetric alerts from at least ``fan_in_sources`` distinct source addresses
   becomes ``ddos`` (network denial of service), unless its own source fans out
   (rule 3 evidence), which is a scanner among others.
2. **Single-source flood**: a ``recon`` alert whose (source, destination, destination port) carried
   at least ``flood_flows`` volumetric alerts in the window, from a source that does not fan out,
   becomes ``dos``.
3. A source reaching ``scan_targets`` or more distinct (destination, port) pairs is scanning: its
   alerts keep the model's category.

The model's verdict is never downgraded (``ddos`` stays ``ddos``) and other categories
(brute force, web attacks, C2 ...) are untouched. Each relabelled alert keeps the model's category
beside the new one, with the rule and the counts that fired it. Memory is bounded: state is kept
for the two most recent windows, sets stop growing at the rule thresholds, and at most
``max_keys`` (source, destination, port) counters are tracked per window (past that, new triples
are not counted and their alerts keep the model's category).

A scan that many sources run against one host inside one window (a distributed port scan) is
indistinguishable here from a distributed flood and is labelled ``ddos``; docs/user-guide.md
names this limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from phalanx.core.errors import ConfigError

VOLUMETRIC = ("recon", "dos", "ddos")
FAN_IN = "fan-in"
SINGLE_SOURCE_FLOOD = "single-source-flood"


@dataclass(frozen=True)
class CorrelationRules:
    """Thresholds of :class:`AlertCorrelator` (see the module docstring for the rules)."""

    window_s: float = 60.0
    window_rows: int = 100_000
    fan_in_sources: int = 20
    flood_flows: int = 100
    scan_targets: int = 10
    max_keys: int = 1_000_000

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and np.isfinite(self.window_s)):
            raise ConfigError(f"correlation window must be > 0 seconds, found {self.window_s}")
        for name in ("window_rows", "fan_in_sources", "flood_flows", "scan_targets", "max_keys"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 2):
                raise ConfigError(f"correlation {name} must be an integer >= 2, found {value!r}")


@dataclass(frozen=True)
class Correlated:
    """The outcome for a batch of alerts (arrays aligned with the input).

    Attributes
    ----------
    category:
        The final category of every alert.
    rule:
        ``""`` when the model's category stands, else :data:`FAN_IN` or
        :data:`SINGLE_SOURCE_FLOOD`.
    sources:
        Distinct sources with volumetric alerts against the alert's destination in its window
        (counting stops at ``fan_in_sources``); 0 for non-volumetric alerts.
    flows:
        Volumetric alerts on the alert's (source, destination, port) in its window; 0 for
        non-volumetric alerts.
    """

    category: NDArray[np.object_]
    rule: NDArray[np.object_]
    sources: NDArray[np.int64]
    flows: NDArray[np.int64]

    def evidence(self, i: int, window_s: float | None) -> dict[str, Any] | None:
        """The ``phalanx.correlation`` document of alert ``i`` (``None`` when not relabelled)."""
        if not self.rule[i]:
            return None
        doc: dict[str, Any] = {"rule": str(self.rule[i])}
        doc["sources"] = int(self.sources[i])
        doc["flows"] = int(self.flows[i])
        if window_s is not None:
            doc["window_s"] = window_s
        return doc


@dataclass
class _Window:
    """Counters of one window."""

    sources: dict[Any, set[Any]] = field(default_factory=dict)
    targets: dict[Any, set[Any]] = field(default_factory=dict)
    flows: dict[tuple[Any, Any, Any], int] = field(default_factory=dict)


@dataclass
class CorrelationSummary:
    """How many alerts each rule relabelled, by (model category, final category)."""

    relabelled: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def total(self) -> int:
        """Alerts relabelled in all."""
        return sum(self.relabelled.values())


class AlertCorrelator:
    """Relabels volumetric alerts by fan-in and single-source volume (module docstring).

    Parameters
    ----------
    rules:
        Thresholds and window length.
    """

    def __init__(self, rules: CorrelationRules | None = None) -> None:
        self.rules = rules or CorrelationRules()
        self.summary = CorrelationSummary()
        self._windows: dict[tuple[str, int], _Window] = {}

    def correlate(
        self,
        category: NDArray[np.object_],
        src: NDArray[Any] | pa.Array | None,
        dst: NDArray[Any] | pa.Array | None,
        dport: NDArray[Any] | pa.Array | None,
        *,
        start_ms: NDArray[Any] | None,
        rows: NDArray[np.int64],
    ) -> Correlated:
        """Correlate one batch of alerts, in input order; state carries over to the next batch.

        Parameters
        ----------
        category:
            The model's category of every alert.
        src, dst, dport:
            Source address, destination address and destination port of every alert (numpy or
            arrow arrays; ``None`` when the input lacks the column: nothing is relabelled).
        start_ms:
            Flow start time in epoch milliseconds, or ``None`` (windows of input rows then).
        rows:
            The alert's row in its input, for the row windows.
        """
        n = len(category)
        out_cat = np.asarray(category, dtype=object).copy()
        rule = np.full(n, "", dtype=object)
        sources = np.zeros(n, dtype=np.int64)
        flows = np.zeros(n, dtype=np.int64)
        result = Correlated(out_cat, rule, sources, flows)
        if n == 0 or src is None or dst is None:
            return result
        volumetric = np.isin(out_cat, VOLUMETRIC)
        if not volumetric.any():
            return result
        port = dport if dport is not None else np.zeros(n, dtype=np.int64)
        if start_ms is not None:
            when = np.asarray(start_ms, dtype=np.float64)
            ok = np.isfinite(when)
            wid = np.where(ok, np.floor(when / (self.rules.window_s * 1000.0)), -1).astype(np.int64)
            kind = np.where(ok, "t", "r")
            wid = np.where(ok, wid, np.asarray(rows, dtype=np.int64) // self.rules.window_rows)
        else:
            wid = np.asarray(rows, dtype=np.int64) // self.rules.window_rows
            kind = np.full(n, "r")
        for k in np.unique(kind):
            for w in np.unique(wid[kind == k]):
                sel = np.flatnonzero(volumetric & (kind == k) & (wid == w))
                if sel.size:
                    self._window_batch(self._window((str(k), int(w))), sel, src, dst, port, result)
        return result

    def _window(self, key: tuple[str, int]) -> _Window:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
            same = sorted(k for k in self._windows if k[0] == key[0])
            for old in same[:-2]:  # keep the two most recent windows of each kind
                del self._windows[old]
        return window

    def _window_batch(
        self,
        window: _Window,
        sel: NDArray[np.intp],
        src: NDArray[Any] | pa.Array,
        dst: NDArray[Any] | pa.Array,
        port: NDArray[Any] | pa.Array,
        out: Correlated,
    ) -> None:
        r = self.rules
        s_vals, s_code = _codes(_take(src, sel))
        d_vals, d_code = _codes(_take(dst, sel))
        p_vals, p_code = _codes(_take(port, sel))
        ns, nd, npt = len(s_vals), len(d_vals), len(p_vals)
        # distinct sources per destination
        pair = np.unique(d_code.astype(np.int64) * ns + s_code)
        pd, ps = pair // ns, pair % ns
        fan_in = np.zeros(nd, dtype=np.int64)
        for d, lo, hi in _groups(pd):  # ``pair`` is sorted by destination, then source
            seen = window.sources.setdefault(d_vals[d], set())
            if len(seen) < r.fan_in_sources:
                seen.update(s_vals[ps[lo : min(hi, lo + r.fan_in_sources)]].tolist())
            fan_in[d] = len(seen)
        # distinct (destination, port) targets per source, and flows per triple
        target = d_code.astype(np.int64) * npt + p_code
        trip, t_inv, t_count = np.unique(
            s_code.astype(np.int64) * (nd * npt) + target, return_inverse=True, return_counts=True
        )
        t_src, t_target = trip // (nd * npt), trip % (nd * npt)
        fan_out = np.zeros(ns, dtype=np.int64)
        for s, lo, hi in _groups(t_src):  # ``trip`` is sorted by source first
            seen = window.targets.setdefault(s_vals[s], set())
            if len(seen) < r.scan_targets:
                mine = t_target[lo : min(hi, lo + r.scan_targets)]
                seen.update((d_vals[t // npt], p_vals[t % npt]) for t in mine.tolist())
            fan_out[s] = len(seen)
        trip_flows = np.zeros(len(trip), dtype=np.int64)
        triples = zip(t_src.tolist(), t_target.tolist(), t_count.tolist(), strict=True)
        for j, (s, t, c) in enumerate(triples):
            key3 = (s_vals[s], d_vals[t // npt], p_vals[t % npt])
            have = window.flows.get(key3)
            if have is None and len(window.flows) >= r.max_keys:
                continue
            window.flows[key3] = trip_flows[j] = (have or 0) + c
        # decide
        cat = out.category[sel]
        src_fans_out = fan_out[s_code] >= r.scan_targets
        flows_here = trip_flows[t_inv.reshape(-1)]
        sources_here = fan_in[d_code]
        ddos = np.isin(cat, ("recon", "dos")) & (sources_here >= r.fan_in_sources) & ~src_fans_out
        dos = (cat == "recon") & ~ddos & (flows_here >= r.flood_flows) & ~src_fans_out
        out.sources[sel] = sources_here
        out.flows[sel] = flows_here
        for mask, new, name in ((ddos, "ddos", FAN_IN), (dos, "dos", SINGLE_SOURCE_FLOOD)):
            idx = sel[mask]
            for before in np.unique(cat[mask]).tolist() if mask.any() else []:
                key = (name, str(before), new)
                count = int((cat[mask] == before).sum())
                self.summary.relabelled[key] = self.summary.relabelled.get(key, 0) + count
            out.category[idx] = new
            out.rule[idx] = name


def _take(values: NDArray[Any] | pa.Array, rows: NDArray[np.intp]) -> NDArray[Any] | pa.Array:
    if isinstance(values, pa.Array):
        return values.take(pa.array(rows))
    return np.asarray(values)[rows]


def _groups(keys: NDArray[np.int64]) -> list[tuple[int, int, int]]:
    """``(key, start, end)`` of each run of equal values in the sorted array ``keys``."""
    if keys.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], keys.size]
    return list(zip(keys[starts].tolist(), starts.tolist(), ends.tolist(), strict=True))


def _codes(values: NDArray[Any] | pa.Array) -> tuple[NDArray[Any], NDArray[np.intp]]:
    """Distinct values as text (a missing value is ``""``) and each row's index among them.

    Arrow arrays (what :class:`~phalanx.services.alerts.FlowFields` holds) are hash-encoded
    by arrow; numpy arrays are converted first.
    """
    if not isinstance(values, pa.Array):
        arr = np.asarray(values)
        if arr.dtype.kind in "iu":
            values = pa.array(arr)
        else:
            values = pa.array(["" if v is None or v != v else str(v) for v in arr.tolist()])
    if not pa.types.is_string(values.type):
        values = pc.cast(values, pa.string())
    encoded = pc.dictionary_encode(values)
    uniq = np.array([*encoded.dictionary.to_pylist(), ""], dtype=object)
    idx = pc.fill_null(encoded.indices, len(uniq) - 1)
    return uniq, idx.to_numpy(zero_copy_only=False).astype(np.intp)


__all__ = [
    "FAN_IN",
    "SINGLE_SOURCE_FLOOD",
    "VOLUMETRIC",
    "AlertCorrelator",
    "Correlated",
    "CorrelationRules",
    "CorrelationSummary",
]
