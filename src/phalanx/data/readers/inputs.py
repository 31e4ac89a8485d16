"""Opening a source file: compression by magic bytes, zip archives, the head, error translation.

This is the reader edge: exceptions of pyarrow, zipfile, zlib and the OS are translated here into
:class:`~phalanx.core.errors.IngestError` naming the file (and the line, when known).
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from phalanx.core.errors import FormatError, IngestError

HEAD_BYTES = 256 * 1024
"""How much of the (decompressed) start of a file detection and header parsing look at."""

READ_ERRORS: tuple[type[BaseException], ...] = (
    pa.ArrowException,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    UnicodeDecodeError,
)
"""Third-party exceptions a read can raise; translated into :class:`IngestError` at this edge."""

_GZIP = b"\x1f\x8b"
_ZIP = b"PK\x03\x04"
_BZ2 = b"BZh"
_ZSTD = b"\x28\xb5\x2f\xfd"


def translate(path: Path | str, exc: BaseException, *, line: int | None = None) -> IngestError:
    """An :class:`IngestError` for a third-party exception met while reading ``path``."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return IngestError(str(path), "no such file", hint="check the path")
    if isinstance(exc, IsADirectoryError):
        return IngestError(str(path), "is a directory, not a file", hint="name one file")
    if isinstance(exc, PermissionError):
        return IngestError(str(path), "permission denied", hint="check the file's permissions")
    if isinstance(exc, zipfile.BadZipFile | zlib.error | EOFError) or "compress" in text.lower():
        return FormatError(
            str(path),
            "the compressed data is corrupt or truncated",
            line=line,
            found=text,
            hint="download the file again or decompress it to check it",
        )
    if "straddling" in text or "block" in text.lower():
        return FormatError(
            str(path),
            "a row is longer than the reader's block (1 MiB)",
            line=line,
            expected="one flow per line",
            found=text,
            hint="the file is probably not a flow CSV",
        )
    return IngestError(
        str(path), "cannot read the file", line=line, found=text, hint="check it is a flow CSV"
    )


def _magic(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(4)
    except OSError as e:
        raise translate(path, e) from e


def compression_of(path: Path) -> str:
    """``"gzip"``, ``"zip"``, ``"bz2"``, ``"zstd"`` or ``"none"``, from the file's magic bytes."""
    magic = _magic(path)
    if magic.startswith(_GZIP):
        return "gzip"
    if magic.startswith(_ZIP):
        return "zip"
    if magic.startswith(_BZ2):
        return "bz2"
    if magic.startswith(_ZSTD):
        return "zstd"
    return "none"


def open_input(path: Path) -> Any:
    """A readable binary stream of the decompressed content (one member for a zip archive).

    Returns a :class:`pyarrow.NativeFile` or a Python binary file object; both have ``read``
    and ``close`` and both are accepted by :func:`pyarrow.csv.open_csv`.
    """
    kind = compression_of(path)
    try:
        if kind == "zip":
            return _open_zip_member(path)
        if kind in ("bz2", "zstd") and not pa.Codec.is_available(kind):
            raise FormatError(
                str(path),
                f"{kind}-compressed files are not supported by this pyarrow build",
                hint="decompress the file, or gzip it",
            )
        return pa.input_stream(str(path), compression=None if kind == "none" else kind)
    except READ_ERRORS as e:
        raise translate(path, e) from e


def _open_zip_member(path: Path) -> IO[bytes]:
    with zipfile.ZipFile(path) as archive:
        members = [
            m
            for m in archive.infolist()
            if not m.is_dir() and not m.filename.startswith("__MACOSX/")
        ]
        if len(members) != 1:
            raise FormatError(
                str(path),
                "a zip archive must hold exactly one data file",
                expected="one member",
                found=f"{len(members)} members: {', '.join(m.filename for m in members[:5])}",
                hint="extract the file you want and read it directly",
            )
        # The member keeps the archive's file open after the archive object is closed.
        return archive.open(members[0])


@dataclass(frozen=True)
class Head:
    """The decompressed start of a file.

    Attributes
    ----------
    data:
        Up to :data:`HEAD_BYTES` bytes.
    complete:
        True when ``data`` is the whole file.
    """

    data: bytes
    complete: bool

    @property
    def bom(self) -> int:
        """Length of a UTF-8 byte-order mark at the start (0 or 3)."""
        return 3 if self.data.startswith(b"\xef\xbb\xbf") else 0

    def lines(self, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` complete lines as ``(text, end_offset)``, BOM and CR/LF removed.

        ``end_offset`` is the byte offset just past the line's newline. The last line of a
        complete head counts even without a newline. Undecodable bytes become U+FFFD.
        """
        out: list[tuple[str, int]] = []
        start = self.bom
        while len(out) < limit:
            end = self.data.find(b"\n", start)
            if end < 0:
                if self.complete and start < len(self.data):
                    text = self.data[start:].decode("utf-8", errors="replace")
                    out.append((text.rstrip("\r"), len(self.data)))
                break
            text = self.data[start:end].decode("utf-8", errors="replace")
            out.append((text.rstrip("\r"), end + 1))
            start = end + 1
        return out


def read_head(path: Path) -> Head:
    """The first :data:`HEAD_BYTES` decompressed bytes of ``path``."""
    stream = open_input(path)
    try:
        data = stream.read(HEAD_BYTES + 1)
    except READ_ERRORS as e:
        raise translate(path, e) from e
    finally:
        stream.close()
    data = bytes(data)
    if not data:
        raise FormatError(str(path), "the file is empty", expected="a header or a first flow")
    return Head(data=data[:HEAD_BYTES], complete=len(data) <= HEAD_BYTES)
