"""Model bundles: safetensors + JSON, bit-identical roundtrip, refusal of bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from phalanx.core.errors import ModelError
from phalanx.models import AutoencoderDetector, MLPClassifier, load_model, save_model

torch.set_num_threads(1)


@pytest.fixture
def data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal((120, 8)).astype(np.float32), rng.integers(0, 4, 120)


@pytest.fixture
def saved(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> Path:
    X, y = data
    m = MLPClassifier(8, n_classes=4, hidden=(16, 8)).fit(X, y)
    return save_model(tmp_path / "bundle", m, {"schema_hash": "abc", "round": 3})


def test_mlp_roundtrip_is_bit_identical(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    m = MLPClassifier(8, n_classes=4, hidden=(16, 8), seed=4, lr=0.01).fit(X, y)
    folder = save_model(tmp_path / "m", m, {"schema_hash": "abc"})
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    loaded, meta = load_model(folder)
    assert isinstance(loaded, MLPClassifier)
    assert meta == {"schema_hash": "abc"}
    assert loaded.get_params() == m.get_params()
    assert loaded.n_seen_ == 120
    np.testing.assert_array_equal(loaded.predict_proba(X), m.predict_proba(X))


def test_autoencoder_roundtrip_keeps_the_threshold(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    X = rng.standard_normal((200, 8)).astype(np.float32)
    ae = AutoencoderDetector(8, hidden=(6, 3), target_fpr=0.1).fit(X).calibrate(X)
    loaded, _ = load_model(save_model(tmp_path, ae, {}))
    assert isinstance(loaded, AutoencoderDetector)
    assert loaded.threshold_ == ae.threshold_
    assert loaded.hidden == (6, 3)
    np.testing.assert_array_equal(loaded.score(X), ae.score(X))
    np.testing.assert_array_equal(loaded.predict(X), ae.predict(X))


def test_missing_files(saved: Path) -> None:
    (saved / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"model.safetensors: model bundle file is missing"):
        load_model(saved)


def test_garbled_weights(saved: Path) -> None:
    path = saved / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[:8] = b"\xff" * 8
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_model(saved)
    path.write_bytes(b"")
    with pytest.raises(ModelError, match=r"model\.safetensors"):
        load_model(saved)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: "{not json", "not valid JSON"),
        (lambda d: json.dumps({**d, "format": "pickle"}), "not a Phalanx model"),
        (lambda d: json.dumps({**d, "format_version": 9}), "format version 9"),
        (lambda d: json.dumps({**d, "class": "os.system"}), "unknown model class"),
        (lambda d: json.dumps({**d, "params": {**d["params"], "hidden": [16, 9]}}), "do not match"),
        (lambda d: json.dumps({**d, "params": {**d["params"], "n_features": 9}}), "do not match"),
        (
            lambda d: json.dumps({**d, "params": {**d["params"], "bogus": 1}}),
            "invalid model parameters",
        ),
    ],
)
def test_garbled_or_mismatched_metadata(saved: Path, edit: object, match: str) -> None:
    meta = saved / "model.json"
    doc = json.loads(meta.read_text())
    meta.write_text(edit(doc))  # type: ignore[operator]
    with pytest.raises(ModelError, match=match):
        load_model(saved)


def test_unserializable_metadata_is_refused(tmp_path: Path) -> None:
    m = MLPClassifier(4, n_classes=2, hidden=(3,)).initialize()
    with pytest.raises(ModelError, match="JSON"):
        save_model(tmp_path, m, {"when": object()})
    with pytest.raises(ModelError, match="no weights yet"):
        save_model(tmp_path, MLPClassifier(4), {})


# --- signatures travel with the bundle; run directories resolve ---------------------------------


def test_signature_travels_and_a_rewrite_voids_it(saved: Path, tmp_path: Path) -> None:
    from phalanx.adapters.pki import Signer, check_signature, sign_bundle
    from phalanx.models.bundle import SIG_FILE, pack_bundle, unpack_bundle

    sign_bundle(saved, Signer.throwaway())
    assert (saved / SIG_FILE).is_file()
    copy = unpack_bundle(pack_bundle(saved), tmp_path / "copy")
    assert (copy / SIG_FILE).read_bytes() == (saved / SIG_FILE).read_bytes()
    assert check_signature(copy, None).state == "unverified"  # intact after transfer
    model, meta = load_model(copy)
    save_model(copy, model, meta)  # new files: the old signature no longer applies
    assert not (copy / SIG_FILE).exists()
    unsigned = unpack_bundle(pack_bundle(copy), tmp_path / "copy2")
    assert not (unsigned / SIG_FILE).exists()


def test_unpack_refuses_extra_members(saved: Path) -> None:
    import io
    import zipfile

    from phalanx.models.bundle import pack_bundle, unpack_bundle

    buf = io.BytesIO(pack_bundle(saved))
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr("evil.py", "print('x')")
    with pytest.raises(ModelError, match=r"optionally model\.sig"):
        unpack_bundle(buf.getvalue(), saved.parent / "x")


def test_resolve_bundle_accepts_run_directories(saved: Path, tmp_path: Path) -> None:
    from phalanx.models.bundle import bundle_digest, resolve_bundle

    assert resolve_bundle(saved) == saved
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    for name in ("model.json", "model.safetensors"):
        (run / "model" / name).write_bytes((saved / name).read_bytes())
    assert resolve_bundle(run) == run / "model"
    assert bundle_digest(run / "model") == bundle_digest(saved)
    with pytest.raises(ModelError, match="no model bundle here"):
        resolve_bundle(tmp_path / "empty")
