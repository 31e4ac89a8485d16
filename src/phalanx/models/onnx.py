"""Export a detector's scoring graph to ONNX (``phalanx export --onnx``).

The graph is :class:`~phalanx.models.explain.ScoringNet`: input ``features``, the transformed
float32 matrix ``(n, n_features)`` the model sees (the feature transform, with its hashing of
categorical values, stays in Phalanx: its parameters travel in the model's metadata), outputs
``score`` ``(n,)`` and, for the classifier, ``proba`` ``(n, n_classes)``. The model's metadata
(schema hash, feature names, thresholds, taxonomy, transform) is stored in the ONNX file's
``metadata_props`` so the file is self-describing. Exported with torch's dynamo-based exporter
(``torch.onnx.export(..., dynamo=True)``), opset 18, with a dynamic batch dimension; nothing is
fetched from the network.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from phalanx.core.errors import ModelError
from phalanx.models.explain import Model, ScoringNet
from phalanx.models.hybrid import HybridDetector

OPSET = 18
INPUT = "features"


def output_names(scorer: ScoringNet) -> list[str]:
    """``["score", "proba"]`` for the classifier, ``["score"]`` for the autoencoder."""
    return ["score", "proba"] if scorer.classifier else ["score"]


def export_onnx(
    model: Model | HybridDetector,
    path: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write the scoring graph of ``model`` to ``path`` (an ``.onnx`` file); return the path.

    Raises
    ------
    ModelError
        When the model has no network (or two: a hybrid) or torch cannot export it.
    """
    import onnx

    scorer = ScoringNet(model).eval()
    example = torch.zeros((2, model.n_features), dtype=torch.float32)
    batch = torch.export.Dim("batch")
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed" notes are noise here
    try:
        with warnings.catch_warnings():
            # torch's own exporter trips a DeprecationWarning of torch.utils._pytree in 2.13.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                scorer,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT],
                output_names=output_names(scorer),
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
    except Exception as err:  # torch raises many unrelated types from the exporter
        raise ModelError(f"ONNX export of {type(model).__name__} failed: {err}") from err
    finally:
        quiet.setLevel(level)
    if program is None:
        raise ModelError("ONNX export returned no program")
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key = str(key)
        entry.value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(out))
    return out
