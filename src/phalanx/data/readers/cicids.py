"""CIC-IDS2017 (Sharafaldin, Habibi Lashkari, Ghorbani, ICISSP 2018), two layouts.

* **original**: the CICFlowMeter CSVs as published (``MachineLearningCVE``: Destination Port, 77
  statistics, Label; ``GeneratedLabelledFlows`` adds the flow key and timestamp). Column names
  start with spaces, ``Flow Bytes/s`` and ``Flow Packets/s`` hold ``Infinity`` and ``NaN``, and
  ``Fwd Header Length`` appears twice (re-saved copies call the second ``Fwd Header Length.1``):
  the copy is dropped and reported. Labels use an en dash (``Web Attack \u2013 XSS``) that older
  tools turned into mojibake.
* **improved**: the re-extraction by DistriNet (Engelen, Rimmer, Joosen, WTMC 2021): ``id``, the
  flow key, 81 statistics, ``Label`` (with ``- Attempted`` variants), ``Attempted Category``.

Files holding a subset of the known columns (feature-selected copies) are read with the schema
restricted to the columns present; a binary label column ``Labelb`` (0/1) is accepted.
"""

from __future__ import annotations

from pathlib import Path

from phalanx.core.features.schema import ColumnKind
from phalanx.data.readers.base import Plan
from phalanx.data.readers.inputs import Head
from phalanx.data.readers.layout import Layout, plan_columns, split_header
from phalanx.data.readers.netflow import header_names
from phalanx.data.schemas import CIC_IDS2017, CIC_IDS2017_IMPROVED

_DROP = {
    "attempted category": "label metadata (which attack was attempted): it would leak the label",
}

ORIGINAL = Layout(
    format="cic-ids2017",
    schema=CIC_IDS2017,
    label=("label",),
    binary=("labelb",),
    drop=_DROP,
    min_known=8,
)
IMPROVED = Layout(
    format="cic-ids2017",
    schema=CIC_IDS2017_IMPROVED,
    label=("label",),
    binary=("labelb",),
    drop=_DROP,
    min_known=8,
)


def _best(names: list[str]) -> tuple[Layout, int]:
    scored = [(layout.known(names), i, layout) for i, layout in enumerate((ORIGINAL, IMPROVED))]
    known, _, layout = max(scored, key=lambda t: (t[0], -t[1]))
    return layout, known


def score(head: Head) -> float:
    """Share of the header's fields that are CIC-IDS2017 columns (0 when too few)."""
    lines = head.lines(1)
    if not lines:
        return 0.0
    names = split_header(lines[0][0])
    layout, known = _best(names)
    return known / len(names) if names and known >= layout.min_known else 0.0


def plan(path: Path, head: Head, overrides: dict[str, ColumnKind] | None) -> Plan:
    """How to read a CIC-IDS2017 CSV of either layout."""
    names, end = header_names(path, head, "cic-ids2017")
    layout, _ = _best(names)
    return plan_columns(layout, path, names, header_bytes=end, header_lines=1, overrides=overrides)
