"""Documented feature schemas of every source Phalanx reads.

Each schema lists every column of the source with its kind: numeric feature (``heavy_tailed`` ones
get a log transform), categorical feature (hashed into ``buckets`` one-hot slots), or identifier
(kept for alerts, never a model input, with the reason). Identifiers that do not generalize across
networks or leak the label are excluded by default; ``FeatureSchema.with_kinds`` overrides that
and changes the schema hash, so a federation only agrees on an override explicitly.
"""

from __future__ import annotations

from phalanx.core.features.schema import Column, ColumnKind, FeatureSchema

N = ColumnKind.NUMERIC
C = ColumnKind.CATEGORICAL
I = ColumnKind.IDENTIFIER  # noqa: E741


def _num(name: str, heavy: bool = False) -> Column:
    return Column(name, N, heavy_tailed=heavy)


def _cat(name: str, buckets: int) -> Column:
    return Column(name, C, buckets=buckets)


def _ident(name: str, reason: str) -> Column:
    return Column(name, I, reason=reason)


# --- NetFlow v2 (Sarhan, Layeghy, Portmann, MONET 2022): 43 features + Label, Attack -----------
NETFLOW_V2 = FeatureSchema(
    source="netflow-v2",
    version=1,
    columns=(
        _ident("IPV4_SRC_ADDR", "address: does not generalize across networks"),
        _ident("L4_SRC_PORT", "ephemeral source port: noise that a model memorizes"),
        _ident("IPV4_DST_ADDR", "address: does not generalize across networks"),
        _cat("L4_DST_PORT", 128),
        _cat("PROTOCOL", 16),
        _cat("L7_PROTO", 64),
        _num("IN_BYTES", True),
        _num("IN_PKTS", True),
        _num("OUT_BYTES", True),
        _num("OUT_PKTS", True),
        _num("TCP_FLAGS"),
        _num("CLIENT_TCP_FLAGS"),
        _num("SERVER_TCP_FLAGS"),
        _num("FLOW_DURATION_MILLISECONDS", True),
        _num("DURATION_IN", True),
        _num("DURATION_OUT", True),
        _num("MIN_TTL"),
        _num("MAX_TTL"),
        _num("LONGEST_FLOW_PKT", True),
        _num("SHORTEST_FLOW_PKT", True),
        _num("MIN_IP_PKT_LEN", True),
        _num("MAX_IP_PKT_LEN", True),
        _num("SRC_TO_DST_SECOND_BYTES", True),
        _num("DST_TO_SRC_SECOND_BYTES", True),
        _num("RETRANSMITTED_IN_BYTES", True),
        _num("RETRANSMITTED_IN_PKTS", True),
        _num("RETRANSMITTED_OUT_BYTES", True),
        _num("RETRANSMITTED_OUT_PKTS", True),
        _num("SRC_TO_DST_AVG_THROUGHPUT", True),
        _num("DST_TO_SRC_AVG_THROUGHPUT", True),
        _num("NUM_PKTS_UP_TO_128_BYTES", True),
        _num("NUM_PKTS_128_TO_256_BYTES", True),
        _num("NUM_PKTS_256_TO_512_BYTES", True),
        _num("NUM_PKTS_512_TO_1024_BYTES", True),
        _num("NUM_PKTS_1024_TO_1514_BYTES", True),
        _num("TCP_WIN_MAX_IN", True),
        _num("TCP_WIN_MAX_OUT", True),
        _num("ICMP_TYPE"),
        _num("ICMP_IPV4_TYPE"),
        _ident("DNS_QUERY_ID", "random transaction id: carries no signal"),
        _num("DNS_QUERY_TYPE"),
        _num("DNS_TTL_ANSWER", True),
        _num("FTP_COMMAND_RET_CODE"),
    ),
)
