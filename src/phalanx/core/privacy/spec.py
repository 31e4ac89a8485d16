"""What a DP task asks for, what it costs, and the budget it is charged to.

The task's ``dp`` configuration (:class:`DPTaskSpec`) comes from the coordinator; a participant
never trusts a cost the coordinator states. It turns the parameters into
:class:`PrivacyEvent` objects itself (:func:`record_event`, :func:`client_event`) and asks its own
accountant what they cost against its own :class:`Budget`.

Modes
-----
``record``
    Record-level DP-SGD inside each participant (Abadi et al., "Deep Learning with Differential
    Privacy", CCS 2016): each local step clips every example's gradient and adds Gaussian
    noise; a step samples each local example independently with probability ``q`` (Poisson
    sampling, so privacy amplification by sampling applies).
``client-central``
    Client-level DP-FedAvg (McMahan et al., ICLR 2018): each participant clips its model delta,
    the coordinator adds Gaussian noise to the sum. Protects a whole organization's data,
    trusting the coordinator to add the noise.
``client-distributed``
    Client-level DP with secure aggregation (Kairouz, Liu and Steinke, "The Distributed Discrete
    Gaussian Mechanism for Federated Learning with Secure Aggregation", ICML 2021): each
    participant adds its share of discrete Gaussian noise in the integer domain before masking,
    so the coordinator never sees an un-noised sum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import PrivacyError

Mode = Literal["record", "client-central", "client-distributed"]
MODES: tuple[Mode, ...] = ("record", "client-central", "client-distributed")

BUDGET_REFUSAL = "privacy budget:"
"""How a participant's refusal starts when a round would take it past its own privacy budget.

Such a refusal holds for every later round of the federation too (spent epsilon only grows and
every round costs the same), so the coordinator stops asking that participant
(:class:`~phalanx.core.rounds.Federation`)."""


def is_budget_refusal(reason: str) -> bool:
    """True when ``reason`` says the participant's privacy budget is spent."""
    return reason.startswith(BUDGET_REFUSAL)


@dataclass(frozen=True)
class PrivacyEvent:
    """One mechanism run, in the terms an accountant composes.

    Attributes
    ----------
    kind:
        ``"gaussian"``: ``steps`` Gaussian mechanisms with ``noise_multiplier`` (std over L2
        sensitivity), each on a Poisson sample of rate ``sampling_rate``. ``"zcdp"``: ``steps``
        mechanisms each ``(xi, rho)``-zCDP (Bun and Steinke, TCC 2016), e.g. a sum of discrete
        Gaussians.
    noise_multiplier, sampling_rate, steps:
        As above (``sampling_rate`` 1 means no sampling).
    rho, xi:
        zCDP parameters of one step (``kind == "zcdp"`` only).
    """

    kind: Literal["gaussian", "zcdp"]
    noise_multiplier: float = 0.0
    sampling_rate: float = 1.0
    steps: int = 1
    rho: float = 0.0
    xi: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("gaussian", "zcdp"):
            raise PrivacyError(
                f"privacy event kind must be 'gaussian' or 'zcdp'; found {self.kind!r}"
            )
        if int(self.steps) != self.steps or self.steps < 0:
            raise PrivacyError(
                f"privacy event steps must be a whole number >= 0; found {self.steps}"
            )
        if not 0.0 <= self.sampling_rate <= 1.0:
            raise PrivacyError(
                f"privacy event sampling_rate must be in [0, 1]; found {self.sampling_rate}"
            )
        if self.kind == "gaussian" and not (
            math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0
        ):
            raise PrivacyError(
                f"a Gaussian privacy event needs a noise multiplier > 0; found"
                f" {self.noise_multiplier}",
                hint="noise multiplier 0 means no privacy: run without DP instead",
            )
        if self.kind == "zcdp" and not (
            math.isfinite(self.rho) and self.rho >= 0 and math.isfinite(self.xi) and self.xi >= 0
        ):
            raise PrivacyError(f"zCDP event needs rho, xi >= 0; found {self.rho}, {self.xi}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ledger stores it)."""
        return {
            "kind": self.kind,
            "noise_multiplier": self.noise_multiplier,
            "sampling_rate": self.sampling_rate,
            "steps": self.steps,
            "rho": self.rho,
            "xi": self.xi,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrivacyEvent:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                kind=d["kind"],
                noise_multiplier=float(d.get("noise_multiplier", 0.0)),
                sampling_rate=float(d.get("sampling_rate", 1.0)),
                steps=int(d.get("steps", 1)),
                rho=float(d.get("rho", 0.0)),
                xi=float(d.get("xi", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PrivacyError(f"malformed privacy event {dict(d)!r}: {exc}") from None


@dataclass(frozen=True)
class Budget:
    """A participant's total ``(epsilon, delta)`` budget over everything it ever releases.

    ``epsilon = inf`` tracks spending in the ledger without limiting it.
    """

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if math.isnan(self.epsilon) or self.epsilon <= 0:
            raise PrivacyError(
                f"privacy budget epsilon must be a number > 0; found {self.epsilon}",
                hint="set --participant-epsilon (e.g. 8)",
            )
        if not 0.0 < self.delta < 1.0:
            raise PrivacyError(
                f"privacy budget delta must be in (0, 1); found {self.delta}",
                hint="use a delta well below 1 / (number of records), e.g. 1e-5",
            )


@dataclass(frozen=True)
class LedgerEntry:
    """One charged release in a participant's privacy ledger.

    Attributes
    ----------
    federation, round:
        Which federation and round the release answered.
    mode:
        One of :data:`MODES`.
    event:
        What was run, for the accountant to compose.
    epsilon_round:
        The epsilon of this release alone (at ``delta``).
    epsilon_total:
        The participant's composed epsilon over all its entries after this one.
    delta:
        The delta both epsilons are stated at (the participant's budget delta).
    at:
        When it was recorded (UTC; set by the ledger).
    """

    federation: str
    round: int
    mode: str
    event: PrivacyEvent
    epsilon_round: float
    epsilon_total: float
    delta: float
    at: datetime | None = None


@dataclass(frozen=True)
class DPTaskSpec:
    """The ``dp`` section of a training task's config.

    Attributes
    ----------
    mode:
        One of :data:`MODES`.
    clip:
        L2 clipping norm: per example (``record``) or per participant update (client modes).
    noise_multiplier:
        Noise std over ``clip``; ``None`` (record mode only) lets each participant calibrate
        its own from ``target_epsilon`` over ``rounds`` with its own accountant.
    target_epsilon, delta:
        The guarantee the federation aims at (informative; each participant checks its own
        budget).
    rounds:
        Rounds planned (for calibration).
    min_participants:
        ``client-distributed``: the fewest honest participants whose noise shares reach the sum.
    federation:
        Name under which participants' ledgers charge the release.
    class_balance:
        ``record``: exponent of class-balanced Poisson sampling for a classifier with balanced
        class weights (:func:`class_inclusion_rates`; 1 fully balanced, 0 uniform).
    """

    mode: Mode
    clip: float
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    rounds: int = 1
    min_participants: int = 1
    federation: str = "default"
    class_balance: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DPTaskSpec | None:
        """The spec in a task config's ``dp`` key, ``None`` when the task asks for no DP."""
        raw = config.get("dp")
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise PrivacyError(f"task config 'dp' must be a mapping; found {type(raw).__name__}")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        try:
            mode = str(raw["mode"])
            if mode not in MODES:
                raise PrivacyError(
                    f"task config dp.mode must be one of {', '.join(MODES)}; found {mode!r}"
                )
            z = raw.get("noise_multiplier")
            spec = cls(
                mode=mode,
                clip=float(raw["clip"]),
                noise_multiplier=None if z is None else float(z),
                target_epsilon=(
                    None if raw.get("target_epsilon") is None else float(raw["target_epsilon"])
                ),
                delta=float(raw.get("delta", 1e-5)),
                rounds=int(raw.get("rounds", 1)),
                min_participants=int(raw.get("min_participants", 1)),
                federation=str(raw.get("federation", "default")),
                class_balance=float(raw.get("class_balance", 0.0)),
                extra={k: v for k, v in raw.items() if k not in known},
            )
        except KeyError as exc:
            raise PrivacyError(f"task config dp lacks the key {exc}") from None
        except (TypeError, ValueError) as exc:
            raise PrivacyError(f"task config dp has a malformed value: {exc}") from None
        spec.check()
        return spec

    def check(self) -> None:
        """Raise :class:`PrivacyError` on values out of range."""
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise PrivacyError(f"dp.clip must be > 0; found {self.clip}")
        if self.noise_multiplier is None:
            if self.mode != "record" or self.target_epsilon is None:
                raise PrivacyError(
                    f"dp mode {self.mode!r} needs a noise_multiplier"
                    + (" or a target_epsilon" if self.mode == "record" else ""),
                )
        elif not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise PrivacyError(f"dp.noise_multiplier must be > 0; found {self.noise_multiplier}")
        if not (math.isfinite(self.class_balance) and 0.0 <= self.class_balance <= 1.0):
            raise PrivacyError(f"dp.class_balance must be in [0, 1]; found {self.class_balance}")
        if not 0.0 < self.delta < 1.0:
            raise PrivacyError(f"dp.delta must be in (0, 1); found {self.delta}")
        if self.rounds < 1 or self.min_participants < 1:
            raise PrivacyError(
                f"dp.rounds and dp.min_participants must be >= 1; found {self.rounds},"
                f" {self.min_participants}"
            )


def record_schedule(num_examples: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """Poisson rate and step count of one round of DP-SGD.

    Each step samples every example independently with ``q = min(1, batch_size / n)``; an epoch
    is ``ceil(1 / q)`` steps, so an example is seen once per epoch in expectation.

    Returns
    -------
    tuple
        ``(q, steps)`` for ``epochs`` epochs.
    """
    if num_examples < 1:
        raise PrivacyError(f"DP-SGD needs at least one local example; found {num_examples}")
    if batch_size < 1 or epochs < 0:
        raise PrivacyError(
            f"DP-SGD batch_size must be >= 1 and epochs >= 0; found {batch_size}, {epochs}"
        )
    q = min(1.0, batch_size / num_examples)
    return q, int(epochs * math.ceil(1.0 / q))


def class_inclusion_rates(
    counts: NDArray[np.int64],
    sampling_rate: float,
    *,
    weight_bounds: tuple[float, float] = (0.1, 10.0),
    balance: float = 1.0,
) -> NDArray[np.float64]:
    """Per-class Poisson inclusion rates of class-balanced DP-SGD, never above ``sampling_rate``.

    Class ``c`` with ``n_c`` local examples (of ``n``, ``K`` classes present) gets the
    "balanced" weight ``w_c = clip(n / (K n_c), *weight_bounds) ** balance`` and the rate
    ``q_c = sampling_rate * w_c / max_c w_c``: the rarest class is sampled at the full,
    accounted rate and commoner classes less often, so the expected sum of clipped gradients
    follows the class-balanced loss without any example's gradient being scaled up (scaling
    rare examples' losses is undone by per-example clipping). Every rate is at most
    ``sampling_rate``; since the sampled Gaussian mechanism's RDP bound grows with the
    inclusion probability of the one record that differs (Mironov, Talwar and Zhang, "Rényi
    Differential Privacy of the Sampled Gaussian Mechanism", 2019, Section 3), charging
    ``sampling_rate`` covers every record whatever its class.

    Parameters
    ----------
    counts:
        Local examples per class (length ``n_classes``; an absent class gets rate 0).
    sampling_rate:
        The accounted rate ``q`` (from :func:`record_schedule`).
    weight_bounds:
        Bounds of the balanced weights (the classifier's own ``CLASS_WEIGHT_CLIP``).
    balance:
        Exponent in ``[0, 1]``: 0 samples uniformly at ``q``, 1 fully balances (within the
        bounds).

    Returns
    -------
    numpy.ndarray
        ``float64`` rates, one per class, in ``[0, sampling_rate]``.

    Raises
    ------
    PrivacyError
        On negative counts, a rate outside ``(0, 1]``, bad bounds or a ``balance`` outside
        ``[0, 1]``.
    """
    arr = np.asarray(counts, dtype=np.int64)
    if arr.ndim != 1 or arr.size == 0 or (arr < 0).any():
        raise PrivacyError(
            f"class counts must be a non-empty 1-d array of counts >= 0; found {arr.tolist()}"
        )
    if not (math.isfinite(sampling_rate) and 0.0 < sampling_rate <= 1.0):
        raise PrivacyError(f"sampling rate must be in (0, 1]; found {sampling_rate}")
    lo, hi = weight_bounds
    if not (0.0 < lo <= hi and math.isfinite(hi)):
        raise PrivacyError(f"weight bounds must satisfy 0 < low <= high; found {weight_bounds}")
    if not (math.isfinite(balance) and 0.0 <= balance <= 1.0):
        raise PrivacyError(f"class balance exponent must be in [0, 1]; found {balance}")
    rates = np.zeros(arr.size, dtype=np.float64)
    present = arr > 0
    if not present.any():
        return rates
    weights = np.clip(arr.sum() / (present.sum() * arr[present]), lo, hi) ** balance
    rates[present] = np.minimum(sampling_rate * weights / weights.max(), sampling_rate)
    return rates


def record_event(spec: DPTaskSpec, num_examples: int, batch_size: int, epochs: int) -> PrivacyEvent:
    """The event one round of record-level DP-SGD costs a participant holding ``num_examples``."""
    if spec.noise_multiplier is None:
        raise PrivacyError("record-level event needs a noise multiplier (calibrate it first)")
    q, steps = record_schedule(num_examples, batch_size, epochs)
    return PrivacyEvent("gaussian", spec.noise_multiplier, sampling_rate=q, steps=steps)


def client_event(spec: DPTaskSpec) -> PrivacyEvent:
    """The event one round of client-level DP-FedAvg costs one participant (central noise).

    No amplification by sampling is claimed: the participant knows it was chosen.
    """
    if spec.noise_multiplier is None:
        raise PrivacyError("client-level DP needs dp.noise_multiplier")
    return PrivacyEvent("gaussian", spec.noise_multiplier, sampling_rate=1.0, steps=1)
