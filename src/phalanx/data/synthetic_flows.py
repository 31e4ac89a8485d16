"""Rendering of synthetic flows: kind parameters to NetFlow v2 columns, fully vectorized.

Flows arrive grouped by kind (one contiguous slice each), so per-flow parameters are gathered from
per-kind tables in one step and every column is drawn for all flows at once; only the few choices
that depend on a kind's discrete tables (ports, endpoints, timing) loop over the kinds.

Consistency rules (checked by the tests): a direction's bytes are its header-only packets times
their size plus its data packets, one of which is the longest; the packet-size histogram of NF-v2
(<=128, 129-256, 257-512, 513-1024, 1025-1514 bytes) counts exactly those packets, so it sums to
``IN_PKTS + OUT_PKTS``; throughput is bytes over duration; TCP flags, windows and retransmissions
are zero for UDP and ICMP; ``MIN_TTL``/``MAX_TTL`` span both directions' TTLs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from phalanx.core.taxonomy import BENIGN
from phalanx.data.synthetic_profiles import (
    ACK,
    ATTACK_FAMILIES,
    ICMP,
    KINDS,
    RST,
    TCP,
    Kind,
    Profile,
)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
U32 = NDArray[np.uint32]

_EDGES = np.array([128, 256, 512, 1024])  # packet-size histogram bins of NF-v2
HIST_COLUMNS = (
    "NUM_PKTS_UP_TO_128_BYTES",
    "NUM_PKTS_128_TO_256_BYTES",
    "NUM_PKTS_256_TO_512_BYTES",
    "NUM_PKTS_512_TO_1024_BYTES",
    "NUM_PKTS_1024_TO_1514_BYTES",
)
_WELL_KNOWN = np.array([21, 22, 23, 25, 53, 80, 110, 135, 139, 143, 443, 445, 993, 1433, 3306,
                        3389, 5432, 5900, 8080, 8443])  # fmt: skip
_EXT_WIN_CLIENT = np.array([64240, 65535, 29200, 8192, 14600], dtype=np.float64)
_EXT_WIN_SERVER = np.array([65535, 65160, 28960, 64240], dtype=np.float64)
_PUBLIC = (0x0B000000, 0xDF000000)  # 11.0.0.0 .. 222.255.255.255
_DNS_TYPES = (np.array([1, 28, 65, 5, 15, 16]), np.array([0.6, 0.25, 0.07, 0.03, 0.02, 0.03]))
_DNS_TTLS = (np.array([60, 300, 3600, 86400]), np.array([0.3, 0.4, 0.2, 0.1]))
CLIENT, SERVER, EXTERNAL = 0, 1, 2
BEACON_HOSTS = 3


@dataclass(frozen=True)
class Tables:
    """Per-kind parameters as arrays, so per-flow parameters are one gather away."""

    pk_med: F64
    pk_sig: F64
    ratio_med: F64
    ratio_sig: F64
    no_reply: F64
    sz_in_med: F64
    sz_in_sig: F64
    sz_out_med: F64
    sz_out_sig: F64
    ctrl_in: F64
    ctrl_out: F64
    csize_in: F64
    csize_out: F64
    min_size: F64
    dur_med: F64
    dur_sig: F64
    cflags: I64
    sflags: I64
    alt_flags: I64
    alt_p: F64
    p_rst: F64
    loss: F64
    proto: I64
    label: I64
    l7: tuple[I64, ...]
    l7_str: NDArray[np.object_]
    label_str: NDArray[np.object_]
    category_str: NDArray[np.object_]


@functools.cache
def tables() -> Tables:
    def col(get: Callable[[Kind], float]) -> F64:
        return np.array([get(k) for k in KINDS], dtype=np.float64)

    l7_values = sorted({v for k in KINDS for v in k.l7} | {"0.0"})
    labels = [BENIGN, *ATTACK_FAMILIES]
    min_size = {TCP: 53.0, ICMP: 28.0}
    return Tables(
        pk_med=col(lambda k: k.pkts[0]),
        pk_sig=col(lambda k: k.pkts[1]),
        ratio_med=col(lambda k: k.ratio[0]),
        ratio_sig=col(lambda k: k.ratio[1]),
        no_reply=col(lambda k: k.no_reply),
        sz_in_med=col(lambda k: k.size_in[0]),
        sz_in_sig=col(lambda k: k.size_in[1]),
        sz_out_med=col(lambda k: k.size_out[0]),
        sz_out_sig=col(lambda k: k.size_out[1]),
        ctrl_in=col(lambda k: k.ctrl[0]),
        ctrl_out=col(lambda k: k.ctrl[1]),
        csize_in=col(lambda k: k.csize[0]),
        csize_out=col(lambda k: k.csize[1]),
        min_size=col(lambda k: min_size.get(k.proto, 29.0)),
        dur_med=col(lambda k: k.dur[0]),
        dur_sig=col(lambda k: k.dur[1]),
        cflags=col(lambda k: k.flags[0]).astype(np.int64),
        sflags=col(lambda k: k.flags[1]).astype(np.int64),
        alt_flags=col(lambda k: k.alt_server_flags[0]).astype(np.int64),
        alt_p=col(lambda k: k.alt_server_flags[1]),
        p_rst=col(lambda k: k.p_rst),
        loss=col(lambda k: k.loss),
        proto=col(lambda k: k.proto).astype(np.int64),
        label=np.array([labels.index(k.family) for k in KINDS], dtype=np.int64),
        l7=tuple(np.array([l7_values.index(v) for v in k.l7], dtype=np.int64) for k in KINDS),
        l7_str=np.array(l7_values, dtype=object),
        label_str=np.array(labels, dtype=object),
        category_str=np.array([BENIGN, *ATTACK_FAMILIES.values()], dtype=object),
    )


def flows(
    t: I64, groups: list[tuple[int, I64]], tb: Tables, prof: Profile, rng: np.random.Generator
) -> dict[str, F64]:
    """Packet, byte, duration and flag columns for kinds ``t`` (one gather per parameter)."""
    n = t.size
    tail = prof.tail
    z = rng.standard_normal((5, n))
    u = rng.random((6, n))
    in_pkts = np.maximum(1.0, np.rint(tb.pk_med[t] * np.exp(tail * tb.pk_sig[t] * z[0])))
    for k, rows in groups:
        kind = KINDS[k]
        if kind.pareto > 0:
            lomax = rng.pareto(kind.pareto, rows.size)
            in_pkts[rows] = np.minimum(np.rint(kind.pkts[0] * (1 + lomax)), 2e6)
    reply = u[0] >= tb.no_reply[t]
    ratio = tb.ratio_med[t] * np.exp(tb.ratio_sig[t] * z[1])
    out_pkts = np.where(reply, np.maximum(1.0, np.rint(in_pkts * ratio)), 0.0)
    ctrl_in, ctrl_out = _ctrl(in_pkts, tb.ctrl_in[t]), _ctrl(out_pkts, tb.ctrl_out[t])
    d_in, d_out = in_pkts - ctrl_in, out_pkts - ctrl_out
    lo = tb.min_size[t]
    m_in = np.clip(np.rint(tb.sz_in_med[t] * np.exp(tail * tb.sz_in_sig[t] * z[2])), lo, 1500)
    m_out = np.clip(np.rint(tb.sz_out_med[t] * np.exp(tail * tb.sz_out_sig[t] * z[3])), lo, 1500)
    big_in = np.where(d_in >= 2, np.rint(m_in + (1500 - m_in) * u[1] ** 3), m_in)
    big_out = np.where(d_out >= 2, np.rint(m_out + (1500 - m_out) * u[2] ** 3), m_out)
    c_in, c_out = tb.csize_in[t], tb.csize_out[t]
    bytes_in = ctrl_in * c_in + np.maximum(d_in - 1, 0) * m_in + (d_in > 0) * big_in
    bytes_out = ctrl_out * c_out + np.maximum(d_out - 1, 0) * m_out + (d_out > 0) * big_out
    long_in = np.where(d_in > 0, big_in, c_in)
    long_out = np.where(d_out > 0, big_out, np.where(ctrl_out > 0, c_out, 0.0))
    short_in = np.where(ctrl_in > 0, c_in, np.where(d_in > 1, m_in, big_in))
    short_out = np.where(ctrl_out > 0, c_out, np.where(d_out > 1, m_out, big_out))
    short_out = np.where(out_pkts > 0, short_out, np.inf)

    hist = np.zeros((n, 5))
    rows = np.arange(n)
    hist[:, 0] = ctrl_in + ctrl_out
    for count, size in (
        (np.maximum(d_in - 1, 0), m_in),
        (d_in > 0, big_in),
        (np.maximum(d_out - 1, 0), m_out),
        (d_out > 0, big_out),
    ):
        hist[rows, np.searchsorted(_EDGES, size)] += count

    mix = 0.6 * z[0] + 0.8 * z[4]
    dur = np.where(
        in_pkts + out_pkts <= 1, 0.0, np.rint(tb.dur_med[t] * np.exp(tail * tb.dur_sig[t] * mix))
    )
    dur_in = np.where(in_pkts > 1, np.rint(dur * (0.5 + 0.5 * u[3])), 0.0)
    dur_out = np.where(out_pkts > 1, np.rint(dur * (0.5 + 0.5 * u[4])), 0.0)

    cflags = tb.cflags[t] | np.where(u[5] < tb.p_rst[t], RST, 0)
    alt = reply & (u[5] > 1.0 - tb.alt_p[t])
    sflags = np.where(alt, tb.alt_flags[t], np.where(reply, tb.sflags[t], 0))
    p_loss = np.minimum(prof.loss * tb.loss[t], 0.5)
    re_in = rng.binomial(d_in.astype(np.int64), p_loss).astype(np.float64)
    re_out = rng.binomial(d_out.astype(np.int64), p_loss).astype(np.float64)
    ms = np.maximum(dur, 1.0)
    return {
        "IN_BYTES": bytes_in,
        "IN_PKTS": in_pkts,
        "OUT_BYTES": bytes_out,
        "OUT_PKTS": out_pkts,
        "TCP_FLAGS": (cflags | sflags).astype(np.float64),
        "CLIENT_TCP_FLAGS": cflags.astype(np.float64),
        "SERVER_TCP_FLAGS": sflags.astype(np.float64),
        "FLOW_DURATION_MILLISECONDS": dur,
        "DURATION_IN": dur_in,
        "DURATION_OUT": dur_out,
        "LONGEST_FLOW_PKT": np.maximum(long_in, long_out),
        "SHORTEST_FLOW_PKT": np.minimum(short_in, short_out),
        "SRC_TO_DST_SECOND_BYTES": np.where(
            dur_in > 0, np.rint(bytes_in * 1000 / np.maximum(dur_in, 1)), bytes_in
        ),
        "DST_TO_SRC_SECOND_BYTES": np.where(
            dur_out > 0, np.rint(bytes_out * 1000 / np.maximum(dur_out, 1)), bytes_out
        ),
        "RETRANSMITTED_IN_BYTES": re_in * m_in,
        "RETRANSMITTED_IN_PKTS": re_in,
        "RETRANSMITTED_OUT_BYTES": re_out * m_out,
        "RETRANSMITTED_OUT_PKTS": re_out,
        "SRC_TO_DST_AVG_THROUGHPUT": np.rint(bytes_in * 8000 / ms),
        "DST_TO_SRC_AVG_THROUGHPUT": np.rint(bytes_out * 8000 / ms),
        "MIN_IP_PKT_LEN": np.minimum(short_in, short_out),
        "MAX_IP_PKT_LEN": np.maximum(long_in, long_out),
        **{name: hist[:, j] for j, name in enumerate(HIST_COLUMNS)},
        "_reply": reply.astype(np.float64),
    }


def _ctrl(pkts: F64, frac: F64) -> F64:
    """Header-only packets among ``pkts``: all when ``frac >= 1``, else at least one data packet."""
    return np.where(frac >= 1.0, pkts, np.minimum(np.rint(pkts * frac), np.maximum(pkts - 1, 0)))


@dataclass(frozen=True)
class _Net:
    """One organization's address plan for one generated batch."""

    base: int
    clients: int
    servers: int
    external: U32


def _pick(values: U32, m: int, rng: np.random.Generator) -> U32:
    return values[rng.integers(0, values.size, m)]


def _public(size: int, rng: np.random.Generator) -> U32:
    return rng.integers(*_PUBLIC, size=size, dtype=np.uint32)


def _endpoints(
    kind: Kind, k: int, m: int, net: _Net, rng: np.random.Generator
) -> tuple[U32, U32, int, int]:
    """Source and destination addresses and which side of the organization each is on."""
    base = np.uint32(net.base)

    def clients(size: int) -> U32:
        u = rng.random(size)
        return base + 256 + np.floor(net.clients * u**1.5).astype(np.uint32)

    def servers(size: int) -> U32:
        u = rng.random(size)
        idx = (3 * k + np.floor(4 * u**2).astype(np.int64)) % net.servers
        return base + 2 + idx.astype(np.uint32)

    mode = kind.addressing
    if mode == "out":
        u = rng.random(m)
        return clients(m), net.external[np.floor(net.external.size * u**3).astype(np.int64)],\
            CLIENT, EXTERNAL  # fmt: skip
    if mode == "in":
        return _public(m, rng), servers(m), EXTERNAL, SERVER
    if mode == "lan":
        return clients(m), servers(m), CLIENT, SERVER
    if mode == "scan-ports":
        targets = np.concatenate([servers(2), clients(2)])
        return _pick(_public(2, rng), m, rng), _pick(targets, m, rng), EXTERNAL, SERVER
    if mode == "scan-hosts":
        dst = base + 1 + rng.integers(0, 65534, m).astype(np.uint32)
        return _pick(_public(1, rng), m, rng), dst, EXTERNAL, CLIENT
    if mode == "flood":
        return _pick(_public(1, rng), m, rng), _pick(servers(1), m, rng), EXTERNAL, SERVER
    if mode == "ddos":
        bots = _public(min(4000, max(m // 4, 50)), rng)
        return _pick(bots, m, rng), _pick(servers(2), m, rng), EXTERNAL, SERVER
    if mode == "targeted":
        return _pick(_public(3, rng), m, rng), _pick(servers(2), m, rng), EXTERNAL, SERVER
    if mode == "beacon":  # host i beacons to server i; the timing in _times relies on this order
        slot = np.arange(m) % BEACON_HOSTS
        return clients(BEACON_HOSTS)[slot], _public(BEACON_HOSTS, rng)[slot], CLIENT, EXTERNAL
    return _pick(clients(2), m, rng), _pick(_public(6, rng), m, rng), CLIENT, EXTERNAL


def _ext_ttl(addr: U32) -> F64:
    """A stable TTL for an Internet host: initial 64/128/255 minus 5-22 hops, from its address."""
    initial = np.where(addr % 10 < 6, 64.0, np.where(addr % 10 < 9, 128.0, 255.0))
    return initial - 5.0 - ((addr >> 8) % 18).astype(np.float64)


def _ttl(side: int, addr: U32, prof: Profile) -> F64 | float:
    if side == CLIENT:
        return prof.ttl_client - 1.0
    if side == SERVER:
        return prof.ttl_server - 1.0
    return _ext_ttl(addr)


def _times(kind: Kind, m: int, span: float, prof: Profile, rng: np.random.Generator) -> F64:
    """Start offsets in seconds within ``[0, span)``."""
    if kind.addressing == "beacon":
        hosts = BEACON_HOSTS
        period = max(span * hosts / max(m, 1), 1.0)
        slot = np.arange(m) // hosts
        t = rng.random() * period + slot * period + rng.normal(0.0, 0.05 * period, m)
        return np.clip(t, 0.0, max(span - 1e-3, 0.0))
    if kind.window > 0:
        w = min(kind.window, span)
        return rng.uniform(0.0, span - w) + w * rng.random(m)
    work = rng.random(m) < prof.business
    return span * np.where(work, 8 / 24 + 10 / 24 * rng.random(m), rng.random(m))


def start_times(counts: I64, prof: Profile, rng: np.random.Generator, span: float) -> F64:
    """Start offsets in seconds of flows grouped by kind (``counts[k]`` flows of kind ``k``)."""
    parts = [_times(KINDS[k], int(counts[k]), span, prof, rng) for k in np.flatnonzero(counts)]
    return np.concatenate(parts) if parts else np.zeros(0)


def identities(
    groups: list[tuple[int, I64]],
    n: int,
    prof: Profile,
    rng: np.random.Generator,
    cols: dict[str, F64],
) -> dict[str, NDArray[np.generic]]:
    """Ports, addresses, TTLs, windows and protocol fields; fills ``cols`` in place.

    ``groups`` holds, for each kind present, the rows its flows occupy (in the order their start
    times were drawn by :func:`start_times`). Returns the identifier columns but the timestamp,
    plus ``_dport`` and ``_l7``, integer codes the caller turns into strings.
    """
    tb = tables()
    net = _Net(
        base=(10 << 24) | (int(rng.integers(0, 256)) << 16),
        clients=prof.clients,
        servers=prof.servers,
        external=_public(4096, rng),
    )
    dport = np.zeros(n, dtype=np.int64)
    l7 = np.zeros(n, dtype=np.int64)
    src = np.zeros(n, dtype=np.uint32)
    dst = np.zeros(n, dtype=np.uint32)
    sport = np.zeros(n, dtype=np.int64)
    dns_id = np.zeros(n, dtype=np.int64)
    names = ("MIN_TTL", "MAX_TTL", "TCP_WIN_MAX_IN", "TCP_WIN_MAX_OUT", "ICMP_TYPE",
             "ICMP_IPV4_TYPE", "DNS_QUERY_TYPE", "DNS_TTL_ANSWER",
             "FTP_COMMAND_RET_CODE")  # fmt: skip
    out = {name: np.zeros(n) for name in names}
    reply_all = cols["_reply"] > 0
    for k, rows in groups:
        kind = KINDS[k]
        m = rows.size
        reply = reply_all[rows]
        port_idx, dport[rows] = _ports(kind, m, rng)
        l7[rows] = tb.l7[k][port_idx] if len(kind.l7) > 1 else tb.l7[k][0]
        s, d, s_side, d_side = _endpoints(kind, k, m, net, rng)
        src[rows], dst[rows] = s, d
        ttl_s, ttl_d = _ttl(s_side, s, prof), _ttl(d_side, d, prof)
        out["MIN_TTL"][rows] = np.where(reply, np.minimum(ttl_s, ttl_d), ttl_s)
        out["MAX_TTL"][rows] = np.where(reply, np.maximum(ttl_s, ttl_d), ttl_s)
        if s_side == CLIENT:
            lo, hi = (49152, 65536) if prof.ttl_client > 64 else (32768, 61000)
        else:
            lo, hi = 1024, 65536
        sport[rows] = rng.integers(lo, hi, m)
        if kind.proto == TCP:
            if kind.win_in > 0:
                out["TCP_WIN_MAX_IN"][rows] = kind.win_in
            elif kind.win_in == 0:
                out["TCP_WIN_MAX_IN"][rows] = rng.integers(1024, 65536, m)
            else:
                win_c = np.array(prof.win_client, dtype=np.float64)
                out["TCP_WIN_MAX_IN"][rows] = _choice(
                    win_c if s_side == CLIENT else _EXT_WIN_CLIENT, m, rng
                )
            win_s = np.array(prof.win_server, dtype=np.float64)
            out["TCP_WIN_MAX_OUT"][rows] = _choice(
                _EXT_WIN_SERVER if d_side == EXTERNAL else win_s, m, rng
            )
        if kind.proto == ICMP:
            out["ICMP_TYPE"][rows] = kind.icmp
            out["ICMP_IPV4_TYPE"][rows] = kind.icmp // 256
        if kind.ftp:
            codes, weights = zip(*kind.ftp, strict=True)
            p = np.array(weights) / sum(weights)
            out["FTP_COMMAND_RET_CODE"][rows] = rng.choice(np.array(codes), m, p=p)
        if kind.dns:
            dns_id[rows] = rng.integers(0, 65536, m)
            out["DNS_QUERY_TYPE"][rows] = rng.choice(_DNS_TYPES[0], m, p=_DNS_TYPES[1])
            ttl = rng.choice(_DNS_TTLS[0], m, p=_DNS_TTLS[1])
            out["DNS_TTL_ANSWER"][rows] = np.where(reply, ttl, 0)
    sflags = cols["SERVER_TCP_FLAGS"]
    out["TCP_WIN_MAX_OUT"][(sflags == 0) | (sflags == (RST | ACK))] = 0.0
    cols.update(out)
    return {
        "IPV4_SRC_ADDR": src,
        "L4_SRC_PORT": sport,
        "IPV4_DST_ADDR": dst,
        "DNS_QUERY_ID": dns_id,
        "_dport": dport,
        "_l7": l7,
    }


def _choice(values: F64, m: int, rng: np.random.Generator) -> F64:
    return values[rng.integers(0, values.size, m)]


def _ports(kind: Kind, m: int, rng: np.random.Generator) -> tuple[I64, I64]:
    """Each flow's index into ``kind.ports``, and its destination port."""
    if not kind.ports:  # a scan: mostly any port, some well-known ones
        known = rng.random(m) < 0.3
        ports = np.where(known, _pick_int(_WELL_KNOWN, m, rng), rng.integers(1, 65536, m))
        return np.zeros(m, dtype=np.int64), ports
    ports = np.array(kind.ports, dtype=np.int64)
    if len(ports) == 1:
        idx = np.zeros(m, dtype=np.int64)
    else:
        w = np.array(kind.port_weights or [1.0] * len(ports))
        idx = rng.choice(len(ports), m, p=w / w.sum())
    chosen = ports[idx]
    if kind.proto != ICMP:
        chosen = np.where(chosen == 0, rng.integers(1024, 65536, m), chosen)
    return idx, chosen


def _pick_int(values: NDArray[np.int64], m: int, rng: np.random.Generator) -> I64:
    return values[rng.integers(0, values.size, m)]
