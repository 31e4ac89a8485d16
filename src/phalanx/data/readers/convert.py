"""Turning a parsed chunk (a pyarrow table) into a :class:`FlowBatch`.

Numbers arrive either already parsed as float64 (the fast pass) or as strings (the exact pass,
which finds the rows holding something that is not a number). Strings are decoded once per
distinct value (dictionary encoding), so labels, categories and identifiers cost little.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from phalanx.core.features.batch import FlowBatch
from phalanx.data.readers.base import Plan, ReadReport
from phalanx.data.taxonomy import categorize, categorize_binary

NULL_VALUES: list[str] = ["", "NaN", "nan", "-nan", "-NaN", "NA", "N/A", "null", "NULL"]
"""Cell values read as missing."""

_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|infinity|nan)$"
_TRIM = " \t\"'"

Mapper = Callable[[str], tuple[str, bool]]


def _array(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def decode_strings(
    col: pa.ChunkedArray | pa.Array, *, latin1: bool = False
) -> tuple[list[str], NDArray[np.intp]]:
    """Distinct values (stripped of spaces and quotes, bad UTF-8 replaced) and row indices.

    ``latin1``: the parser transcoded the bytes from Latin-1 (the exact pass does, so that rows
    with bad UTF-8 reach the invalid-row handler); the original bytes are recovered first.
    """
    arr = _array(col)
    if not pa.types.is_string(arr.type) and not pa.types.is_binary(arr.type):
        arr = pc.cast(arr, pa.string())
    enc = pc.dictionary_encode(pc.fill_null(arr, ""))
    raw = enc.dictionary.view(pa.binary()).to_pylist()
    if latin1:
        raw = [b.decode("utf-8", errors="replace").encode("latin-1", errors="replace") for b in raw]
    values = [b.decode("utf-8", errors="replace").strip(_TRIM) for b in raw]
    return values, enc.indices.to_numpy().astype(np.intp, copy=False)


def strings(col: pa.ChunkedArray | pa.Array, *, latin1: bool = False) -> NDArray[np.object_]:
    """A column as an object array of ``str``."""
    values, idx = decode_strings(col, latin1=latin1)
    return np.array(values, dtype=object)[idx] if values else np.empty(len(idx), dtype=object)


def to_float(col: pa.ChunkedArray | pa.Array) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Numbers of a column (NaN where missing) and the mask of cells that are not numbers."""
    arr = _array(col)
    n = len(arr)
    if pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type):
        values = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        return values, np.zeros(n, dtype=np.bool_)
    try:
        cast = pc.cast(arr, pa.float64())
        return cast.to_numpy(zero_copy_only=False), np.zeros(n, dtype=np.bool_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    text = pc.utf8_trim(pc.cast(arr.view(pa.binary()), pa.string(), safe=False), _TRIM)
    missing = pc.fill_null(pc.is_in(text, value_set=pa.array(NULL_VALUES)), True)
    number = pc.fill_null(pc.match_substring_regex(text, _NUMBER, ignore_case=True), False)
    good = pc.and_(number, pc.invert(missing))
    values = pc.cast(pc.if_else(good, text, pa.scalar(None, pa.string())), pa.float64())
    bad = pc.invert(pc.or_(number, missing)).to_numpy(zero_copy_only=False)
    return values.to_numpy(zero_copy_only=False), bad


@dataclass
class Labels:
    """Labels and categories of a chunk, with the counts the report needs."""

    label: NDArray[np.object_]
    category: NDArray[np.object_]
    label_counts: dict[str, int]
    category_counts: dict[str, int]
    unknown: dict[str, int]


def labels_of(table: pa.Table, plan: Plan, *, latin1: bool = False) -> Labels:
    """Original labels and taxonomy categories of every row of ``table``."""
    n = table.num_rows
    label = np.full(n, "", dtype=object)
    category = np.full(n, "", dtype=object)
    label_counts: dict[str, int] = {}
    category_counts: dict[str, int] = {}
    unknown: dict[str, int] = {}
    fill = np.ones(n, dtype=np.bool_)
    if plan.label_key is not None:
        values, idx = decode_strings(table[plan.label_key], latin1=latin1)
        _apply(values, idx, categorize, label, category, None)
        fill = label == ""
        _count(values, idx, categorize, label_counts, category_counts, unknown, ~fill)
    if plan.binary_key is not None and fill.any():
        values, idx = decode_strings(table[plan.binary_key], latin1=latin1)
        _apply(values, idx, categorize_binary, label, category, fill)
        _count(values, idx, categorize_binary, label_counts, category_counts, unknown, fill)
    elif plan.label_key is not None and fill.any():
        _count([""], np.zeros(n, np.intp), categorize, label_counts, category_counts, unknown, fill)
        category[fill] = "other"
    return Labels(label, category, label_counts, category_counts, unknown)


def _apply(
    values: list[str],
    idx: NDArray[np.intp],
    mapper: Mapper,
    label: NDArray[np.object_],
    category: NDArray[np.object_],
    where: NDArray[np.bool_] | None,
) -> None:
    if not values:
        return
    cats = np.array([mapper(v)[0] for v in values], dtype=object)
    vals = np.array(values, dtype=object)
    if where is None:
        label[:] = vals[idx]
        category[:] = cats[idx]
    else:
        label[where] = vals[idx[where]]
        category[where] = cats[idx[where]]


def _count(
    values: list[str],
    idx: NDArray[np.intp],
    mapper: Mapper,
    label_counts: dict[str, int],
    category_counts: dict[str, int],
    unknown: dict[str, int],
    where: NDArray[np.bool_],
) -> None:
    if not values:
        return
    counts = np.bincount(idx[where], minlength=len(values))
    for value, count in zip(values, counts.tolist(), strict=True):
        if count == 0:
            continue
        cat, known = mapper(value)
        label_counts[value] = label_counts.get(value, 0) + count
        category_counts[cat] = category_counts.get(cat, 0) + count
        if not known:
            unknown[value] = unknown.get(value, 0) + count


def assemble(
    table: pa.Table,
    numeric: list[NDArray[np.float64]],
    plan: Plan,
    report: ReadReport,
    *,
    latin1: bool = False,
) -> FlowBatch:
    """A :class:`FlowBatch` of ``table``'s rows, counting into ``report``."""
    schema = plan.schema
    n = table.num_rows
    matrix = np.empty((n, len(numeric)), dtype=np.float64)
    for j, values in enumerate(numeric):
        matrix[:, j] = values
    n_inf = mark_missing(matrix, schema.numeric, report)
    cat_names = schema.categorical
    categorical = np.empty((n, len(cat_names)), dtype=object)
    for j, name in enumerate(cat_names):
        categorical[:, j] = strings(table[plan.column_of[name]], latin1=latin1)
    identifiers: dict[str, NDArray[np.generic]] = {
        name: strings(table[plan.column_of[name]], latin1=latin1)
        for name in schema.identifiers
        if name in plan.column_of
    }
    labels = labels_of(table, plan, latin1=latin1)
    report.rows += n
    _merge(report.labels, labels.label_counts)
    _merge(report.categories, labels.category_counts)
    _merge(report.unknown_labels, labels.unknown)
    return FlowBatch(
        schema=schema,
        numeric=matrix,
        categorical=categorical,
        label=labels.label,
        category=labels.category,
        identifiers=identifiers,
        n_infinite=n_inf,
    )


def _merge(into: dict[str, int], counts: dict[str, int]) -> None:
    for k, v in counts.items():
        into[k] = into.get(k, 0) + v


def mark_missing(
    matrix: NDArray[np.float64], names: Sequence[str], report: ReadReport
) -> NDArray[np.int64]:
    """Turn infinite values of ``matrix`` into NaN (missing), in place, counting per column.

    Returns the infinities found per column.

    Infinities (CICFlowMeter's rates over zero-length flows) and NaN (empty or absent fields)
    are both missing to the model; ``report`` keeps them apart.
    """
    infinite = np.isinf(matrix)
    n_inf: NDArray[np.int64] = infinite.sum(axis=0).astype(np.int64)
    if n_inf.any():
        matrix[infinite] = np.nan
    n_nan = np.isnan(matrix).sum(axis=0) - n_inf
    for name, k, m in zip(names, n_inf.tolist(), n_nan.tolist(), strict=True):
        report.n_infinite[name] += k
        report.n_missing[name] += m
    return n_inf
