"""Shamir t-of-n secret sharing of short byte strings over the prime field GF(2^521 - 1).

Shamir, "How to share a secret", Communications of the ACM 22(11), 1979. SecAgg (Bonawitz et al.,
CCS 2017) and SecAgg+ (Bell et al., CCS 2020) share each participant's self-mask seed and masking
secret key this way among its neighbours, so the coordinator can unmask the sum when some
participants drop out, while fewer than ``t`` colluding holders learn nothing.

The field is the Mersenne prime ``p = 2^521 - 1``: a secret of up to 64 bytes is an integer below
``2^512 < p``, so it embeds without loss. The holder of the share at ``x`` (``x`` in ``1..p-1``,
distinct per holder) receives ``f(x)`` for a random polynomial ``f`` of degree ``t - 1`` with
``f(0) = secret``. Any ``t`` shares give ``f(0)`` by Lagrange interpolation; ``t - 1`` shares are
consistent with every possible secret (information-theoretic hiding).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

from phalanx.core.errors import SecAggError

PRIME = (1 << 521) - 1
"""The field modulus, the Mersenne prime 2^521 - 1."""
SHARE_BYTES = 66
"""Bytes of one share value (a field element, big-endian)."""
MAX_SECRET_BYTES = 64

RandomBytes = Callable[[int], bytes]
"""A source of random bytes: ``secrets.token_bytes`` in production, ``Generator.bytes`` in tests."""


def _field_element(random_bytes: RandomBytes) -> int:
    """A uniform element of the field (rejection sampling on 521-bit integers)."""
    while True:
        value = int.from_bytes(random_bytes(SHARE_BYTES), "big") & PRIME
        if value < PRIME:
            return value


def split(
    secret: bytes, xs: Sequence[int], threshold: int, random_bytes: RandomBytes
) -> dict[int, int]:
    """Share ``secret`` so that any ``threshold`` of the shares at ``xs`` reconstruct it.

    Parameters
    ----------
    secret:
        At most 64 bytes; its length is not hidden (SecAgg shares fixed-length 32-byte seeds).
    xs:
        Distinct evaluation points in ``1..p-1``, one per holder.
    threshold:
        Shares needed to reconstruct (``1 <= threshold <= len(xs)``).
    random_bytes:
        Source of the polynomial's random coefficients (must be cryptographically secure
        outside tests).

    Returns
    -------
    dict
        ``{x: f(x)}`` for every ``x`` in ``xs``.

    Raises
    ------
    SecAggError
        On a secret that is too long, a threshold out of range, or repeated / zero points.
    """
    if len(secret) > MAX_SECRET_BYTES:
        raise SecAggError(
            f"cannot share a secret of {len(secret)} bytes: at most {MAX_SECRET_BYTES} fit the"
            " field"
        )
    points = [int(x) for x in xs]
    if not 1 <= threshold <= len(points):
        raise SecAggError(
            f"sharing threshold {threshold} is out of range: expected 1..{len(points)} for"
            f" {len(points)} holders"
        )
    if len(set(points)) != len(points) or any(not 0 < x < PRIME for x in points):
        raise SecAggError("share points must be distinct and in 1..p-1")
    coeffs = [int.from_bytes(secret, "big")] + [
        _field_element(random_bytes) for _ in range(threshold - 1)
    ]
    out: dict[int, int] = {}
    for x in points:
        acc = 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % PRIME
        out[x] = acc
    return out


def reconstruct(shares: Mapping[int, int], threshold: int, length: int) -> bytes:
    """The secret of ``length`` bytes from at least ``threshold`` shares ``{x: f(x)}``.

    With more than ``threshold`` shares, every share is checked against the polynomial the
    first ``threshold`` define, so a corrupted share is detected instead of giving a wrong
    secret.

    Raises
    ------
    SecAggError
        With fewer than ``threshold`` shares, inconsistent shares, or a value that does not fit
        ``length`` bytes.
    """
    if len(shares) < threshold:
        raise SecAggError(
            f"{len(shares)} shares cannot reconstruct a secret shared with threshold {threshold}",
            hint="too many holders dropped out; the round must be restarted",
        )
    items = sorted(shares.items())
    base, extra = items[:threshold], items[threshold:]
    secret = _interpolate(base, 0)
    for x, y in extra:
        if _interpolate(base, x) != y % PRIME:
            raise SecAggError(
                f"the share at point {x} is inconsistent with the others: corrupted or forged"
            )
    if secret >= 1 << (8 * length):
        raise SecAggError(
            f"reconstructed value does not fit {length} bytes: the shares are corrupted or"
            " belong to different secrets"
        )
    return secret.to_bytes(length, "big")


def _interpolate(points: Sequence[tuple[int, int]], at: int) -> int:
    """Lagrange interpolation of the polynomial through ``points``, evaluated at ``at``."""
    weights = _lagrange(tuple(x for x, _ in points), at)
    return sum(w * y for w, (_, y) in zip(weights, points, strict=True)) % PRIME


@functools.lru_cache(maxsize=4096)
def _lagrange(xs: tuple[int, ...], at: int) -> tuple[int, ...]:
    """Lagrange basis weights of the points ``xs`` at ``at`` (cached: a coordinator unmasks many
    secrets from the same holders)."""
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        if den == 0:
            raise SecAggError(f"two shares claim the same point {xi}")
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(out)


def share_to_bytes(value: int) -> bytes:
    """A share value as :data:`SHARE_BYTES` big-endian bytes."""
    return int(value % PRIME).to_bytes(SHARE_BYTES, "big")


def share_from_bytes(blob: bytes) -> int:
    """Inverse of :func:`share_to_bytes`; :class:`SecAggError` on a wrong length or value."""
    if len(blob) != SHARE_BYTES:
        raise SecAggError(f"a share has {len(blob)} bytes, expected {SHARE_BYTES}")
    value = int.from_bytes(blob, "big")
    if value >= PRIME:
        raise SecAggError("a share value is not a field element")
    return value
