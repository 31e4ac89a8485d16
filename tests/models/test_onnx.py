"""ONNX export of the scoring graph, checked against onnxruntime on real flows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.stats import compute_stats
from phalanx.core.features.transform import FeatureTransform
from phalanx.data.readers import read_flows
from phalanx.data.synthetic import generate_federation
from phalanx.models import AutoencoderDetector, MLPClassifier
from phalanx.models.onnx import export_onnx
from phalanx.services.participant import category_indices

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained() -> tuple[FeatureTransform, MLPClassifier, AutoencoderDetector]:
    data = FlowBatch.concat(generate_federation(2, 3000, seed=5))
    transform = FeatureTransform.fit(compute_stats(data))
    x = transform.transform(data)
    mlp = MLPClassifier(transform.n_features, hidden=(32, 16), epochs=2, seed=1)
    mlp.fit(x, category_indices(data))
    ae = AutoencoderDetector(transform.n_features, hidden=(16, 4), epochs=2, seed=1)
    ae.fit(x, category_indices(data))
    return transform, mlp, ae


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # two shared cores; and no thread pool left behind
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check(model: MLPClassifier | AutoencoderDetector, path: Path, x: np.ndarray) -> None:
    outputs = _session(path).run(None, {"features": x})
    if isinstance(model, MLPClassifier):
        np.testing.assert_allclose(outputs[0], model.attack_score(x), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(outputs[1], model.predict_proba(x), atol=1e-5, rtol=1e-5)
    else:
        np.testing.assert_allclose(outputs[0], model.score(x), atol=1e-5, rtol=1e-5)


def test_exported_classifier_matches_torch(
    trained: tuple[FeatureTransform, MLPClassifier, AutoencoderDetector], tmp_path: Path
) -> None:
    transform, mlp, _ = trained
    path = export_onnx(mlp, tmp_path / "mlp.onnx", {"phalanx.schema_hash": transform.schema_hash})
    x = transform.transform(generate_federation(1, 500, seed=9)[0])
    _check(mlp, path, x)
    _check(mlp, path, x[:1])  # the batch dimension is dynamic
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["phalanx.schema_hash"] == transform.schema_hash
    assert [o.name for o in proto.graph.output] == ["score", "proba"]


def test_exported_autoencoder_matches_torch(
    trained: tuple[FeatureTransform, MLPClassifier, AutoencoderDetector], tmp_path: Path
) -> None:
    transform, _, ae = trained
    path = export_onnx(ae, tmp_path / "ae.onnx", {"thresholds": {"default": 0.1}})
    _check(ae, path, transform.transform(generate_federation(1, 300, seed=8)[0]))
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["thresholds"]) == {"default": 0.1}


@pytest.mark.datasets
@pytest.mark.parametrize(
    "name", ["pcaps/zeek/wikipedia.pcap", "zeek-logs/trickbot-2018-11-09/conn.log.gz"]
)
def test_onnx_on_real_flows(
    trained: tuple[FeatureTransform, MLPClassifier, AutoencoderDetector],
    tmp_path: Path,
    datasets: Path,
    name: str,
) -> None:
    transform, mlp, ae = trained
    x = transform.transform(read_flows(datasets / name)[0])
    _check(mlp, export_onnx(mlp, tmp_path / "mlp.onnx"), x)
    _check(ae, export_onnx(ae, tmp_path / "ae.onnx"), x)
