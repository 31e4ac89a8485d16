"""UNSW-NB15 (Moustafa & Slay, MilCIS 2015).

Two layouts: the training/testing *partition* CSVs (header line, ``id`` first, ``attack_cat`` and
``label`` last; a UTF-8 BOM and CRLF line ends are possible) and the four *raw* files
``UNSW-NB15_1..4.csv`` (no header; the 49 columns of ``NUSW-NB15_features.csv``, addresses and
timestamps included; ``attack_cat`` is empty for normal traffic and spelled with spaces and
variants such as ``' Fuzzers '`` or ``Backdoors``).
"""

from __future__ import annotations

import re
from pathlib import Path

from phalanx.core.errors import FormatError
from phalanx.core.features.schema import ColumnKind
from phalanx.data.readers.base import Plan
from phalanx.data.readers.inputs import Head
from phalanx.data.readers.layout import Layout, plan_columns, split_header
from phalanx.data.readers.netflow import header_names
from phalanx.data.schemas import UNSW_NB15

LAYOUT = Layout(
    format="unsw-nb15",
    schema=UNSW_NB15,
    aliases={
        "smeansz": "smean",
        "dmeansz": "dmean",
        "res_bdy_len": "response_body_len",
        "sintpkt": "sinpkt",
        "dintpkt": "dinpkt",
        "ct_src_ ltm": "ct_src_ltm",
    },
    label=("attack_cat",),
    binary=("label",),
    min_known=10,
)

RAW_NAMES: tuple[str, ...] = (
    "srcip", "sport", "dstip", "dsport", "proto", "state", "dur", "sbytes", "dbytes", "sttl",
    "dttl", "sloss", "dloss", "service", "Sload", "Dload", "Spkts", "Dpkts", "swin", "dwin",
    "stcpb", "dtcpb", "smeansz", "dmeansz", "trans_depth", "res_bdy_len", "Sjit", "Djit",
    "Stime", "Ltime", "Sintpkt", "Dintpkt", "tcprtt", "synack", "ackdat", "is_sm_ips_ports",
    "ct_state_ttl", "ct_flw_http_mthd", "is_ftp_login", "ct_ftp_cmd", "ct_srv_src",
    "ct_srv_dst", "ct_dst_ltm", "ct_src_ltm", "ct_src_dport_ltm", "ct_dst_sport_ltm",
    "ct_dst_src_ltm", "attack_cat", "Label",
)  # fmt: skip
"""Column names of the headerless raw files, from ``NUSW-NB15_features.csv``."""

_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def _is_raw(head: Head) -> bool:
    lines = head.lines(1)
    if not lines:
        return False
    fields = split_header(lines[0][0])
    return len(fields) == len(RAW_NAMES) and bool(_IPV4.match(fields[0].strip()))


def score(head: Head) -> float:
    """1 for a raw file, else the share of header fields that are UNSW-NB15 columns."""
    if _is_raw(head):
        return 1.0
    lines = head.lines(1)
    if not lines:
        return 0.0
    names = split_header(lines[0][0])
    known = LAYOUT.known(names)
    return known / len(names) if names and known >= LAYOUT.min_known else 0.0


def plan(path: Path, head: Head, overrides: dict[str, ColumnKind] | None) -> Plan:
    """How to read a UNSW-NB15 partition CSV or raw file."""
    if _is_raw(head):
        return plan_columns(
            LAYOUT, path, list(RAW_NAMES), header_bytes=0, header_lines=0, overrides=overrides
        )
    names, end = header_names(path, head, LAYOUT.format)
    if len(names) == len(RAW_NAMES) and LAYOUT.known(names) < LAYOUT.min_known:
        raise FormatError(
            str(path),
            "this looks like a raw UNSW-NB15 file, but its first field is not an IPv4 address",
            line=1,
            expected="srcip,sport,dstip,... (49 fields, no header)",
            found=",".join(names[:6]),
        )
    return plan_columns(LAYOUT, path, names, header_bytes=end, header_lines=1, overrides=overrides)
