"""Torch detection models with estimator-style trainers, local training and bundles.

The only package where torch tensors and numpy arrays meet; everything it hands out is numpy.
"""

from phalanx.models.autoencoder import AutoencoderDetector
from phalanx.models.bundle import load_model, save_model
from phalanx.models.federated import SCAFFOLD_STATE_KEY, LocalResult, build_model, local_train
from phalanx.models.hybrid import HybridDetector
from phalanx.models.mlp import MLPClassifier

__all__ = [
    "SCAFFOLD_STATE_KEY",
    "AutoencoderDetector",
    "HybridDetector",
    "LocalResult",
    "MLPClassifier",
    "build_model",
    "load_model",
    "local_train",
    "save_model",
]
