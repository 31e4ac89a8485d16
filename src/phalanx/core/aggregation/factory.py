"""Build a server algorithm from its name and parameters (configuration files, CLI)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from phalanx.core.aggregation.algorithms import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Scaffold,
)
from phalanx.core.aggregation.base import ServerAlgorithm
from phalanx.core.aggregation.robust import ROBUST_ALGORITHMS
from phalanx.core.errors import ConfigError

ALGORITHMS: dict[str, Callable[..., ServerAlgorithm]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "scaffold": Scaffold,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    **ROBUST_ALGORITHMS,
}
"""Algorithm names accepted by :func:`make_algorithm`, in documentation order."""


def algorithm_params(name: str) -> dict[str, float]:
    """The parameters ``name`` accepts, with their defaults.

    Raises
    ------
    ConfigError
        When ``name`` is not a known algorithm.
    """
    factory = _lookup(name)
    return {
        p.name: p.default
        for p in inspect.signature(factory).parameters.values()
        if p.default is not inspect.Parameter.empty
    }


def make_algorithm(name: str, **params: float) -> ServerAlgorithm:
    """Create the server algorithm called ``name`` with ``params``.

    Parameters
    ----------
    name:
        One of ``fedavg``, ``fedprox``, ``scaffold``, ``fedavgm``, ``fedadam``, ``fedyogi``
        (case-insensitive).
    **params:
        The algorithm's parameters (see :func:`algorithm_params` and ``docs/algorithms.md``).

    Raises
    ------
    ConfigError
        On an unknown name, an unknown parameter, or a value out of range; the message lists
        what is valid.
    """
    factory = _lookup(name)
    valid = algorithm_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        accepted = ", ".join(f"{k} (default {v})" for k, v in valid.items()) or "none"
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for aggregation algorithm "
            f"{name.lower()!r}; it accepts: {accepted}"
        )
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                f"parameter {key} of {name.lower()!r} must be a number; found {value!r}"
            )
    return factory(**params)


def _lookup(name: str) -> Callable[..., ServerAlgorithm]:
    factory = ALGORITHMS.get(name.strip().lower()) if isinstance(name, str) else None
    if factory is None:
        raise ConfigError(
            f"unknown aggregation algorithm {name!r}; expected one of: {', '.join(ALGORITHMS)}"
        )
    return factory
