"""Stable bucket hashing of categorical values (the "hashing trick").

A categorical value is mapped to one of ``buckets`` one-hot slots by a CRC-32 of its canonical
UTF-8 form, modulo ``buckets``. CRC-32 (ISO 3309, via :func:`zlib.crc32`) is fixed by standard, so
the bucket of a value is the same in every process, on every machine and in every Python version;
Python's :func:`hash` is salted per process and must never be used here. Every participant of a
federation therefore agrees on the input layout without exchanging vocabularies.

Canonical form: ``None`` becomes ``""``, surrounding whitespace (and trailing NULs) is stripped,
and an integral number written with a trailing ``.0`` loses it (``"443.0"`` and ``"443"`` hash
alike), because readers of the same dataset disagree on whether a port column is an integer or
a float.

References
----------
Weinberger, Dasgupta, Langford, Smola, Attenberg, "Feature hashing for large scale multitask
learning", ICML 2009.
"""

from __future__ import annotations

import zlib

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import ConfigError


def canonical(value: object) -> str:
    """The canonical string form of a categorical value (see the module docstring)."""
    if value is None:
        return ""
    # Trailing NULs go too: numpy's fixed-width strings cannot hold them, and the vectorized path
    # must agree with the scalar one.
    text = str(value)
    while True:
        shorter = text.strip().rstrip("\x00")
        if shorter == text:
            break
        text = shorter
    if text.endswith(".0"):
        head = text[:-2]
        if head.lstrip("-").isdigit():
            return head
    return text


def bucket_of(value: object, buckets: int) -> int:
    """The bucket of one value, in ``[0, buckets)``."""
    _check_buckets(buckets)
    return zlib.crc32(canonical(value).encode("utf-8")) % buckets


def hash_buckets(values: NDArray[np.generic], buckets: int) -> NDArray[np.int64]:
    """Buckets of many values at once, same shape as ``values``.

    Only the distinct values are hashed; the result is spread back to every row (flow columns
    repeat a handful of ports and protocols millions of times).

    Parameters
    ----------
    values:
        Array of ``str`` (numpy ``<U`` or ``object``; ``None`` allowed in ``object`` arrays).
    buckets:
        Number of slots, at least 1.

    Returns
    -------
    numpy.ndarray
        ``int64`` bucket indices in ``[0, buckets)``.
    """
    _check_buckets(buckets)
    flat = np.asarray(values).ravel()
    if flat.size == 0:
        return np.zeros(np.shape(values), dtype=np.int64)
    if flat.dtype.kind == "U":
        uniq, inverse = np.unique(flat, return_inverse=True)
        table = np.fromiter(
            (bucket_of(v, buckets) for v in uniq.tolist()), dtype=np.int64, count=uniq.size
        )
        return table[inverse].reshape(np.shape(values))
    items = flat.tolist()
    lookup = {v: bucket_of(v, buckets) for v in dict.fromkeys(items)}
    out = np.fromiter(map(lookup.__getitem__, items), dtype=np.int64, count=len(items))
    return out.reshape(np.shape(values))


def _check_buckets(buckets: int) -> None:
    if buckets < 1:
        raise ConfigError(f"bucket hashing needs at least 1 bucket, found {buckets}")
