"""The SecAgg+ communication graph: who shares secrets and masks with whom.

Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020, replace
SecAgg's complete graph (Bonawitz et al., CCS 2017) by a random ``k``-regular graph with ``k`` of
order ``log n``: each participant masks with, and secret-shares to, its ``k`` neighbours only, so
its work and traffic grow with ``log n`` instead of ``n``. Here the graph is a Harary graph
``H(k, n)`` laid over a seeded random permutation of the members: position ``i`` is joined to
positions ``i +- 1 .. i +- k/2`` (modulo ``n``). With ``k >= n - 1`` the graph is complete, which
is plain SecAgg.

Each participant's secrets are shared ``t``-of-``(k + 1)`` among its neighbours and itself, with
``t = floor((k + 1) / 2) + 1``: an honest holder reveals, for one peer, either the self-mask share
or the key share, never both, so a coordinator cannot collect ``t`` of each (``2t > k + 1``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

from phalanx.core.errors import ConfigError
from phalanx.core.types import ParticipantId


def default_degree(n: int) -> int:
    """``k = 2 * ceil(1.5 * log2 n)`` neighbours (even), capped at ``n - 1`` (complete graph)."""
    if n <= 1:
        return 0
    k = 2 * math.ceil(1.5 * math.log2(n))
    return min(n - 1, k)


def default_threshold(degree: int) -> int:
    """``t = floor((k + 1) / 2) + 1``: a strict majority of the ``k + 1`` share holders."""
    return (degree + 1) // 2 + 1


def neighbours(
    members: Sequence[ParticipantId], degree: int, seed: int
) -> dict[ParticipantId, tuple[ParticipantId, ...]]:
    """The neighbours of every member in the seeded Harary graph ``H(degree, n)``.

    Parameters
    ----------
    members:
        The participants of one secure-aggregation instance (order does not matter).
    degree:
        Neighbours per member; rounded up to even below ``n - 1``; ``>= n - 1`` is complete.
    seed:
        Seeds the permutation; every party derives the same graph from it.

    Raises
    ------
    ConfigError
        On repeated members or a degree below 1 for two or more members.
    """
    ordered = sorted(members)
    n = len(ordered)
    if len(set(ordered)) != n:
        raise ConfigError("a secure-aggregation instance lists a participant twice")
    if n <= 1:
        return {p: () for p in ordered}
    if degree < 1:
        raise ConfigError(f"the neighbour graph needs degree >= 1, found {degree}")
    if degree >= n - 1:
        return {p: tuple(q for q in ordered if q != p) for p in ordered}
    half = (degree + 1) // 2
    ss = np.random.SeedSequence([seed, zlib.crc32("|".join(ordered).encode())])
    perm = np.random.default_rng(ss).permutation(n)
    at = [ordered[i] for i in perm.tolist()]
    out: dict[ParticipantId, tuple[ParticipantId, ...]] = {}
    for pos, p in enumerate(at):
        near = {at[(pos + d) % n] for d in range(1, half + 1)}
        near |= {at[(pos - d) % n] for d in range(1, half + 1)}
        out[p] = tuple(sorted(near))
    return out
