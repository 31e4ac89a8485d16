"""The differential-privacy wiring of ``phalanx simulate``.

Turns the run's DP settings into the training tasks' DP parameters (:func:`dp_spec`), refuses
modes that do not compose with secure aggregation, wraps the server algorithm in central
DP-FedAvg (Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping";
McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models") and states the
run's guarantee from the participants' own ledgers.
"""

from __future__ import annotations

import math
from typing import Any

from phalanx.adapters.accounting import RdpAccountant
from phalanx.adapters.store.ledger import SqliteLedger
from phalanx.core.aggregation import ServerAlgorithm
from phalanx.core.errors import ConfigError
from phalanx.core.privacy import AdaptiveClip, DPFedAvg, DPTaskSpec
from phalanx.core.types import ParticipantId
from phalanx.services import privacy as dp
from phalanx.services.privacy_plan import federation_guarantee, plan_dp
from phalanx.sim.config import SimConfig
from phalanx.sim.data import SimData


def dp_spec(cfg: SimConfig) -> DPTaskSpec | None:
    """The DP parameters of the run's training tasks (``None`` without ``--dp``)."""
    return plan_dp(
        cfg.dp,
        accountant=RdpAccountant(),
        clip=cfg.clip,
        noise_multiplier=cfg.noise_multiplier,
        epsilon=cfg.epsilon,
        delta=cfg.delta,
        rounds=cfg.rounds,
        fraction=cfg.fraction,
        min_participants=dp_shares(cfg),
        federation="simulation",
        class_balance=cfg.dp_class_balance,
    )


def dp_shares(cfg: SimConfig) -> int:
    """Noise shares in one secure sum (client-distributed): the smallest bucket's members."""
    expected = max(1, math.ceil(cfg.fraction * cfg.participants))
    return min(expected, cfg.secagg_bucket_size or expected)


def check_dp_composition(cfg: SimConfig) -> None:
    """Refuse DP modes that do not compose with the secure-aggregation setting."""
    if cfg.dp == "client-central" and cfg.secure_aggregation:
        raise ConfigError(
            "--dp client-central adds noise to individual updates the coordinator sees, but"
            " --secure-aggregation hides them",
            hint="use --dp client-distributed with secure aggregation",
        )
    if cfg.dp == "client-distributed":
        if not cfg.secure_aggregation:
            raise ConfigError(
                "--dp client-distributed needs --secure-aggregation (participants add noise"
                " shares to the masked sum)"
            )
        spec = dp_spec(cfg)
        z = spec.noise_multiplier if spec is not None else None
        headroom = cfg.clip + 10.0 * (z or 0.0) * math.hypot(cfg.clip, 1.0) / math.sqrt(
            dp_shares(cfg)
        )
        if headroom > cfg.secagg_clip:
            raise ConfigError(
                f"--secagg-clip {cfg.secagg_clip:g} leaves no room for the DP noise shares:"
                f" clip {cfg.clip:g} plus 10 noise standard deviations needs {headroom:.3g}",
                hint="raise --secagg-clip (the fixed-point range of secure aggregation)",
            )


def dp_algorithm(cfg: SimConfig, algorithm: ServerAlgorithm, n: int) -> ServerAlgorithm:
    """``algorithm`` wrapped in central DP-FedAvg for ``--dp client-central``."""
    spec = dp_spec(cfg)
    if spec is None or spec.mode != "client-central" or spec.noise_multiplier is None:
        return algorithm
    expected = max(1, min(n, math.ceil(cfg.fraction * n)))
    # sigma_b = m / 20 (Andrew et al.), at least 1.5 z so the count takes at most ~6 % more
    # noise from the update (Theorem 1: z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2)
    sigma_b = max(expected / 20, 1.5 * spec.noise_multiplier)
    adaptive = AdaptiveClip(cfg.clip, count_noise_std=sigma_b) if cfg.adaptive_clip else None
    return DPFedAvg(
        algorithm,
        clip_norm=cfg.clip,
        noise_multiplier=spec.noise_multiplier,
        expected_participants=expected,
        adaptive=adaptive,
    )


def privacy_summary(
    cfg: SimConfig, data: SimData, ledgers: dict[ParticipantId, SqliteLedger]
) -> dict[str, Any] | None:
    """The run's DP guarantee and what each participant's own ledger charged."""
    spec = dp_spec(cfg)
    if spec is None:
        return None
    accountant = RdpAccountant()
    spent = dp.ledger_summary(dict(ledgers), accountant, cfg.delta)
    for ledger in ledgers.values():
        ledger.close()
    if spec.mode != "client-central":
        # the weakest guarantee: the participant whose ledger charged the most
        worst = spent["max_epsilon_spent"]
        z = [p["noise_multiplier"] for p in spent["participants"].values() if p["noise_multiplier"]]
        guarantee: dict[str, Any] = {
            "mechanism": {
                "record": "DP-SGD (Abadi et al. 2016), Poisson sampling, Gaussian noise",
                "client-distributed": "distributed discrete Gaussian under secure aggregation"
                " (Kairouz et al. 2021)",
            }[spec.mode],
            "mode": spec.mode,
            "unit": "record" if spec.mode == "record" else "participant (all its data)",
            "epsilon": worst,
            "delta": cfg.delta,
            "rounds": cfg.rounds,
            "sampling_rate": None,
            "noise_multiplier": (min(z), max(z)) if z else None,
            "clip": cfg.clip,
            "accountant": accountant.name,
        }
    else:
        guarantee = federation_guarantee(
            accountant, spec, rounds=cfg.rounds, sampling_rate=cfg.fraction
        )
    guarantee["participant_budget"] = cfg.participant_epsilon or cfg.epsilon
    guarantee["adaptive_clip"] = cfg.adaptive_clip
    return {**guarantee, **spent}
