"""Federation-side DP planning: the ``dp`` section of training tasks and the stated guarantee.

The simulation and the CLI compose these with the accountant adapter they pick; the
participant-side enforcement is :class:`phalanx.services.privacy.PrivacyGuard`.
"""

from __future__ import annotations

from typing import Any

from phalanx.core.errors import PrivacyError
from phalanx.core.privacy.distributed import rounding_headroom
from phalanx.core.privacy.spec import DPTaskSpec, PrivacyEvent, record_event
from phalanx.ports import Accountant
from phalanx.services.privacy import DEFAULT_BATCH_SIZE


def federation_guarantee(
    accountant: Accountant,
    spec: DPTaskSpec,
    *,
    rounds: int,
    sampling_rate: float,
    num_examples: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    local_epochs: int = 1,
) -> dict[str, Any]:
    """The guarantee a federation run states in its report and model bundle.

    Client modes: ``rounds`` Gaussian releases, each on a sample of participants drawn at
    ``sampling_rate`` (amplification stated under the Poisson-sampling approximation, as in
    McMahan et al., 2018; at rate 1 it is exact). Record mode: the DP-SGD cost of a participant
    holding ``num_examples`` rows taking part in every round.
    """
    if spec.noise_multiplier is None:
        raise PrivacyError("the guarantee needs the noise multiplier used")
    if spec.mode == "record":
        if num_examples is None:
            raise PrivacyError("record-level guarantee needs the participant's num_examples")
        event = record_event(spec, num_examples, batch_size, local_epochs)
        events = [event] * rounds
        unit = "record"
    else:
        events = [PrivacyEvent("gaussian", spec.noise_multiplier, sampling_rate, steps=1)] * rounds
        unit = "participant (all of an organization's data)"
    return {
        "mechanism": {
            "record": "DP-SGD (Abadi et al. 2016), Poisson sampling, Gaussian noise",
            "client-central": "DP-FedAvg (McMahan et al. 2018), Gaussian noise at the coordinator",
            "client-distributed": "distributed discrete Gaussian (Kairouz et al. 2021)",
        }[spec.mode],
        "mode": spec.mode,
        "unit": unit,
        "epsilon": accountant.epsilon(events, spec.delta),
        "delta": spec.delta,
        "rounds": rounds,
        "sampling_rate": sampling_rate if spec.mode != "record" else events[0].sampling_rate,
        "noise_multiplier": spec.noise_multiplier,
        "clip": spec.clip,
        "accountant": accountant.name,
    }


def plan_dp(
    mode: str,
    *,
    accountant: Accountant,
    clip: float,
    noise_multiplier: float | None,
    epsilon: float | None,
    delta: float,
    rounds: int,
    fraction: float,
    min_participants: int = 1,
    federation: str = "default",
    class_balance: float = 0.0,
) -> DPTaskSpec | None:
    """The ``dp`` section a federation sends with its training tasks (``None`` for mode 'none').

    Record mode with only ``epsilon`` leaves the noise multiplier to each participant's own
    calibration. Client modes with only ``epsilon`` calibrate it here for ``rounds`` releases
    at participant sampling rate ``fraction``. ``class_balance`` is record mode's
    class-balanced sampling exponent (:attr:`DPTaskSpec.class_balance`).
    """
    if mode == "none":
        return None
    if noise_multiplier is None and epsilon is None:
        raise PrivacyError(
            f"--dp {mode} needs --epsilon or --noise-multiplier",
            hint="e.g. --epsilon 8 --delta 1e-5",
        )
    z = noise_multiplier
    if z is None and mode != "record" and epsilon is not None:
        z = accountant.noise_multiplier(
            epsilon=epsilon, delta=delta, sampling_rate=fraction, steps=rounds
        )
        if mode == "client-distributed":
            z *= rounding_headroom()
    spec = DPTaskSpec(
        mode=mode,  # type: ignore[arg-type]
        clip=clip,
        noise_multiplier=z,
        target_epsilon=epsilon,
        delta=delta,
        rounds=rounds,
        min_participants=min_participants,
        federation=federation,
        class_balance=class_balance,
    )
    spec.check()
    return spec


def task_section(spec: DPTaskSpec | None) -> dict[str, Any]:
    """``{"dp": {...}}`` for a training task config, ``{}`` without DP."""
    if spec is None:
        return {}
    raw: dict[str, Any] = {
        "mode": spec.mode,
        "clip": spec.clip,
        "delta": spec.delta,
        "rounds": spec.rounds,
        "min_participants": spec.min_participants,
        "federation": spec.federation,
    }
    if spec.mode == "record":
        raw["class_balance"] = spec.class_balance
    if spec.noise_multiplier is not None:
        raw["noise_multiplier"] = spec.noise_multiplier
    if spec.target_epsilon is not None:
        raw["target_epsilon"] = spec.target_epsilon
    return {"dp": raw}
