"""The streaming CSV engine every reader uses.

A file is read in two possible passes:

* the **fast pass** parses with several threads and converts numbers inside pyarrow. Clean files
  (the common case) are read by it alone.
* the **exact pass** starts when the fast pass meets anything wrong (a row with the wrong number
  of fields, a cell that is not a number). It re-reads the file single-threaded, where pyarrow
  knows the physical row numbers, reads numeric columns as strings and converts them itself, and
  skips the rows the fast pass already delivered. In strict mode it raises the first problem with
  ``path:line``; in collect mode it quarantines bad rows, counts them and keeps the rest.

Memory stays bounded: the parser reads 1 MiB blocks and at most ``chunk_rows`` rows are held
before a batch is handed out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from numpy.typing import NDArray

from phalanx.core.errors import IngestError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.schema import FeatureSchema
from phalanx.data.readers.base import (
    HINT_COLLECT,
    QUARANTINE_SAMPLES,
    ErrorMode,
    Plan,
    ReadReport,
)
from phalanx.data.readers.convert import NULL_VALUES, assemble, to_float
from phalanx.data.readers.inputs import READ_ERRORS, open_input, translate

BLOCK_BYTES = 1 << 20
"""Parser block size: measured best for throughput on the NetFlow v2 files."""


class _NeedExact(Exception):
    """The fast pass met something it cannot locate; the exact pass takes over."""


class FlowReader:
    """An iterable of :class:`FlowBatch` chunks of one file, with a report once exhausted.

    Attributes
    ----------
    path:
        The file.
    format:
        Its format name.
    schema:
        The effective feature schema of the batches.
    report:
        The :class:`ReadReport` of the last (or current) iteration.
    """

    def __init__(self, path: Path, plan: Plan, *, chunk_rows: int, errors: ErrorMode) -> None:
        self.path = path
        self.plan = plan
        self.format: str = plan.format
        self.schema: FeatureSchema = plan.schema
        self.chunk_rows = chunk_rows
        self.errors: ErrorMode = errors
        self.report = ReadReport.start(str(path), plan)

    def __repr__(self) -> str:
        return f"FlowReader({str(self.path)!r}, format={self.format!r})"

    def __iter__(self) -> Iterator[FlowBatch]:
        self.report = ReadReport.start(str(self.path), self.plan)
        delivered = 0
        try:
            for batch in _Pass(self, exact=False, skip=0).run():
                delivered += len(batch)
                yield batch
            return
        except _NeedExact:
            pass
        yield from _Pass(self, exact=True, skip=delivered).run()


class _Pass:
    """One pass over the file (see the module docstring)."""

    def __init__(self, reader: FlowReader, *, exact: bool, skip: int) -> None:
        self.reader = reader
        self.plan = reader.plan
        self.report = reader.report
        self.exact = exact
        self.skip = skip  # non-blank rows already delivered by the fast pass
        self.strict = reader.errors == "strict"
        self.invalid: list[int] = []  # physical data-row numbers the parser rejected
        self.first_invalid: tuple[int | None, int, int, str] | None = None
        self.seen = 0  # rows the parser delivered so far (exact pass: blank lines included)
        self.nonblank = 0

    # -- parser callbacks -------------------------------------------------------------------
    def _on_invalid(self, row: Any) -> str:
        number = row.number
        if number is not None:
            self.invalid.append(int(number))
        if self.strict:
            if self.first_invalid is None:
                self.first_invalid = (number, row.expected_columns, row.actual_columns, row.text)
            return "error"
        line = None if number is None else self.plan.header_lines + int(number)
        self.report.quarantine(
            line, f"{row.actual_columns} fields where the header has {row.expected_columns}"
        )
        return "skip"

    def _options(self) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions]:
        plan = self.plan
        wanted = [plan.column_of[c.name] for c in plan.schema.columns if c.name in plan.column_of]
        wanted += [k for k in (plan.label_key, plan.binary_key) if k is not None]
        numeric = {plan.column_of[n] for n in plan.schema.numeric}
        types = {
            k: (pa.float64() if k in numeric and not self.exact else pa.string()) for k in wanted
        }
        # The exact pass reads Latin-1 (any byte decodes) so that pyarrow can hand rows with bad
        # UTF-8 to the invalid-row handler; convert.decode_strings recovers the original bytes.
        read = pacsv.ReadOptions(
            column_names=list(plan.keys),
            use_threads=not self.exact,
            block_size=BLOCK_BYTES,
            encoding="latin-1" if self.exact else "utf8",
        )
        parse = pacsv.ParseOptions(
            quote_char=False,
            invalid_row_handler=self._on_invalid if self.exact else None,
            ignore_empty_lines=not self.exact,
        )
        convert = pacsv.ConvertOptions(
            column_types=types,
            include_columns=wanted,
            check_utf8=False,
            strings_can_be_null=True,
            null_values=NULL_VALUES,
        )
        return read, parse, convert

    # -- the pass ----------------------------------------------------------------------------
    def run(self) -> Iterator[FlowBatch]:
        path = self.reader.path
        stream = open_input(path)
        try:
            yield from self._read(stream)
        except _NeedExact:
            raise
        except IngestError:
            raise
        except READ_ERRORS as e:
            if not self.exact:
                raise _NeedExact from e
            if self.first_invalid is not None:
                raise self._row_error() from e
            raise translate(path, e, line=self._line_of(self.seen)) from e
        finally:
            stream.close()

    def _read(self, stream: Any) -> Iterator[FlowBatch]:
        header = stream.read(self.plan.header_bytes) if self.plan.header_bytes else b""
        if len(header) < self.plan.header_bytes:
            return
        read, parse, convert = self._options()
        try:
            parser = pacsv.open_csv(
                stream, read_options=read, parse_options=parse, convert_options=convert
            )
        except pa.ArrowInvalid as e:
            if "Empty CSV file" in str(e):
                return
            raise
        pending: list[pa.RecordBatch] = []
        held = 0
        for record in parser:
            if record.num_rows == 0:
                continue
            pending.append(record)
            held += record.num_rows
            while held >= self.reader.chunk_rows:
                table = pa.Table.from_batches(pending)
                head = table.slice(0, self.reader.chunk_rows)
                rest = table.slice(self.reader.chunk_rows)
                pending = rest.to_batches()
                held = rest.num_rows
                batch = self._convert(head)
                if batch is not None:
                    yield batch
        if held:
            batch = self._convert(pa.Table.from_batches(pending))
            if batch is not None:
                yield batch

    def _convert(self, table: pa.Table) -> FlowBatch | None:
        plan = self.plan
        start = self.seen
        self.seen += table.num_rows
        keep = ~_blank(table)
        # Rows with every field empty are skipped and counted; in the exact pass, rows (and
        # blank rows) before the fast pass's last delivered row are skipped silently.
        rank = self.nonblank + np.cumsum(keep) - keep
        self.nonblank += int(keep.sum())
        self.report.empty_rows += int((~keep & (rank >= self.skip)).sum())
        keep &= rank >= self.skip
        numeric: list[NDArray[np.float64]] = []
        bad = np.zeros(table.num_rows, dtype=np.bool_)
        for name in plan.schema.numeric:
            values, not_number = to_float(table[plan.column_of[name]])
            numeric.append(values)
            if self.exact and not_number.any():
                self._bad_values(name, table, not_number & keep & ~bad, start)
                bad |= not_number
        if not self.exact and bad.any():
            raise _NeedExact
        keep &= ~bad
        if not keep.any():
            return None
        if not keep.all():
            table = table.filter(pa.array(keep))
            numeric = [v[keep] for v in numeric]
        return assemble(table, numeric, plan, self.report, latin1=self.exact)

    def _bad_values(self, name: str, table: pa.Table, rows: NDArray[np.bool_], start: int) -> None:
        key = self.plan.column_of[name]
        found = np.flatnonzero(rows).tolist()
        if self.strict and found:
            i = found[0]
            raise IngestError(
                str(self.reader.path),
                f"column {name!r} holds something that is not a number",
                line=self._line_of(start + i),
                expected=f"a number in column {name!r}",
                found=str(table[key][i].as_py()),
                hint=HINT_COLLECT,
            )
        room = max(0, QUARANTINE_SAMPLES - len(self.report.quarantine_samples))
        for i in found[:room]:
            value = str(table[key][i].as_py())
            reason = f"not a number in column {name!r}: {value[:60]!r}"
            self.report.quarantine(self._line_of(start + i), reason)
        self.report.quarantined += max(0, len(found) - room)

    def _line_of(self, delivered: int) -> int | None:
        """Physical line of the ``delivered``-th (0-based) row the parser delivered."""
        if not self.exact:
            return None
        skipped = np.sort(np.asarray(self.invalid, dtype=np.int64))
        before = skipped - 1 - np.arange(len(skipped))
        k = int(np.searchsorted(before, delivered, side="right"))
        return self.plan.header_lines + delivered + 1 + k

    def _row_error(self) -> IngestError:
        number, expected, actual, text = self.first_invalid or (None, 0, 0, "")
        line = None if number is None else self.plan.header_lines + int(number)
        return IngestError(
            str(self.reader.path),
            "a row has the wrong number of fields",
            line=line,
            expected=f"{expected} comma-separated fields, as in the header",
            found=f"{actual} fields: {text}",
            hint=HINT_COLLECT,
        )


def _blank(table: pa.Table) -> NDArray[np.bool_]:
    """Rows where every column is empty (blank lines in the exact pass, or only commas)."""
    blank = np.ones(table.num_rows, dtype=np.bool_)
    for col in table.columns:
        blank &= col.is_null().to_numpy(zero_copy_only=False)
        if not blank.any():
            break
    return blank
