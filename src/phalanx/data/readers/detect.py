"""Format detection from a file's head: header names and content, never the file name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from phalanx.core.errors import FormatError
from phalanx.core.features.schema import ColumnKind
from phalanx.data.readers import cicids, netflow, nslkdd, pcap, unsw, zeek
from phalanx.data.readers.base import ALL_FORMATS, Plan
from phalanx.data.readers.inputs import Head, read_head

Planner = Callable[[Path, Head, dict[str, ColumnKind] | None], Plan]
Scorer = Callable[[Head], float]

PLANNERS: dict[str, Planner] = {
    "nsl-kdd": nslkdd.plan,
    "unsw-nb15": unsw.plan,
    "cic-ids2017": cicids.plan,
    "netflow-v2": netflow.plan,
}
SCORERS: dict[str, Scorer] = {
    "nsl-kdd": nslkdd.score,
    "unsw-nb15": unsw.score,
    "cic-ids2017": cicids.score,
    "netflow-v2": netflow.score,
    "pcap": pcap.score,
    "zeek-conn": zeek.score,
}
_MIN_SCORE = 0.5


def guess(head: Head) -> str | None:
    """The best-matching format of a head, or ``None`` when none matches well enough."""
    scores = {name: SCORERS[name](head) for name in ALL_FORMATS}
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] >= _MIN_SCORE else None


def detect_head(path: Path, head: Head) -> str:
    """The format of ``head`` (read from ``path``), or a :class:`FormatError`."""
    found = guess(head)
    if found is None:
        first = head.lines(1)
        raise FormatError(
            str(path),
            "not a flow format Phalanx recognises",
            line=1,
            expected=f"one of {', '.join(ALL_FORMATS)} (by header names, magic numbers or,"
            " for headerless files, by content)",
            found=first[0][0] if first else head.data[:80].decode("utf-8", errors="replace"),
            hint="pass --format if you know the format; see docs/data.md",
        )
    return found


def detect_format(path: str | Path) -> str:
    """The format of the file at ``path``: one of :data:`ALL_FORMATS`.

    Raises
    ------
    FormatError
        When the file matches no known format.
    IngestError
        When the file cannot be opened or decompressed.
    """
    p = Path(path)
    return detect_head(p, read_head(p))
