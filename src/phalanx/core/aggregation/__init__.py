"""Federated aggregation over numpy weights: FedAvg, FedProx, SCAFFOLD, FedAvgM, FedAdam, FedYogi.

See ``docs/algorithms.md`` for each algorithm, its paper, its parameters and when to use it.
"""

from phalanx.core.aggregation.algorithms import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Scaffold,
)
from phalanx.core.aggregation.base import ServerAlgorithm, check_compatible, weighted_mean
from phalanx.core.aggregation.factory import ALGORITHMS, algorithm_params, make_algorithm

__all__ = [
    "ALGORITHMS",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "Scaffold",
    "ServerAlgorithm",
    "algorithm_params",
    "check_compatible",
    "make_algorithm",
    "weighted_mean",
]
