"""Split one labelled dataset among simulated participants.

Every partitioner takes the rows' taxonomy categories (or a row count) and a
:class:`numpy.random.Generator`, and returns one array of row indices per participant; every row is
assigned to exactly one participant. The schemes follow the usual non-IID benchmarks of federated
learning (Li, Diao, Chen & He, "Federated learning on non-IID data silos: an experimental study",
ICDE 2022):

* :func:`iid`: a uniform random split into equal shares;
* :func:`dirichlet`: label skew, each category split by proportions drawn from
  ``Dirichlet(alpha)`` (Hsu, Qi & Brown, "Measuring the effects of non-identical data distribution
  for federated visual classification", 2019); small ``alpha`` means strong skew;
* :func:`families`: each participant sees benign traffic plus ``k`` attack categories, as when an
  organization has only met some kinds of attack;
* :func:`quantity`: share sizes from ``Dirichlet(alpha)``, categories IID.

:func:`parse_partition` reads the ``--partition`` spelling (``iid``, ``dirichlet:0.5``,
``families:3``, ``quantity:1.0``); :func:`category_matrix` counts each participant's categories.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import ConfigError
from phalanx.core.taxonomy import BENIGN, CATEGORIES

I64 = NDArray[np.int64]
Labels = NDArray[np.generic]


def _rows(labels_or_n: Labels | int) -> int:
    if isinstance(labels_or_n, int | np.integer):
        return int(labels_or_n)
    return int(np.asarray(labels_or_n).shape[0])


def _check(n_rows: int, n: int, min_rows: int = 1) -> None:
    if n < 1:
        raise ConfigError(f"a partition needs at least 1 participant, found {n}")
    if n * min_rows > n_rows:
        raise ConfigError(
            f"cannot give {n} participants at least {min_rows} rows each from {n_rows} rows",
            hint="use fewer participants, a smaller min_rows, or more data",
        )


def iid(labels_or_n: Labels | int, n: int, rng: np.random.Generator) -> list[I64]:
    """A uniform random split into ``n`` shares whose sizes differ by at most one row."""
    n_rows = _rows(labels_or_n)
    _check(n_rows, n)
    return [np.sort(p) for p in np.array_split(rng.permutation(n_rows), n)]


def dirichlet(
    labels: Labels,
    n: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_rows: int = 10,
    max_tries: int = 100,
) -> list[I64]:
    """Label skew: each category's rows split by proportions from ``Dirichlet(alpha)``.

    Draws are repeated (up to ``max_tries``) until every participant holds ``min_rows`` rows, as in
    Hsu et al. (2019); if none succeeds, rows are moved from the largest shares to the smallest.
    """
    if not alpha > 0:
        raise ConfigError(f"dirichlet alpha must be > 0, found {alpha}")
    labels = np.asarray(labels)
    _check(labels.shape[0], n, min_rows)
    _, codes = np.unique(labels, return_inverse=True)
    parts: list[I64] = []
    for _ in range(max(1, max_tries)):
        chunks: list[list[I64]] = [[] for _ in range(n)]
        for c in range(int(codes.max(initial=-1)) + 1):
            idx = rng.permutation(np.flatnonzero(codes == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n, alpha)))[:-1] * idx.size).astype(np.int64)
            for i, piece in enumerate(np.split(idx, cuts)):
                chunks[i].append(piece)
        parts = [np.concatenate(c) if c else np.zeros(0, dtype=np.int64) for c in chunks]
        if min(p.size for p in parts) >= min_rows:
            break
    return [np.sort(p) for p in _ensure_min(parts, min_rows, rng)]


def families(labels: Labels, n: int, k: int, rng: np.random.Generator) -> list[I64]:
    """Each participant gets benign rows plus the rows of ``k`` attack categories.

    Attack categories are dealt round-robin in a random order, so every category present goes to at
    least one participant (to more than ``k`` per participant only when ``n * k`` is smaller than
    the number of categories); a category's rows are split evenly among its participants, and
    benign rows uniformly among all.
    """
    if k < 1:
        raise ConfigError(f"families:k needs k >= 1 attack categories, found {k}")
    labels = np.asarray(labels).astype(str)
    _check(labels.shape[0], n)
    attacks = [c for c in np.unique(labels).tolist() if c != BENIGN]
    order = [attacks[i] for i in rng.permutation(len(attacks))]
    owned: list[set[str]] = [set() for _ in range(n)]
    if order:
        per = min(k, len(order))
        for i in range(n):
            owned[i].update(order[(i * per + j) % len(order)] for j in range(per))
        for j, cat in enumerate(order):  # cover categories the round-robin missed
            if not any(cat in o for o in owned):
                owned[j % n].add(cat)
    chunks: list[list[I64]] = [[] for _ in range(n)]
    for cat in [BENIGN, *order]:
        holders = list(range(n)) if cat == BENIGN else [i for i in range(n) if cat in owned[i]]
        idx = rng.permutation(np.flatnonzero(labels == cat))
        for i, piece in zip(holders, np.array_split(idx, len(holders)), strict=True):
            chunks[i].append(piece)
    return [np.sort(np.concatenate(c)) if c else np.zeros(0, dtype=np.int64) for c in chunks]


def quantity(
    labels_or_n: Labels | int,
    n: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_rows: int = 1,
) -> list[I64]:
    """Quantity skew: share sizes proportional to a ``Dirichlet(alpha)`` draw, rows IID."""
    if not alpha > 0:
        raise ConfigError(f"quantity alpha must be > 0, found {alpha}")
    n_rows = _rows(labels_or_n)
    _check(n_rows, n, min_rows)
    cuts = (np.cumsum(rng.dirichlet(np.full(n, alpha)))[:-1] * n_rows).astype(np.int64)
    parts = np.split(rng.permutation(n_rows), cuts)
    return [np.sort(p) for p in _ensure_min(parts, min_rows, rng)]


def _ensure_min(parts: list[I64], min_rows: int, rng: np.random.Generator) -> list[I64]:
    """Move random rows from the largest shares until every share has ``min_rows``."""
    parts = [np.asarray(p, dtype=np.int64) for p in parts]
    while True:
        sizes = [p.size for p in parts]
        small = int(np.argmin(sizes))
        need = min_rows - sizes[small]
        if need <= 0:
            return parts
        big = int(np.argmax(sizes))
        give = min(need, sizes[big] - min_rows)
        if give <= 0:
            raise ConfigError(f"cannot give every participant {min_rows} rows")
        donor = rng.permutation(parts[big])
        parts[small] = np.concatenate([parts[small], donor[:give]])
        parts[big] = donor[give:]


@dataclass(frozen=True)
class PartitionSpec:
    """A parsed ``--partition`` value: the scheme and its parameter."""

    scheme: str
    param: float | None = None

    def apply(self, labels: Labels, n: int, rng: np.random.Generator) -> list[I64]:
        """Split ``labels`` (taxonomy categories) among ``n`` participants."""
        if self.scheme == "iid":
            return iid(labels, n, rng)
        if self.param is None:  # unreachable through parse_partition
            raise ConfigError(f"partition scheme {self.scheme!r} needs a parameter")
        if self.scheme == "dirichlet":
            return dirichlet(labels, n, self.param, rng)
        if self.scheme == "families":
            return families(labels, n, int(self.param), rng)
        return quantity(labels, n, self.param, rng)

    def __call__(self, labels: Labels, n: int, rng: np.random.Generator) -> list[I64]:
        """Same as :meth:`apply`: a parsed spec is itself a partitioner."""
        return self.apply(labels, n, rng)


_SCHEMES = {"iid": None, "dirichlet": "alpha > 0", "families": "k >= 1", "quantity": "alpha > 0"}


def parse_partition(spec: str) -> PartitionSpec:
    """Parse ``iid``, ``dirichlet:ALPHA``, ``families:K`` or ``quantity:ALPHA``."""
    usage = "write iid, dirichlet:0.5, families:3 or quantity:1.0"
    name, sep, value = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in _SCHEMES:
        raise ConfigError(f"unknown partition scheme {spec!r}", hint=usage)
    if name == "iid":
        if sep:
            raise ConfigError(f"partition 'iid' takes no parameter, found {spec!r}", hint=usage)
        return PartitionSpec("iid")
    try:
        param = int(value) if name == "families" else float(value)
    except ValueError:
        raise ConfigError(
            f"partition {name!r} needs {_SCHEMES[name]} after ':', found {spec!r}", hint=usage
        ) from None
    if not (param >= 1 if name == "families" else param > 0 and np.isfinite(param)):
        raise ConfigError(
            f"partition {name!r} needs {_SCHEMES[name]}, found {value.strip()!r}", hint=usage
        )
    return PartitionSpec(name, float(param))


def category_matrix(
    labels: Labels, parts: Sequence[I64], categories: Sequence[str] = CATEGORIES
) -> I64:
    """``(participants, categories)`` row counts: how each participant's data is made up."""
    labels = np.asarray(labels).astype(str)
    index = {c: i for i, c in enumerate(categories)}
    unknown = sorted(set(np.unique(labels).tolist()) - set(index))
    if unknown:
        raise ConfigError(
            f"labels {unknown} are not among the categories {list(categories)}",
            hint="map dataset labels to the taxonomy first",
        )
    out = np.zeros((len(parts), len(categories)), dtype=np.int64)
    for i, rows in enumerate(parts):
        uniq, counts = np.unique(labels[rows], return_counts=True)
        out[i, [index[u] for u in uniq.tolist()]] = counts
    return out
