"""One error tree for Phalanx.

Every error a person can meet is a :class:`PhalanxError`. Its message names the thing, what was
expected, what was found, and what to do. Third-party exceptions are translated into this tree at
the adapter edge; the CLI maps the tree to exit codes and nothing below ``cli/`` exits.

::

    PhalanxError
    ├── ConfigError              invalid configuration or command-line value
    ├── IngestError              a file or row that cannot be read (carries path and line)
    │   ├── FormatError          the file is not of the format asked for / not recognised
    │   └── SchemaError          columns missing or of the wrong kind
    ├── SchemaMismatchError      an update or model built for another feature schema (hash differs)
    ├── ModelError               a model bundle that is malformed, incompatible or not fitted
    ├── ProtocolError            a message that breaks the protocol (stale, replayed, garbled)
    ├── RoundError               a round that cannot complete (too few participants, deadline)
    ├── AggregationError         updates that cannot be combined (shapes, empty set)
    ├── PrivacyError             privacy configuration or accounting problem
    │   └── BudgetExceededError  a task would take a participant past its (epsilon, delta) budget
    ├── SecAggError              secure aggregation failed (too many dropouts, bad shares)
    └── TrustError               certificate, signature or authorization failure
"""

from __future__ import annotations


class PhalanxError(Exception):
    """Base of every error Phalanx raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


class ConfigError(PhalanxError):
    """A configuration file or command-line value is invalid."""


class IngestError(PhalanxError):
    """A file or a row of it cannot be read.

    Parameters
    ----------
    path:
        The file being read.
    line:
        1-based physical line number where the problem is, when known.
    expected, found:
        What the reader expected at that place and what it found.
    hint:
        What the user can do about it.
    """

    def __init__(
        self,
        path: str,
        message: str,
        *,
        line: int | None = None,
        expected: str | None = None,
        found: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.expected = expected
        self.found = found
        where = f"{path}:{line}" if line is not None else path
        parts = [f"{where}: {message}"]
        if expected is not None:
            parts.append(f"expected {expected}")
        if found is not None:
            parts.append(f"found {_clip(found)}")
        super().__init__("; ".join(parts), hint=hint)


class FormatError(IngestError):
    """The file is not in the format asked for, or in no format Phalanx recognises."""


class SchemaError(IngestError):
    """Required columns are missing or have the wrong kind."""


class SchemaMismatchError(PhalanxError):
    """An update, statistic or model was built for a different feature schema."""


class ModelError(PhalanxError):
    """A model bundle is malformed, incompatible, or used before it was fitted."""


class ProtocolError(PhalanxError):
    """A message breaks the federation protocol: stale, replayed, garbled or oversized."""


class RoundError(PhalanxError):
    """A round cannot complete: too few participants answered before the deadline."""


class AggregationError(PhalanxError):
    """Updates cannot be combined: empty set, mismatched shapes or dtypes."""


class PrivacyError(PhalanxError):
    """A differential-privacy configuration or accounting problem."""


class BudgetExceededError(PrivacyError):
    """A task would take a participant past its configured (epsilon, delta) budget."""


class SecAggError(PhalanxError):
    """Secure aggregation failed: too many dropouts, or shares that do not verify."""


class TrustError(PhalanxError):
    """A certificate, signature or authorization check failed."""


def _clip(text: str, limit: int = 120) -> str:
    """Quote ``text`` for an error message, cut to ``limit`` characters."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)
