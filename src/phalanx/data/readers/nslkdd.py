"""NSL-KDD (Tavallaee, Bagheri, Lu, Ghorbani, IEEE CISDA 2009).

Two layouts:

* the ``.txt`` files as distributed: no header, CRLF line ends, 41 features, the attack name and
  the difficulty level (43 fields; copies without the difficulty have 42);
* the ``.arff`` copies (often gzipped): an ARFF header (``@attribute 'name' type`` lines up to
  ``@data``), then the same 41 features and a class that is only ``normal`` / ``anomaly``. Those
  labels are binary: ``normal`` maps to benign and ``anomaly`` to ``other``.

The difficulty is not a feature: it says how many of the authors' classifiers labelled the record
correctly, a property of the label. It is kept as an identifier.
"""

from __future__ import annotations

import re
from pathlib import Path

from phalanx.core.errors import FormatError
from phalanx.core.features.schema import ColumnKind
from phalanx.data.readers.base import Plan
from phalanx.data.readers.inputs import Head
from phalanx.data.readers.layout import Layout, plan_columns, split_header
from phalanx.data.schemas import NSL_KDD

LAYOUT = Layout(
    format="nsl-kdd",
    schema=NSL_KDD,
    label=("attack", "class"),
    min_known=20,
)

FEATURES: tuple[str, ...] = tuple(c.name for c in NSL_KDD.columns if c.name != "difficulty")
_PROTOCOLS = {"tcp", "udp", "icmp"}
_ATTRIBUTE = re.compile(r"^@attribute\s+('([^']*)'|\"([^\"]*)\"|(\S+))\s*(.*)$", re.IGNORECASE)
_BINARY_CLASSES = {"normal", "anomaly"}
_MAX_HEADER_LINES = 2000


def _is_txt(head: Head) -> bool:
    lines = head.lines(1)
    if not lines:
        return False
    fields = lines[0][0].split(",")
    return len(fields) in (42, 43) and fields[1].strip() in _PROTOCOLS


def _is_arff(head: Head) -> bool:
    for text, _ in head.lines(50):
        t = text.strip().lower()
        if not t or t.startswith("%"):
            continue
        return t.startswith("@relation")
    return False


def score(head: Head) -> float:
    """1 for an NSL-KDD ``.txt`` or ARFF head, 0 otherwise."""
    if _is_txt(head):
        return 1.0
    if _is_arff(head):
        names, _, _, _ = _arff_header(Path("<head>"), head)
        return 1.0 if LAYOUT.known(names) >= LAYOUT.min_known else 0.0
    return 0.0


def _arff_header(path: Path, head: Head) -> tuple[list[str], set[str], int, int]:
    """Attribute names, the class attribute's values, and the header's bytes and lines."""
    names: list[str] = []
    classes: set[str] = set()
    for number, (text, end) in enumerate(head.lines(_MAX_HEADER_LINES), start=1):
        t = text.strip()
        low = t.lower()
        if low.startswith("@data"):
            return names, classes, end, number
        m = _ATTRIBUTE.match(t)
        if m:
            name = m.group(2) or m.group(3) or m.group(4) or ""
            names.append(name)
            rest = m.group(5).strip()
            if rest.startswith("{"):
                classes = {v.strip().strip("'\"").lower() for v in rest.strip("{} ").split(",")}
    raise FormatError(
        str(path),
        "ARFF header without an @data line",
        expected=f"'@data' within the first {_MAX_HEADER_LINES} lines",
        found=f"{len(names)} @attribute lines",
        hint="the file is truncated or not ARFF",
    )


def plan(path: Path, head: Head, overrides: dict[str, ColumnKind] | None) -> Plan:
    """How to read an NSL-KDD ``.txt`` or ARFF file."""
    if _is_arff(head):
        names, classes, end, lines = _arff_header(path, head)
        binary = bool(classes) and classes <= _BINARY_CLASSES and names[-1].lower() == "class"
        return plan_columns(
            LAYOUT,
            path,
            names,
            header_bytes=end,
            header_lines=lines,
            overrides=overrides,
            label_is_binary=binary,
        )
    if not _is_txt(head):
        first = head.lines(1)
        raise FormatError(
            str(path),
            "this is not an NSL-KDD file",
            line=1,
            expected="41 features, attack name and difficulty (43 comma-separated fields, no"
            " header, protocol tcp/udp/icmp in field 2) or an ARFF header",
            found=first[0][0] if first else head.data[:80].decode("utf-8", errors="replace"),
            hint="pass the right --format, or --format auto",
        )
    n = len(split_header(head.lines(1)[0][0]))
    names = [*FEATURES, "attack", "difficulty"][:n]
    return plan_columns(LAYOUT, path, names, header_bytes=0, header_lines=0, overrides=overrides)
