"""Differential privacy: clipping, noise, DP-FedAvg, distributed noise shares, budgets.

Pure (stdlib and numpy); accounting with ``dp_accounting`` lives behind the
:class:`~phalanx.ports.Accountant` port in ``phalanx.adapters.accounting``. See
``docs/privacy.md`` for the modes, their guarantees and their costs.
"""

from phalanx.core.privacy.central import CLIP_CONFIG_KEY, UNCLIPPED_METRIC, DPFedAvg
from phalanx.core.privacy.clipping import AdaptiveClip, clip_update, l2_norm
from phalanx.core.privacy.distributed import (
    DistributedNoise,
    add_noise_share,
    ddgauss_rho,
    distributed_event,
    integer_sensitivity,
    local_sigma,
)
from phalanx.core.privacy.noise import (
    SeededNoiseWarning,
    discrete_gaussian,
    gaussian_noise,
    noise_generator,
    secure_generator,
)
from phalanx.core.privacy.spec import (
    MODES,
    Budget,
    DPTaskSpec,
    LedgerEntry,
    PrivacyEvent,
    client_event,
    record_event,
    record_schedule,
)

__all__ = [
    "CLIP_CONFIG_KEY",
    "MODES",
    "UNCLIPPED_METRIC",
    "AdaptiveClip",
    "Budget",
    "DPFedAvg",
    "DPTaskSpec",
    "DistributedNoise",
    "LedgerEntry",
    "PrivacyEvent",
    "SeededNoiseWarning",
    "add_noise_share",
    "client_event",
    "clip_update",
    "ddgauss_rho",
    "discrete_gaussian",
    "distributed_event",
    "gaussian_noise",
    "integer_sensitivity",
    "l2_norm",
    "local_sigma",
    "noise_generator",
    "record_event",
    "record_schedule",
    "secure_generator",
]
