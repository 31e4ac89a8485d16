"""Byzantine-robust server algorithms: median, trimmed mean, Krum, Multi-Krum, centered
clipping, norm bounding and FLTrust.

Every algorithm here works on the participants' *deltas* ``w_k - x`` from the global weights
``x`` (flattened into one vector per update), combines them with a rule of
:mod:`phalanx.core.aggregation.robust_rules`, and returns ``x + delta``. Choices, documented in
``docs/robustness.md``:

* **Unweighted.** Sample counts are self-reported and cannot be checked; an attacker claiming a
  million examples would own any weighted rule. Every robust rule treats updates equally.
* **Canonical order.** Rows are ordered by participant name before combining, so the result does
  not depend on the order updates arrived in (ties in Krum and the trimmed mean included).
* **Works on bucket means.** With bucketed secure aggregation (Karimireddy, He and Jaggi,
  "Byzantine-Robust Learning on Heterogeneous Datasets via Bucketing", ICLR 2022) each "update"
  is a bucket's mean; nothing here assumes an update comes from one organization.
* **Report.** :meth:`report` gives the suspicion scores of
  :mod:`~phalanx.core.aggregation.suspicion` against the robust centre, plus each rule's own
  signal (Krum score and selection, share of coordinates trimmed, clip factor, FLTrust trust).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from phalanx.core.aggregation import robust_rules as rules
from phalanx.core.aggregation.algorithms import _Algorithm, _check_range
from phalanx.core.aggregation.base import check_compatible, to_float32
from phalanx.core.aggregation.suspicion import Report, flatten_deltas, score_updates
from phalanx.core.errors import AggregationError, ConfigError
from phalanx.core.types import ParticipantId, Update, Weights

RootUpdate = Callable[[Weights], Weights]
"""Trains the coordinator's model on its root dataset from the given global weights and returns
the new weights (FLTrust's server update ``g_0`` is that minus the global weights)."""

Extras = dict[str, NDArray[np.float64]]


def flatten(weights: Weights) -> NDArray[np.float64]:
    """One float64 vector of all layers, in order."""
    if not weights:
        return np.zeros(0)
    return np.concatenate([np.ravel(np.asarray(w, dtype=np.float64)) for w in weights])


def unflatten(vector: NDArray[np.float64], like: Weights) -> Weights:
    """Split a flat vector back into float32 arrays shaped as ``like``."""
    out: Weights = []
    pos = 0
    for w in like:
        size = int(np.size(w))
        out.append(vector[pos : pos + size].reshape(np.shape(w)).astype(np.float32))
        pos += size
    return out


class _Robust(_Algorithm):
    """Deltas in, robust centre out; the subclass supplies :meth:`_centre`."""

    def __init__(self) -> None:
        self._last: tuple[list[ParticipantId], NDArray[np.float64], NDArray[np.float64]] | None
        self._last = None
        self._extras: Extras = {}
        self._scalars: dict[str, float] = {}

    def aggregate(self, global_weights: Weights, updates: Sequence[Update]) -> Weights:
        ordered = sorted(updates, key=lambda u: str(u.participant))
        names = [str(u.participant) for u in ordered]
        if len(set(names)) != len(names):
            raise AggregationError(
                f"{self.name}: two updates from one participant in one round ({sorted(names)})",
                hint="each participant answers a round once",
            )
        check_compatible([u.weights for u in ordered], names, reference=global_weights)
        deltas = flatten_deltas(global_weights, [u.weights for u in ordered])
        self._extras, self._scalars = {}, {}
        centre = self._centre(global_weights, deltas)
        self._last = ([ParticipantId(n) for n in names], deltas, centre)
        return unflatten(flatten(global_weights) + centre, global_weights)

    def _centre(self, global_weights: Weights, deltas: NDArray[np.float64]) -> NDArray[np.float64]:
        raise NotImplementedError

    def report(self) -> Report:
        """Suspicion scores of the last round against the robust centre, with the rule's own
        per-update signals (see the class docstrings)."""
        if self._last is None:
            return {}
        names, deltas, centre = self._last
        out = score_updates(names, deltas, centre)
        for i, pid in enumerate(names):
            for key, values in self._extras.items():
                out[pid][key] = float(values[i])
            out[pid].update(self._scalars)
        return out


class CoordinateMedian(_Robust):
    """Coordinate-wise median of the deltas.

    Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
    Statistical Rates", ICML 2018. Tolerates any ``f < n/2`` attackers.
    """

    name = "median"

    def _centre(self, global_weights: Weights, deltas: NDArray[np.float64]) -> NDArray[np.float64]:
        return rules.coordinate_median(deltas)


class TrimmedMean(_Robust):
    """Coordinate-wise trimmed mean of the deltas (Yin et al., ICML 2018).

    Parameters
    ----------
    trim_ratio:
        Share ``beta`` of the updates dropped at *each* end of every coordinate, in [0, 0.5);
        ``floor(beta * n)`` rows each side, at least one row kept. Set it to at least the share
        of attackers expected. The report adds ``trimmed_share`` per update.
    """

    name = "trimmed-mean"

    def __init__(self, trim_ratio: float = 0.2) -> None:
        super().__init__()
        self.trim_ratio = _check_range("trim_ratio", trim_ratio, 0.0, 0.499999, low_open=False)

    def _centre(self, global_weights: Weights, deltas: NDArray[np.float64]) -> NDArray[np.float64]:
        centre, share = rules.trimmed_mean(deltas, self.trim_ratio)
        self._extras["trimmed_share"] = share
        return centre


class MultiKrum(_Robust):
    """Multi-Krum: the mean of the ``select`` updates with the lowest Krum scores.

    Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with Adversaries: Byzantine
    Tolerant Gradient Descent", NeurIPS 2017. The score of an update is the sum of squared
    distances to its ``n - f - 2`` nearest neighbours.

    Parameters
    ----------
    byzantine:
        ``f``, the number of attackers assumed. Krum needs ``n > 2f + 2``; with fewer updates
        ``f`` is lowered to ``(n - 3) // 2`` for that round (reported as ``krum_f``).
    select:
        ``m``, how many updates are averaged; 0 means ``n - f``.
    """

    name = "multi-krum"

    def __init__(self, byzantine: int = 2, select: int = 0) -> None:
        super().__init__()
        self.byzantine = _whole("byzantine", byzantine)
        self.select = _whole("select", select)

    def _centre(self, global_weights: Weights, deltas: NDArray[np.float64]) -> NDArray[np.float64]:
        centre, scores, mask, f = rules.multi_krum(deltas, self.byzantine, self.select)
        self._extras["krum_score"] = scores
        self._extras["selected"] = mask
        self._scalars["krum_f"] = float(f)
        return centre


class Krum(MultiKrum):
    """Krum (Blanchard et al., NeurIPS 2017): the single update with the lowest Krum score.

    Parameters
    ----------
    byzantine:
        ``f``, as for :class:`MultiKrum`.
    """

    name = "krum"

    def __init__(self, byzantine: int = 2) -> None:
        super().__init__(byzantine=byzantine, select=1)


class CenteredClipping(_Robust):
    """Centered clipping (Karimireddy, He and Jaggi, "Learning from History for Byzantine
    Robust Optimization", ICML 2021).

    ``v <- v + mean_i clip(delta_i - v, tau)``, ``iterations`` times, starting from the previous
    round's aggregate delta (the paper's momentum start; the coordinate-wise median in the first
    round). The start is part of :meth:`state`, so a resumed federation continues from it.

    Parameters
    ----------
    radius:
        The clipping radius ``tau`` in delta space (>= 0); 0 picks the median distance of the
        round's updates to the start (adaptive, scale-free).
    iterations:
        Clipping iterations per round (the paper uses 1-3).
    """

    name = "centered-clipping"

    def __init__(self, radius: float = 0.0, iterations: int = 3) -> None:
        super().__init__()
        self.radius = _check_range("radius", radius, 0.0, 1e9, low_open=False)
        self.iterations = _whole("iterations", iterations, low=1)
        self._start: Weights | None = None

    def _centre(self, global_weights: Weights, deltas: NDArray[np.float64]) -> NDArray[np.float64]:
        if self._start is None:
            start = rules.coordinate_median(deltas)
        else:
            check_compatible(
                [global_weights], ["the global model"], reference=self._start,
                reference_name="the centered-clipping start",
            )  # fmt: skip
            start = flatten(self._start)
        centre, factors, tau = rules.centered_clipping(deltas, start, self.radius, self.iterations)
        self._start = unflatten(centre, global_weights)
        self._extras["clip_factor"] = factors
        self._scalars["clip_radius"] = tau
        return centre

    def state(self) -> dict[str, Weights]:
        return {} if self._start is None else {"start": to_float32(self._start)}

    def load_state(self, state: Mapping[str, Weights]) -> None:
        if not state:
            self._start = None
            return
        self._check_state_keys(state, {"start"})
        self._start = to_float32(state["start"])


class NormBound(_Robust):
    """Norm bounding (Sun, Kairouz, Suresh and McMahan, "Can You Really Backdoor Federated
    Learning?", arXiv:1911.07963, 2019): each delta clipped to norm ``M``, then averaged.

    The paper's optional weak-DP noise is left to the privacy module.

    Parameters
    ----------
    max_norm:
        ``M`` (>= 0); 0 picks the median norm of the round's deltas (adaptive).
    """

    name = "norm-bound"

    def __init__(self, max_norm: float = 0.0) -> None:
        super().__init__()
        self.max_norm = _check_range("max_norm", max_norm, 0.0, 1e9, low_open=False)

    def _centre(self, global_weights: Weights, deltas: NDArray[np.float64]) -> NDArray[np.float64]:
        centre, factors, bound = rules.norm_bounded_mean(deltas, self.max_norm)
        self._extras["clip_factor"] = factors
        self._scalars["clip_radius"] = bound
        return centre


class FLTrust(_Robust):
    """FLTrust (Cao, Fang, Liu and Gong, "FLTrust: Byzantine-robust Federated Learning via Trust
    Bootstrapping", NDSS 2021).

    The coordinator trains on a small root dataset of its own from the global weights; its delta
    ``g_0`` is the trusted direction. Training is not pure, so the composition root passes a
    :data:`RootUpdate` to :meth:`bind_root`. Without one (no root dataset), the coordinate-wise
    median of the round's deltas stands in for ``g_0`` (reported as ``root = 0``).

    It has no numeric parameters.
    """

    name = "fltrust"

    def __init__(self) -> None:
        super().__init__()
        self._root_update: RootUpdate | None = None

    def bind_root(self, root_update: RootUpdate) -> None:
        """Use ``root_update`` (the coordinator's training on its root dataset) for ``g_0``."""
        self._root_update = root_update

    def _centre(self, global_weights: Weights, deltas: NDArray[np.float64]) -> NDArray[np.float64]:
        if self._root_update is None:
            reference = rules.coordinate_median(deltas)
            self._scalars["root"] = 0.0
        else:
            root = self._root_update([np.array(w, copy=True) for w in global_weights])
            check_compatible(
                [root], ["the FLTrust root update"], reference=global_weights,
            )  # fmt: skip
            reference = flatten_deltas(global_weights, [root])[0]
            self._scalars["root"] = 1.0
        centre, trust = rules.fltrust(deltas, reference)
        self._extras["trust"] = trust
        return centre


def _whole(name: str, value: float, *, low: int = 0) -> int:
    if isinstance(value, bool) or float(value) != int(value) or int(value) < low:
        raise ConfigError(f"{name} must be a whole number >= {low}; found {value!r}")
    return int(value)


ROBUST_ALGORITHMS: dict[str, Callable[..., _Robust]] = {
    "median": CoordinateMedian,
    "trimmed-mean": TrimmedMean,
    "krum": Krum,
    "multi-krum": MultiKrum,
    "centered-clipping": CenteredClipping,
    "norm-bound": NormBound,
    "fltrust": FLTrust,
}
"""Robust algorithm names for :func:`~phalanx.core.aggregation.make_algorithm`."""
