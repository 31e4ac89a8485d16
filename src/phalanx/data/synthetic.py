"""Synthetic multi-organization network traffic in the NetFlow v2 schema.

Phalanx's embedded default dataset: each organization profile (:data:`PROFILES`) has its own
benign mix and its own exposure to attack families (:data:`ATTACK_FAMILIES`). Flows are rendered
from the kind tables of :mod:`phalanx.data.synthetic_profiles` into every column of
:data:`phalanx.data.schemas.NETFLOW_V2` (Sarhan, Layeghy & Portmann, "Towards a standard feature
set for network intrusion detection system datasets", MONET 2022), fully vectorized and
deterministic given the generator. ``docs/synthetic.md`` describes profiles, families and how
labels arise.

Conventions of the batches produced:

* categorical columns are strings as the NF-v2 CSV files write them: ``L4_DST_PORT`` ``"443"``,
  ``PROTOCOL`` ``"6"``, ``L7_PROTO`` ``"91.0"`` (nDPI id as a float);
* identifiers: ``IPV4_SRC_ADDR`` and ``IPV4_DST_ADDR`` as ``uint32`` (formatting a million
  addresses as text costs more than generating the flows; :func:`format_ipv4` does it on demand),
  ``L4_SRC_PORT`` and ``DNS_QUERY_ID`` as ``int64``, and ``FLOW_START_MILLISECONDS`` (epoch ms,
  UTC, the NetFlow v3 name) as ``int64``; rows are sorted by it;
* ``label`` is the attack family or ``"benign"``; ``category`` its taxonomy category;
* the numeric matrix is column-major (Fortran order): it is written column by column, five times
  faster than row-major at a million flows, and every consumer indexes it by column.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import ConfigError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.taxonomy import BENIGN
from phalanx.data.schemas import NETFLOW_V2
from phalanx.data.synthetic_flows import flows, identities, start_times, tables
from phalanx.data.synthetic_profiles import ATTACK_FAMILIES, KINDS, PROFILE_TABLE, Profile

__all__ = [
    "ATTACK_FAMILIES",
    "DAY",
    "DEFAULT_START",
    "PROFILES",
    "TIMESTAMP",
    "format_ipv4",
    "generate",
    "generate_day",
    "generate_federation",
]

F64 = NDArray[np.float64]

PROFILES: tuple[str, ...] = tuple(PROFILE_TABLE)
"""Organization profile names, in the order :func:`generate_federation` cycles through them."""
DEFAULT_START = 1_704_067_200.0
"""2024-01-01T00:00:00Z, the default first second of a generated day (epoch seconds, UTC)."""
DAY = 86_400.0
TIMESTAMP = "FLOW_START_MILLISECONDS"
"""Identifier column holding each flow's start time, epoch milliseconds UTC."""


@functools.cache
def _number_strings(size: int) -> NDArray[np.object_]:
    """``str(i)`` for ``i < size`` (ports, protocol numbers), built once."""
    return np.array([str(i) for i in range(size)], dtype=object)


def format_ipv4(addresses: NDArray[np.generic]) -> NDArray[np.str_]:
    """Dotted-quad strings of ``uint32`` IPv4 addresses (``0x0A000001`` -> ``"10.0.0.1"``)."""
    a = np.asarray(addresses).astype(np.uint32)
    octets = np.array([str(i) for i in range(256)])
    out: NDArray[np.str_] = octets[(a >> 24) & 255]
    for shift in (16, 8, 0):
        out = np.strings.add(np.strings.add(out, "."), octets[(a >> shift) & 255])
    return out


def _profile(name: str) -> Profile:
    try:
        return PROFILE_TABLE[name]
    except KeyError:
        raise ConfigError(
            f"unknown synthetic organization profile {name!r}",
            hint=f"choose one of {', '.join(PROFILES)}",
        ) from None


def _mix(prof: Profile, attack_rate: float | None, families: Mapping[str, float] | None) -> F64:
    """Probability of each kind for one organization."""
    rate = prof.attack_rate if attack_rate is None else float(attack_rate)
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"attack_rate must be within [0, 1], found {attack_rate}")
    fam = dict(prof.families if families is None else families)
    unknown = sorted(set(fam) - set(ATTACK_FAMILIES))
    if unknown:
        raise ConfigError(
            f"unknown attack families {unknown}", hint=f"known: {', '.join(ATTACK_FAMILIES)}"
        )
    if any(not w >= 0 for w in fam.values()):
        raise ConfigError(f"attack family weights must be >= 0, found {fam}")
    total = sum(fam.values())
    if rate > 0 and total <= 0:
        raise ConfigError("attack_rate > 0 but no attack family has a positive weight")
    p = np.zeros(len(KINDS))
    benign_total = sum(prof.benign.values())
    for i, kind in enumerate(KINDS):
        if kind.family == BENIGN:
            p[i] = (1.0 - rate) * prof.benign.get(kind.name, 0.0) / benign_total
        elif rate > 0 and fam.get(kind.family, 0.0) > 0:
            share = sum(k.share for k in KINDS if k.family == kind.family)
            p[i] = rate * fam[kind.family] / total * kind.share / share
    probs: F64 = p / p.sum()
    return probs


def generate(
    profile: str,
    n_flows: int,
    rng: np.random.Generator,
    *,
    attack_rate: float | None = None,
    families: Mapping[str, float] | None = None,
    start_time: float = DEFAULT_START,
    span: float = DAY,
) -> FlowBatch:
    """Generate ``n_flows`` flows of one organization as a NETFLOW_V2 :class:`FlowBatch`.

    Parameters
    ----------
    profile:
        One of :data:`PROFILES`.
    n_flows:
        Number of flows (rows).
    rng:
        The only source of randomness; the same generator state gives identical arrays.
    attack_rate:
        Share of attack flows; the profile's default when ``None``.
    families:
        Relative weights of attack families (keys of :data:`ATTACK_FAMILIES`), replacing the
        profile's; families left out do not occur.
    start_time, span:
        Flows start within ``[start_time, start_time + span)`` epoch seconds (UTC).

    Returns
    -------
    FlowBatch
        Rows sorted by ``FLOW_START_MILLISECONDS``.
    """
    prof = _profile(profile)
    if isinstance(n_flows, bool) or not isinstance(n_flows, int | np.integer) or n_flows < 0:
        raise ConfigError(f"n_flows must be a non-negative integer, found {n_flows!r}")
    if not span > 0:
        raise ConfigError(f"span must be > 0 seconds, found {span}")
    counts = rng.multinomial(int(n_flows), _mix(prof, attack_rate, families))
    n = int(counts.sum())
    # Draw start times kind by kind, then place every flow at its rank in time: all columns are
    # generated directly in final row order (no second pass to sort a wide matrix).
    when = start_times(counts, prof, rng, span)
    order = np.argsort(when)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    groups = [(int(k), rank[bounds[k] : bounds[k + 1]]) for k in np.flatnonzero(counts)]
    t = np.repeat(np.arange(len(KINDS)), counts)[order]
    tb = tables()
    cols = flows(t, groups, tb, prof, rng)
    ident = identities(groups, n, prof, rng, cols)
    ident[TIMESTAMP] = np.floor((start_time + when[order]) * 1000.0).astype(np.int64)
    numeric = np.empty((n, len(NETFLOW_V2.numeric)), order="F")  # column writes stay contiguous
    for j, name in enumerate(NETFLOW_V2.numeric):
        numeric[:, j] = cols[name]
    categorical = np.empty((n, 3), dtype=object)
    categorical[:, 0] = _number_strings(65536)[ident.pop("_dport")]
    categorical[:, 1] = _number_strings(256)[tb.proto[t]]
    categorical[:, 2] = tb.l7_str[ident.pop("_l7")]
    label = tb.label[t]
    return FlowBatch(
        schema=NETFLOW_V2,
        numeric=numeric,
        categorical=categorical,
        label=tb.label_str[label],
        category=tb.category_str[label],
        identifiers=ident,
        n_infinite=None,
    )


def generate_day(
    profile: str, n_flows: int, rng: np.random.Generator, *, day: int = 1, **kwargs: object
) -> FlowBatch:
    """One more day of an organization's traffic (``day`` days after :data:`DEFAULT_START`)."""
    return generate(profile, n_flows, rng, start_time=DEFAULT_START + day * DAY, **kwargs)  # type: ignore[arg-type]


def generate_federation(
    n_orgs: int, flows_per_org: int, seed: int, *, profiles: tuple[str, ...] = PROFILES
) -> list[FlowBatch]:
    """One batch per organization, cycling through ``profiles``.

    Each organization draws from its own generator spawned from ``np.random.SeedSequence(seed)``,
    so organization ``i`` is the same whatever ``n_orgs`` is.
    """
    if n_orgs < 1:
        raise ConfigError(f"a federation needs at least 1 organization, found {n_orgs}")
    if not profiles:
        raise ConfigError("generate_federation needs at least one profile")
    children = np.random.SeedSequence(seed).spawn(n_orgs)
    return [
        generate(profiles[i % len(profiles)], flows_per_org, np.random.default_rng(child))
        for i, child in enumerate(children)
    ]
