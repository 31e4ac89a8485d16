"""Federated aggregation over numpy weights: FedAvg, FedProx, SCAFFOLD, FedAvgM, FedAdam, FedYogi,
and the Byzantine-robust rules (median, trimmed mean, Krum, Multi-Krum, centered clipping, norm
bounding, FLTrust) with per-update suspicion scores.

See ``docs/algorithms.md`` and ``docs/robustness.md`` for each algorithm, its paper, its
parameters and when to use it.
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
from phalanx.core.aggregation.robust import (
    ROBUST_ALGORITHMS,
    CenteredClipping,
    CoordinateMedian,
    FLTrust,
    Krum,
    MultiKrum,
    NormBound,
    RootUpdate,
    TrimmedMean,
)
from phalanx.core.aggregation.suspicion import Report, score_updates

__all__ = [
    "ALGORITHMS",
    "ROBUST_ALGORITHMS",
    "CenteredClipping",
    "CoordinateMedian",
    "FLTrust",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "Krum",
    "MultiKrum",
    "NormBound",
    "Report",
    "RootUpdate",
    "Scaffold",
    "ServerAlgorithm",
    "TrimmedMean",
    "algorithm_params",
    "check_compatible",
    "make_algorithm",
    "score_updates",
    "weighted_mean",
]
