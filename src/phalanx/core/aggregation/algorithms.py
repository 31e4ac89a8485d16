"""Server-side federated optimization algorithms.

Every algorithm receives the participants' new local *weights* and returns new global weights.
The adaptive ones treat ``weighted_mean(updates) - global`` as a pseudo-gradient (Reddi et al.,
2021): a server learning rate of 1 and no momentum gives back FedAvg.

=========  ===========================================================================
fedavg     McMahan et al., "Communication-Efficient Learning of Deep Networks from
           Decentralized Data", AISTATS 2017.
fedprox    Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020.
scaffold   Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated
           Learning", ICML 2020.
fedavgm    Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data Distribution
           for Federated Visual Classification", arXiv:1909.06335, 2019.
fedadam,   Reddi et al., "Adaptive Federated Optimization", ICLR 2021.
fedyogi
=========  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from phalanx.core.aggregation.base import check_compatible, to_float32, uniform_sum, weighted_mean
from phalanx.core.aggregation.classwise import COUNTS_KEY, classwise_output
from phalanx.core.aggregation.streaming import StreamedMean, StreamingMean
from phalanx.core.aggregation.suspicion import (
    Report,
    flatten_deltas,
    score_sketch,
    sketch_stride,
)
from phalanx.core.errors import AggregationError, ConfigError
from phalanx.core.types import ParticipantId, Update, Weights

F64 = list[NDArray[np.float64]]


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool) -> float:
    value = float(value)
    ok_low = value > low if low_open else value >= low
    if not (np.isfinite(value) and ok_low and value <= high):
        bracket = "(" if low_open else "["
        raise ConfigError(
            f"{name} must be in {bracket}{low}, {high}]; found {value}",
        )
    return value


class _Algorithm:
    """Shared plumbing: update validation, the default (stateless) state methods, and the
    suspicion report of the last round (computed only when asked for)."""

    name: str = ""
    _last_round: (
        tuple[list[ParticipantId], NDArray[np.float64], NDArray[np.float64], int] | None
    ) = None
    streamable: bool = False
    """True when :meth:`aggregate` needs only the updates' sample-weighted mean, so it may be
    folded reply by reply (:mod:`~phalanx.core.aggregation.streaming`)."""
    _streamed: StreamedMean | None = None
    _last_report: Report | None = None
    classwise_layer: int = -1
    """Index of the output layer's weight array whose rows are averaged class by class
    (:mod:`~phalanx.core.aggregation.classwise`, ADR 0018); -1: off."""

    def _set_classwise(self, classwise_layer: float) -> None:
        value = _check_range("classwise_layer", classwise_layer, -1.0, 1e6, low_open=False)
        if value != int(value):
            raise ConfigError(
                f"classwise_layer must be a whole array index; found {classwise_layer}",
                hint="-1 turns class-wise averaging off; server_params() sets the classifier's",
            )
        self.classwise_layer = int(value)
        if self.classwise_layer >= 0:  # needs each update's counts, not a folded mean
            self.streamable = False

    def _classwise_config(self) -> dict[str, float]:
        return {COUNTS_KEY: 1.0} if self.classwise_layer >= 0 else {}

    def aggregate_streamed(self, global_weights: Weights, stream: StreamingMean) -> Weights:
        """:meth:`aggregate` from a streamed mean: the same step and suspicion report, up to
        float rounding. Raises :class:`AggregationError` unless :attr:`streamable`."""
        if not self.streamable:
            raise AggregationError(
                f"{self.name or type(self).__name__} needs the individual updates; it cannot"
                " aggregate a streamed mean",
                hint="give it the updates through aggregate()",
            )
        self._streamed = stream.finish()
        try:
            return self.aggregate(global_weights, [])
        finally:
            self._streamed = None

    def report(self) -> Report:
        """Suspicion scores of the last round's updates against the aggregate this algorithm
        chose (see :mod:`phalanx.core.aggregation.suspicion`); empty before the first round.
        """
        if self._last_round is not None:  # scored once; the sketch (up to 32 MB) is dropped
            names, deltas, centre, stride = self._last_round
            self._last_report = score_sketch(names, deltas, centre, stride)
            self._last_round = None
        return {p: dict(scores) for p, scores in (self._last_report or {}).items()}

    def task_config(self) -> dict[str, float]:
        return self._classwise_config()

    def task_extras(self) -> dict[str, Weights]:
        return {}

    def state(self) -> dict[str, Weights]:
        return {}

    def load_state(self, state: Mapping[str, Weights]) -> None:
        self._check_state_keys(state, set())

    def aggregate(self, global_weights: Weights, updates: Sequence[Update]) -> Weights:
        raise NotImplementedError

    def _mean(self, global_weights: Weights, updates: Sequence[Update]) -> Weights:
        if self._streamed is not None:  # inside aggregate_streamed: the mean is already known
            got = self._streamed
            mean = list(got.mean)
            centre = flatten_deltas(global_weights, [mean], stride=got.stride)[0]
            self._last_round = (list(got.participants), got.deltas, centre, got.stride)
            self._last_report = None
            return mean
        names = [str(u.participant) for u in updates]
        lists = [u.weights for u in updates]
        check_compatible(lists, names, reference=global_weights)
        mean = weighted_mean(lists, [u.num_examples for u in updates], names)
        if self.classwise_layer >= 0:
            mean = classwise_output(mean, updates, self.classwise_layer)
        self._remember(global_weights, updates, mean)
        return mean

    def _remember(
        self, global_weights: Weights, updates: Sequence[Update], result: Weights
    ) -> None:
        """Keep a (sketched) copy of the round's deltas for :meth:`report`, not the updates."""
        d = int(sum(np.size(w) for w in global_weights))
        stride = sketch_stride(len(updates), d)
        deltas = flatten_deltas(global_weights, [u.weights for u in updates], stride=stride)
        centre = flatten_deltas(global_weights, [result], stride=stride)[0]
        names = [ParticipantId(u.participant) for u in updates]
        self._last_round = (names, deltas, centre, stride)
        self._last_report = None

    def _check_state_keys(self, state: Mapping[str, Weights], expected: set[str]) -> None:
        if set(state) != expected:
            raise AggregationError(
                f"{self.name} state has keys {sorted(state)}; expected {sorted(expected)}",
                hint="the checkpoint was written by another aggregation algorithm",
            )

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class FedAvg(_Algorithm):
    """Federated Averaging: the sample-weighted mean of the local weights.

    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
    AISTATS 2017.

    Parameters
    ----------
    classwise_layer:
        Index of a classifier's output weight array (its bias follows it) whose rows are
        averaged class by class, weighted by each participant's count of the class
        (:mod:`~phalanx.core.aggregation.classwise`, ADR 0018); -1 (default) turns it off.
        FedProx, FedAvgM, FedAdam and FedYogi take it too.
    """

    name = "fedavg"
    streamable = True

    def __init__(self, classwise_layer: float = -1) -> None:
        self._set_classwise(classwise_layer)

    def aggregate(self, global_weights: Weights, updates: Sequence[Update]) -> Weights:
        """Return ``sum_k n_k w_k / sum_k n_k`` (the global weights only fix the layout)."""
        return self._mean(global_weights, updates)


class FedProx(FedAvg):
    """FedProx: FedAvg on the server; participants add ``mu/2 * ||w - w_global||^2`` locally.

    Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020.

    Parameters
    ----------
    proximal_mu:
        Strength of the proximal term (>= 0; 0 is FedAvg). Typical values 0.001-1.
    """

    name = "fedprox"

    def __init__(self, proximal_mu: float = 0.01, classwise_layer: float = -1) -> None:
        self.proximal_mu = _check_range("proximal_mu", proximal_mu, 0.0, 1e6, low_open=False)
        self._set_classwise(classwise_layer)

    def task_config(self) -> dict[str, float]:
        return {"proximal_mu": self.proximal_mu, **self._classwise_config()}


class FedAvgM(_Algorithm):
    """FedAvg with server momentum on the pseudo-gradient.

    Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated
    Visual Classification", arXiv:1909.06335, 2019. With ``d = x - mean_k(w_k)``::

        v <- server_momentum * v + d
        x <- x - server_lr * v

    Parameters
    ----------
    server_lr:
        Server learning rate (> 0). With ``server_momentum=0`` and ``server_lr=1`` this is
        FedAvg.
    server_momentum:
        Server momentum in [0, 1); the effective rate is ``server_lr / (1 - server_momentum)``.
    """

    name = "fedavgm"
    streamable = True

    def __init__(
        self, server_lr: float = 1.0, server_momentum: float = 0.9, classwise_layer: float = -1
    ) -> None:
        self.server_lr = _check_range("server_lr", server_lr, 0.0, 1e3, low_open=True)
        self.server_momentum = _check_range(
            "server_momentum", server_momentum, 0.0, 0.999999, low_open=False
        )
        self._set_classwise(classwise_layer)
        self._velocity: Weights | None = None

    def aggregate(self, global_weights: Weights, updates: Sequence[Update]) -> Weights:
        mean = self._mean(global_weights, updates)
        if self._velocity is not None:
            check_compatible(
                [global_weights],
                ["the global model"],
                reference=self._velocity,
                reference_name="the server momentum",
            )
        new_velocity: Weights = []
        out: Weights = []
        for layer, (x, m) in enumerate(zip(global_weights, mean, strict=True)):
            x64 = np.asarray(x, dtype=np.float64)
            d = x64 - m.astype(np.float64)
            v = d if self._velocity is None else self.server_momentum * self._velocity[layer] + d
            v32 = np.asarray(v, dtype=np.float32)
            new_velocity.append(v32)
            out.append((x64 - self.server_lr * v32.astype(np.float64)).astype(np.float32))
        self._velocity = new_velocity
        return out

    def state(self) -> dict[str, Weights]:
        return {} if self._velocity is None else {"velocity": to_float32(self._velocity)}

    def load_state(self, state: Mapping[str, Weights]) -> None:
        if not state:
            self._velocity = None
            return
        self._check_state_keys(state, {"velocity"})
        self._velocity = to_float32(state["velocity"])


class _Adaptive(_Algorithm):
    """FedOpt family of Reddi et al., ICLR 2021 (Algorithm 2), without bias correction.

    With the pseudo-gradient ``d = mean_k(w_k) - x``::

        m <- beta1 * m + (1 - beta1) * d
        v <- (second-moment rule of the subclass)
        x <- x + server_lr * m / (sqrt(v) + tau)

    ``m`` starts at 0 and ``v`` at ``tau**2`` as in the paper.

    With ``adaptive_layers = k`` only the first ``k`` layers take the adaptive step; the others
    take the plain FedAvg mean (``x <- mean_k(w_k)``). The hybrid detector needs this: the
    adaptive step moves every coordinate by about ``server_lr`` a round whatever the size of its
    pseudo-gradient, which suits a classifier but leaves an autoencoder's reconstruction far from
    converged (on NSL-KDD its median benign error stays 30 times the centralized one and it flags
    8 % of held-out attacks at 1 % benign FPR instead of 70 %; ADR 0016). 0 (default): every layer
    is adaptive.
    """

    streamable = True

    def __init__(
        self,
        server_lr: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        adaptive_layers: float = 0,
        classwise_layer: float = -1,
    ) -> None:
        self.server_lr = _check_range("server_lr", server_lr, 0.0, 1e3, low_open=True)
        self.beta1 = _check_range("beta1", beta1, 0.0, 0.999999, low_open=False)
        self.beta2 = _check_range("beta2", beta2, 0.0, 0.999999, low_open=False)
        self.tau = _check_range("tau", tau, 0.0, 1e3, low_open=True)
        layers = _check_range("adaptive_layers", adaptive_layers, 0.0, 1e6, low_open=False)
        if layers != int(layers):
            raise ConfigError(
                f"adaptive_layers must be a whole number of layers; found {adaptive_layers}",
                hint="0 makes every layer adaptive; the hybrid detector sets its classifier's",
            )
        self.adaptive_layers = int(layers)
        self._set_classwise(classwise_layer)
        self._m: Weights | None = None
        self._v: Weights | None = None

    def _second_moment(
        self, v: NDArray[np.float64], d2: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        raise NotImplementedError

    def aggregate(self, global_weights: Weights, updates: Sequence[Update]) -> Weights:
        mean = self._mean(global_weights, updates)
        if self._m is None or self._v is None:
            self._m = [np.zeros_like(w, dtype=np.float32) for w in global_weights]
            self._v = [np.full_like(w, self.tau**2, dtype=np.float32) for w in global_weights]
        check_compatible(
            [global_weights],
            ["the global model"],
            reference=self._m,
            reference_name="the server moments",
        )
        if self.adaptive_layers > len(global_weights):
            raise AggregationError(
                f"adaptive_layers is {self.adaptive_layers} but the model has"
                f" {len(global_weights)} layers",
                hint="set it to the number of leading layers the adaptive step applies to",
            )
        adaptive = self.adaptive_layers or len(global_weights)
        new_m: Weights = []
        new_v: Weights = []
        out: Weights = []
        for i, (x, w, m_old, v_old) in enumerate(
            zip(global_weights, mean, self._m, self._v, strict=True)
        ):
            if i >= adaptive:  # plain FedAvg for the trailing layers; their moments stay
                new_m.append(m_old)
                new_v.append(v_old)
                out.append(np.asarray(w, dtype=np.float32))
                continue
            x64 = np.asarray(x, dtype=np.float64)
            d = w.astype(np.float64) - x64
            m = (self.beta1 * m_old.astype(np.float64) + (1.0 - self.beta1) * d).astype(np.float32)
            v = self._second_moment(v_old.astype(np.float64), d * d).astype(np.float32)
            step = (
                self.server_lr * m.astype(np.float64) / (np.sqrt(v.astype(np.float64)) + self.tau)
            )
            new_m.append(m)
            new_v.append(v)
            out.append((x64 + step).astype(np.float32))
        self._m, self._v = new_m, new_v
        return out

    def state(self) -> dict[str, Weights]:
        if self._m is None or self._v is None:
            return {}
        return {"m": to_float32(self._m), "v": to_float32(self._v)}

    def load_state(self, state: Mapping[str, Weights]) -> None:
        if not state:
            self._m = self._v = None
            return
        self._check_state_keys(state, {"m", "v"})
        check_compatible([state["v"]], ["v"], reference=state["m"], reference_name="m")
        self._m, self._v = to_float32(state["m"]), to_float32(state["v"])


class FedAdam(_Adaptive):
    """Server-side Adam: ``v <- beta2 * v + (1 - beta2) * d**2`` (Reddi et al., ICLR 2021).

    Parameters
    ----------
    server_lr:
        Server learning rate, the paper's ``eta`` (> 0); the largest per-coordinate step is
        about ``server_lr``.
    beta1, beta2:
        First- and second-moment decay rates in [0, 1).
    tau:
        Adaptivity floor (> 0): larger values make the update closer to FedAvgM.
    """

    name = "fedadam"

    def _second_moment(
        self, v: NDArray[np.float64], d2: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        return self.beta2 * v + (1.0 - self.beta2) * d2


class FedYogi(_Adaptive):
    """Server-side Yogi: ``v <- v - (1 - beta2) * d**2 * sign(v - d**2)`` (Reddi et al., 2021).

    Yogi's second moment grows additively, so it adapts more gently than Adam when the
    pseudo-gradient suddenly grows (common with heterogeneous participants).

    Parameters
    ----------
    server_lr, beta1, beta2, tau:
        As for :class:`FedAdam`.
    """

    name = "fedyogi"

    def _second_moment(
        self, v: NDArray[np.float64], d2: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        return v - (1.0 - self.beta2) * d2 * np.sign(v - d2)


class Scaffold(_Algorithm):
    """SCAFFOLD: stochastic controlled averaging (Karimireddy et al., ICML 2020, Algorithm 1).

    The server keeps a control variate ``c`` and sends it with each task as
    ``task_extras()["control"]``; each participant sends its new weights ``y_k`` and its control
    delta ``extras["control_delta"]`` (option II of the paper). Over the sampled set ``S``::

        x <- x + server_lr * (weighted_mean_k(y_k) - x)
        c <- c + (|S| / N) * mean_k(delta_c_k)     # = c + sum_k(delta_c_k) / N

    The weights use the sample-weighted mean (as FedAvg) rather than the paper's plain mean, so
    that participants with more data count more; the control update keeps the paper's uniform
    form, which maintains ``c = mean_i(c_i)`` over all N participants.

    Before the first aggregation ``c`` is zero and ``task_extras()`` is empty; participants
    treat a missing ``"control"`` as zero.

    Parameters
    ----------
    server_lr:
        Global step size ``eta_g`` (> 0; the paper uses 1).
    num_participants:
        N, the number of participants in the federation. 0 means "the sampled set is all of
        them" (``|S| / N = 1``).
    """

    name = "scaffold"

    def __init__(self, server_lr: float = 1.0, num_participants: int = 0) -> None:
        self.server_lr = _check_range("server_lr", server_lr, 0.0, 1e3, low_open=True)
        if int(num_participants) != num_participants or num_participants < 0:
            raise ConfigError(f"num_participants must be an integer >= 0; found {num_participants}")
        self.num_participants = int(num_participants)
        self._control: Weights | None = None

    def task_config(self) -> dict[str, float]:
        return {"scaffold": 1.0}

    def task_extras(self) -> dict[str, Weights]:
        return {} if self._control is None else {"control": to_float32(self._control)}

    def aggregate(self, global_weights: Weights, updates: Sequence[Update]) -> Weights:
        mean = self._mean(global_weights, updates)
        deltas: list[Weights] = []
        for u in updates:
            delta = u.extras.get("control_delta")
            if delta is None:
                raise AggregationError(
                    f"{u.participant} sent no extras['control_delta'] for SCAFFOLD",
                    hint="the participant must run local_train with the SCAFFOLD task config",
                )
            deltas.append(delta)
        names = [f"{u.participant} control_delta" for u in updates]
        check_compatible(deltas, names, reference=global_weights)
        n_total = self.num_participants or len(updates)
        if len(updates) > n_total:
            raise AggregationError(
                f"{len(updates)} SCAFFOLD updates but num_participants is {n_total}",
                hint="set num_participants to the size of the whole federation",
            )
        control = self._control or [np.zeros_like(w, dtype=np.float32) for w in global_weights]
        delta_sum: F64 = uniform_sum(deltas)
        self._control = [
            (c.astype(np.float64) + s / n_total).astype(np.float32)
            for c, s in zip(control, delta_sum, strict=True)
        ]
        return [
            (x64 + self.server_lr * (m.astype(np.float64) - x64)).astype(np.float32)
            for x64, m in (
                (np.asarray(x, dtype=np.float64), m)
                for x, m in zip(global_weights, mean, strict=True)
            )
        ]

    def state(self) -> dict[str, Weights]:
        return {} if self._control is None else {"control": to_float32(self._control)}

    def load_state(self, state: Mapping[str, Weights]) -> None:
        if not state:
            self._control = None
            return
        self._check_state_keys(state, {"control"})
        self._control = to_float32(state["control"])
