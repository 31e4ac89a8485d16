"""Byzantine-robust combination rules over a matrix of flattened model deltas.

Each function takes ``deltas``, an ``n x d`` float64 matrix (one row per update: its new local
weights minus the global weights, flattened), and returns the ``d``-vector the server adds to the
global weights, plus per-row diagnostics where the rule has them. The classes in
:mod:`phalanx.core.aggregation.robust` wrap these as server algorithms.

======================  ========================================================================
coordinate_median       Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed
                        Learning: Towards Optimal Statistical Rates", ICML 2018
trimmed_mean            ibid. (coordinate-wise beta-trimmed mean)
krum_scores, multi_krum Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with
                        Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017
centered_clipping       Karimireddy, He and Jaggi, "Learning from History for Byzantine Robust
                        Optimization", ICML 2021
norm_bounded_mean       Sun, Kairouz, Suresh and McMahan, "Can You Really Backdoor Federated
                        Learning?", arXiv:1911.07963, 2019
fltrust                 Cao, Fang, Liu and Gong, "FLTrust: Byzantine-robust Federated Learning
                        via Trust Bootstrapping", NDSS 2021
======================  ========================================================================
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import AggregationError

Matrix = NDArray[np.float64]
Vector = NDArray[np.float64]


def _check(deltas: Matrix) -> int:
    if deltas.ndim != 2 or deltas.shape[0] == 0:
        raise AggregationError(
            f"robust aggregation needs an n x d matrix of deltas with n >= 1; found shape"
            f" {deltas.shape}",
            hint="a round needs at least one participant update",
        )
    return int(deltas.shape[0])


def coordinate_median(deltas: Matrix) -> Vector:
    """Coordinate-wise median (Yin et al., ICML 2018): robust to ``f < n/2`` Byzantine rows."""
    _check(deltas)
    return np.asarray(np.median(deltas, axis=0), dtype=np.float64)


def trim_count(n: int, trim_ratio: float) -> int:
    """Rows trimmed from each end: ``floor(trim_ratio * n)``, capped so at least one remains."""
    return min(int(np.floor(trim_ratio * n + 1e-9)), (n - 1) // 2)


def trimmed_mean(deltas: Matrix, trim_ratio: float) -> tuple[Vector, Vector]:
    """Coordinate-wise trimmed mean (Yin et al., ICML 2018).

    In every coordinate the ``k = floor(trim_ratio * n)`` largest and ``k`` smallest values are
    dropped and the rest averaged. Returns the mean and, per row, the share of its coordinates
    that were trimmed (ties are broken by row order, which the caller makes canonical).
    """
    n = _check(deltas)
    k = trim_count(n, trim_ratio)
    order = np.argsort(deltas, axis=0, kind="stable")
    kept = np.take_along_axis(deltas, order[k : n - k], axis=0)
    centre = kept.mean(axis=0)
    trimmed_share = np.zeros(n)
    if k > 0:
        for rows in (order[:k], order[n - k :]):
            trimmed_share += np.bincount(rows.ravel(), minlength=n)
        trimmed_share /= deltas.shape[1]
    return centre, trimmed_share


def effective_byzantine(n: int, byzantine: int) -> int:
    """The ``f`` Krum can honour with ``n`` rows: ``min(f, (n - 3) // 2)``, at least 0.

    Krum needs ``n > 2f + 2``; with fewer rows the assumed number of attackers is lowered
    rather than failing the round (the report records the value used).
    """
    return max(0, min(int(byzantine), (n - 3) // 2))


def squared_distances(deltas: Matrix) -> Matrix:
    """Pairwise squared Euclidean distances between rows (exact, symmetric, zero diagonal)."""
    sq = np.einsum("ij,ij->i", deltas, deltas)
    dist = sq[:, None] + sq[None, :] - 2.0 * (deltas @ deltas.T)
    np.fill_diagonal(dist, 0.0)
    return np.asarray(np.maximum(dist, 0.0), dtype=np.float64)


def krum_scores(deltas: Matrix, byzantine: int) -> tuple[Vector, int]:
    """Krum scores: the sum of squared distances to each row's ``n - f - 2`` nearest others.

    Returns the scores and the ``f`` actually used (:func:`effective_byzantine`). With one or
    two rows every score is 0.
    """
    n = _check(deltas)
    f = effective_byzantine(n, byzantine)
    if n <= 2:
        return np.zeros(n), f
    dist = squared_distances(deltas)
    neighbours = n - f - 2
    scores = np.empty(n)
    for i in range(n):
        others = np.delete(dist[i], i)
        scores[i] = float(np.sort(others)[:neighbours].sum())
    return scores, f


def multi_krum(deltas: Matrix, byzantine: int, select: int) -> tuple[Vector, Vector, Vector, int]:
    """Multi-Krum: the mean of the ``select`` rows with the lowest Krum scores.

    ``select=1`` is Krum. ``select <= 0`` means ``n - f``. Returns ``(centre, scores,
    selected_mask, f_used)``; ties go to the earlier row.
    """
    n = _check(deltas)
    scores, f = krum_scores(deltas, byzantine)
    m = n - f if select <= 0 else min(int(select), n)
    chosen = np.argsort(scores, kind="stable")[:m]
    mask = np.zeros(n)
    mask[chosen] = 1.0
    return deltas[np.sort(chosen)].mean(axis=0), scores, mask, f


def clip_to(vectors: Matrix, radius: float) -> tuple[Matrix, Vector]:
    """Rows scaled to norm at most ``radius``; returns them and the factor applied to each."""
    norms = np.linalg.norm(vectors, axis=1)
    factors = np.where(norms > radius, radius / np.maximum(norms, 1e-300), 1.0)
    return vectors * factors[:, None], factors


def centered_clipping(
    deltas: Matrix, start: Vector, radius: float, iterations: int
) -> tuple[Vector, Vector, float]:
    """Centered clipping (Karimireddy et al., ICML 2021, eq. (2)).

    ``v <- v + mean_i clip(x_i - v, tau)`` repeated ``iterations`` times from ``start``. A
    ``radius`` of 0 picks ``tau`` as the median distance of the rows to ``start`` (adaptive;
    the paper tunes it by hand). Returns ``(v, clip_factor_per_row, tau)`` with the factors of
    the last iteration.
    """
    n = _check(deltas)
    v = np.asarray(start, dtype=np.float64).copy()
    if v.shape != (deltas.shape[1],):
        raise AggregationError(
            f"centered clipping start has shape {v.shape}; expected ({deltas.shape[1]},)",
            hint="the checkpointed centre belongs to another model",
        )
    tau = float(radius)
    if tau <= 0:
        tau = float(np.median(np.linalg.norm(deltas - v, axis=1)))
    factors = np.ones(n)
    if tau <= 0:  # every row equals the start
        return v, factors, tau
    for _ in range(max(1, int(iterations))):
        clipped, factors = clip_to(deltas - v, tau)
        v = v + clipped.mean(axis=0)
    return v, factors, tau


def norm_bounded_mean(deltas: Matrix, max_norm: float) -> tuple[Vector, Vector, float]:
    """Norm bounding (Sun et al., 2019): each row clipped to norm ``M``, then averaged.

    ``max_norm`` of 0 picks ``M`` as the median row norm of the round (adaptive). Returns
    ``(mean, clip_factor_per_row, M)``.
    """
    _check(deltas)
    bound = float(max_norm)
    if bound <= 0:
        bound = float(np.median(np.linalg.norm(deltas, axis=1)))
    if bound <= 0:
        return np.zeros(deltas.shape[1]), np.ones(deltas.shape[0]), bound
    clipped, factors = clip_to(deltas, bound)
    return clipped.mean(axis=0), factors, bound


def fltrust(deltas: Matrix, reference: Vector) -> tuple[Vector, Vector]:
    """FLTrust (Cao et al., NDSS 2021, Algorithm 2, aggregation step).

    Trust ``TS_i = ReLU(cos(g_i, g_0))`` against the server's reference update ``g_0``; each
    ``g_i`` is rescaled to ``||g_0||``; the result is ``sum_i TS_i g_i' / sum_i TS_i`` (zero
    when every trust score is zero). Returns ``(centre, trust_per_row)``.
    """
    _check(deltas)
    g0 = np.asarray(reference, dtype=np.float64)
    if g0.shape != (deltas.shape[1],):
        raise AggregationError(
            f"FLTrust reference update has {g0.size} values; expected {deltas.shape[1]}",
            hint="the root update must be computed for the same model as the participants'",
        )
    g0_norm = float(np.linalg.norm(g0))
    norms = np.linalg.norm(deltas, axis=1)
    if g0_norm == 0:
        return np.zeros_like(g0), np.zeros(deltas.shape[0])
    safe = np.where(norms > 0, norms, 1.0)
    cos = (deltas @ g0) / (safe * g0_norm)
    trust = np.where(norms > 0, np.maximum(cos, 0.0), 0.0)
    total = float(trust.sum())
    if total <= 0:
        return np.zeros_like(g0), trust
    scaled = deltas * (g0_norm / safe)[:, None]
    return (trust[:, None] * scaled).sum(axis=0) / total, trust
