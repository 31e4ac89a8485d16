"""Per-update suspicion scores: who in this round looks like a poisoner or a sybil.

Every server algorithm can report, for the last round, one small dict of scores per update
(``ServerAlgorithm.report()``). The scores are computed here from the participants' *deltas*
``w_k - x`` (their new local weights minus the global weights they started from) and a centre
(the robust aggregate, or the plain mean for FedAvg):

==================  ==============================================================================
key                 meaning
==================  ==============================================================================
``distance``        Euclidean distance of the delta to the centre
``distance_z``      robust z-score of that distance among this round's updates
                    ``(d - median) / (1.4826 * MAD)`` (Rousseeuw and Croux, JASA 1993)
``distance_ratio``  the distance over the round's median distance
``norm``            Euclidean norm of the delta
``norm_z``          robust z-score of the norm
``norm_ratio``      the norm over the round's median norm
``max_cosine``      largest cosine similarity to another update of the round: sybils pushing one
                    goal send near-identical updates (FoolsGold; Fung, Yoon and Beschastnikh,
                    "The Limitations of Federated Learning in Sybil Settings", RAID 2020)
``sybil_weight``    FoolsGold's learning-rate weight ``1 - max_cosine`` after its pardoning and
                    logit steps (1 = independent, 0 = a clone of another update)
``flagged``         1.0 when the distance or the norm is an outlier on both scales (z-score
                    above :data:`Z_LIMIT` *and* ratio above :data:`RATIO_LIMIT`: with few
                    updates the MAD alone is too jumpy), or ``max_cosine`` exceeds
                    :data:`COSINE_LIMIT`; else 0.0. Only large norms count: a small update is
                    harmless
==================  ==============================================================================

FoolsGold originally compares each client's *history* of updates; scoring the current round only
keeps the coordinator free of per-participant state (and works for participants sampled rarely).
Two colluders sending the same crafted update (A Little Is Enough, inner-product manipulation)
have a cosine of 1 in the round they do it.

The Gram matrix costs ``n^2 d``; above :data:`GRAM_BUDGET` multiply-adds it is computed on an
evenly strided subset of the coordinates (a deterministic sketch; cosines of high-dimensional
updates are well estimated by a few thousand coordinates).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import AggregationError
from phalanx.core.types import ParticipantId

Z_LIMIT = 3.5
"""Robust z-score above which a distance or norm is an outlier (Iglewicz and Hoaglin, 1993)."""

RATIO_LIMIT = 2.0
"""A distance or norm must also be this many times the round's median to be flagged."""

COSINE_LIMIT = 0.99
"""Cosine similarity above which two updates of one round are treated as clones."""

GRAM_BUDGET = 50_000_000
"""Most multiply-adds spent on the pairwise cosine matrix before coordinates are subsampled."""

_MAD_TO_SIGMA = 1.4826
_CONFIDENCE_KAPPA = 1.0  # FoolsGold's logit confidence parameter (the paper's default)

Report = dict[ParticipantId, dict[str, float]]


def robust_z(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(v - median) / (1.4826 * MAD)``, with a floor on the scale so ties give finite scores.

    The floor is ``1e-6 * (|median| + 1e-12)``: when most values are equal, one value that
    differs gets a large (finite) score, and equal values get 0.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v.copy()
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med)))
    scale = max(_MAD_TO_SIGMA * mad, 1e-6 * (abs(med) + 1e-12))
    return (v - med) / scale


def pairwise_cosine(matrix: NDArray[np.floating]) -> NDArray[np.float64]:
    """Cosine similarity between the rows of ``matrix`` (``n x d``); a zero row has cosine 0.

    Above :data:`GRAM_BUDGET` multiply-adds, an evenly strided subset of the columns is used.
    """
    m = np.asarray(matrix)
    n, d = m.shape
    if n * n * d > GRAM_BUDGET and d > 0:
        keep = max(1024, GRAM_BUDGET // max(n * n, 1))
        step = max(1, math.ceil(d / keep))
        m = m[:, ::step]
    m64 = np.asarray(m, dtype=np.float64)
    norms = np.linalg.norm(m64, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    unit = m64 / safe[:, None]
    cos = unit @ unit.T
    cos[norms == 0, :] = 0.0
    cos[:, norms == 0] = 0.0
    return np.clip(cos, -1.0, 1.0)


def foolsgold_weights(cos: NDArray[np.float64]) -> NDArray[np.float64]:
    """FoolsGold's per-client weights from a pairwise cosine matrix (Fung et al., Algorithm 1).

    ``v_i = max_j cs_ij``; pardoning rescales ``cs_ij`` by ``v_i / v_j`` when ``v_j > v_i``;
    ``alpha_i = 1 - max_j cs_ij``, rescaled so the largest is 1, then passed through the logit
    ``ln(alpha / (1 - alpha)) + 0.5`` and clipped to ``[0, 1]``.
    """
    n = cos.shape[0]
    if n < 2:
        return np.ones(n)
    cs = cos.copy()
    np.fill_diagonal(cs, -np.inf)
    v = cs.max(axis=1)
    pardon = (v[None, :] > v[:, None]) & (v[:, None] > 0)
    np.fill_diagonal(pardon, False)
    safe_v = np.where(v > 0, v, 1.0)
    cs = cs * np.where(pardon, v[:, None] / safe_v[None, :], 1.0)  # never inf * 0
    alpha = np.clip(1.0 - cs.max(axis=1), 0.0, 1.0)
    top = alpha.max()
    if top > 0:
        alpha = alpha / top
    alpha = np.where(alpha >= 1.0, 0.99, alpha)
    with np.errstate(divide="ignore"):
        logit = _CONFIDENCE_KAPPA * (np.log(alpha / (1.0 - alpha)) + 0.5)
    return np.clip(np.nan_to_num(logit, neginf=0.0, posinf=1.0), 0.0, 1.0)


def score_updates(
    participants: Sequence[ParticipantId],
    deltas: NDArray[np.floating],
    centre: NDArray[np.floating],
) -> Report:
    """The suspicion scores of one round (see the module docstring for each key).

    Parameters
    ----------
    participants:
        Who sent each row of ``deltas`` (for a bucketed round: the bucket names).
    deltas:
        ``n x d``: each update minus the global weights, flattened.
    centre:
        ``d``: the aggregate the algorithm chose (its robust centre).

    Returns
    -------
    dict
        ``{participant: {"distance": ..., "distance_z": ..., ..., "flagged": 0.0 | 1.0}}``.

    Raises
    ------
    AggregationError
        When the shapes do not agree.
    """
    m = np.asarray(deltas)
    c = np.asarray(centre, dtype=np.float64).ravel()
    if m.ndim != 2 or m.shape[0] != len(participants) or m.shape[1] != c.size:
        raise AggregationError(
            f"suspicion scores need one delta row per participant ({len(participants)}) of"
            f" the centre's length ({c.size}); found an array of shape {m.shape}"
        )
    n = m.shape[0]
    m64 = np.asarray(m, dtype=np.float64)
    norms = np.linalg.norm(m64, axis=1)
    dist = np.linalg.norm(m64 - c[None, :], axis=1)
    dist_z = robust_z(dist)
    norm_z = robust_z(norms)
    dist_ratio = dist / max(float(np.median(dist)), 1e-300)
    norm_ratio = norms / max(float(np.median(norms)), 1e-300)
    cos = pairwise_cosine(m)
    if n > 1:
        off = cos.copy()
        np.fill_diagonal(off, -np.inf)
        max_cos = off.max(axis=1)
    else:
        max_cos = np.zeros(n)
    weights = foolsgold_weights(cos)
    out: Report = {}
    for i, pid in enumerate(participants):
        far = dist_z[i] > Z_LIMIT and dist_ratio[i] > RATIO_LIMIT
        big = norm_z[i] > Z_LIMIT and norm_ratio[i] > RATIO_LIMIT
        flagged = (n >= 3 and (far or big)) or max_cos[i] > COSINE_LIMIT
        out[pid] = {
            "distance": float(dist[i]),
            "distance_z": float(dist_z[i]),
            "distance_ratio": float(dist_ratio[i]),
            "norm": float(norms[i]),
            "norm_z": float(norm_z[i]),
            "norm_ratio": float(norm_ratio[i]),
            "max_cosine": float(max_cos[i]),
            "sybil_weight": float(weights[i]),
            "flagged": 1.0 if flagged else 0.0,
        }
    return out


def flatten_deltas(
    global_weights: Sequence[NDArray[np.floating]],
    weights_list: Sequence[Sequence[NDArray[np.floating]]],
    *,
    stride: int = 1,
) -> NDArray[np.float64]:
    """``n x d`` float64 matrix of ``weights - global_weights``, each flattened layer by layer.

    With ``stride > 1`` only every ``stride``-th coordinate is kept (a deterministic sketch,
    ``n x ceil(d / stride)``), read straight from the layers so memory and time stay at the
    sketch's size.
    """
    d = int(sum(np.size(w) for w in global_weights))
    if stride < 1:
        raise AggregationError(f"sketch stride must be >= 1; found {stride}")
    out = np.empty((len(weights_list), -(-d // stride)), dtype=np.float64)
    # the kept coordinates of each layer: global indices pos + k with (pos + k) % stride == 0
    starts, col, pos = [], 0, 0
    for x in global_weights:
        size = int(np.size(x))
        first = (-pos) % stride
        count = len(range(first, size, stride))
        starts.append((first, col, count))
        col += count
        pos += size
    for i, weights in enumerate(weights_list):
        for w, x, (first, c, count) in zip(weights, global_weights, starts, strict=True):
            if count:
                kept = np.ravel(w)[first::stride].astype(np.float64)
                out[i, c : c + count] = kept - np.ravel(x)[first::stride].astype(np.float64)
    return out


SKETCH_BUDGET = 4_000_000
"""Most delta values FedAvg-style algorithms keep for their report (``n x d``); above it they
keep an evenly strided coordinate sketch (32 MB at most, whatever the number of participants)."""


def sketch_stride(n: int, d: int, budget: int = SKETCH_BUDGET) -> int:
    """The stride keeping an ``n x d`` delta matrix under ``budget`` values."""
    return max(1, -(-(n * d) // max(budget, 1)))


def score_sketch(
    participants: Sequence[ParticipantId],
    deltas: NDArray[np.floating],
    centre: NDArray[np.floating],
    stride: int,
) -> Report:
    """:func:`score_updates` on a strided sketch; norms and distances are scaled by
    ``sqrt(stride)`` to estimate the full ones (z-scores, ratios and cosines need no scaling),
    and ``sketch_stride`` says how coarse the estimate is."""
    out = score_updates(participants, deltas, centre)
    factor = float(np.sqrt(stride))
    for scores in out.values():
        scores["distance"] *= factor
        scores["norm"] *= factor
        scores["sketch_stride"] = float(stride)
    return out


class Quarantine:
    """Exclude a participant once it has been flagged in ``after`` rounds (not necessarily in a
    row). ``after = 0`` disables the policy.

    A quarantined participant is no longer offered tasks; the coordinator records why. The
    policy is deliberately simple and auditable: the counts are in :attr:`flags`.
    """

    def __init__(self, after: int) -> None:
        if isinstance(after, bool) or int(after) != after or after < 0:
            raise AggregationError(
                f"the quarantine threshold must be a whole number of flagged rounds >= 0;"
                f" found {after!r}",
                hint="use 0 to disable quarantine, or e.g. 3",
            )
        self.after = int(after)
        self.flags: dict[ParticipantId, int] = {}
        self.excluded: dict[ParticipantId, int] = {}
        """Quarantined participants and the round they were excluded after."""

    def observe(self, round_id: int, report: Report) -> list[ParticipantId]:
        """Count this round's flags; returns the participants newly quarantined."""
        newly: list[ParticipantId] = []
        for pid, scores in sorted(report.items()):
            if scores.get("flagged", 0.0) >= 1.0:
                self.flags[pid] = self.flags.get(pid, 0) + 1
                if self.after and self.flags[pid] >= self.after and pid not in self.excluded:
                    self.excluded[pid] = int(round_id)
                    newly.append(pid)
        return newly

    def allowed(self, participants: Sequence[ParticipantId]) -> list[ParticipantId]:
        """``participants`` without the quarantined ones."""
        return [p for p in participants if p not in self.excluded]
