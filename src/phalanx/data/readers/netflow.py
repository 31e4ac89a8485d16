"""NetFlow v2 (``NF-*-v2``): 43 NetFlow features + ``Label`` + ``Attack`` (+ ``Dataset``).

Sarhan, Layeghy, Portmann, "Towards a Standard Feature Set for Network Intrusion Detection
System Datasets", MONET 2022. The four releases (NF-BoT-IoT-v2, NF-ToN-IoT-v2, NF-UNSW-NB15-v2,
NF-CSE-CIC-IDS2018-v2) share the schema; ``Attack`` holds the original attack names of each.
"""

from __future__ import annotations

from pathlib import Path

from phalanx.core.errors import FormatError
from phalanx.core.features.schema import ColumnKind
from phalanx.data.readers.base import Plan
from phalanx.data.readers.inputs import Head
from phalanx.data.readers.layout import Layout, plan_columns, split_header
from phalanx.data.schemas import NETFLOW_V2

LAYOUT = Layout(
    format="netflow-v2",
    schema=NETFLOW_V2,
    label=("attack",),
    binary=("label",),
    drop={"dataset": "names the source dataset: provenance, not traffic (it would leak the label)"},
    min_known=10,
)


def header_names(path: Path, head: Head, format: str) -> tuple[list[str], int]:
    """The header fields of a CSV with a header line, and the header's byte length."""
    lines = head.lines(1)
    if not lines:
        raise FormatError(
            str(path),
            f"no line break in the first {len(head.data)} bytes: not a {format} CSV",
            line=1,
            expected="a header line naming the columns",
            found=head.data[:80].decode("utf-8", errors="replace"),
        )
    text, end = lines[0]
    return split_header(text), end


def score(head: Head) -> float:
    """Share of the header's fields that are NetFlow v2 columns (0 when too few)."""
    lines = head.lines(1)
    if not lines:
        return 0.0
    names = split_header(lines[0][0])
    known = LAYOUT.known(names)
    return known / len(names) if names and known >= LAYOUT.min_known else 0.0


def plan(path: Path, head: Head, overrides: dict[str, ColumnKind] | None) -> Plan:
    """How to read a NetFlow v2 CSV."""
    names, end = header_names(path, head, LAYOUT.format)
    return plan_columns(LAYOUT, path, names, header_bytes=end, header_lines=1, overrides=overrides)
