"""Model bundles: a folder with ``model.safetensors`` (weights) and ``model.json`` (metadata).

Nothing is pickled and ``torch.load`` is never called: a bundle that crossed a trust boundary
can at worst be refused. ``model.json`` holds::

    {"format": "phalanx.model", "format_version": 1,
     "class": "MLPClassifier" | "AutoencoderDetector" | "HybridDetector",
     "params": {constructor parameters}, "fitted": {n_seen_, threshold_ ...},
     "layers": [weight names, in get_weights() order],
     "metadata": {caller's dict: schema hash, round, metrics ...}}

Both files are written to a temporary name and renamed, so a crash never leaves half a bundle
under the final names.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from phalanx.core.errors import ModelError
from phalanx.models.autoencoder import AutoencoderDetector
from phalanx.models.hybrid import HybridDetector
from phalanx.models.mlp import MLPClassifier

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
SIG_FILE = "model.sig"
"""Optional third file: the coordinator's Ed25519 signature (``adapters/pki/signing.py``)."""
FORMAT = "phalanx.model"
FORMAT_VERSION = 1

Model = MLPClassifier | AutoencoderDetector | HybridDetector
ModelClass = type[MLPClassifier] | type[AutoencoderDetector] | type[HybridDetector]
MODEL_CLASSES: dict[str, ModelClass] = {
    "MLPClassifier": MLPClassifier,
    "AutoencoderDetector": AutoencoderDetector,
    # both nets in one safetensors file, names prefixed "classifier." / "autoencoder.";
    # "fitted" holds both parts' state, the anomaly threshold t_a and t_c (models/hybrid.py)
    "HybridDetector": HybridDetector,
}


def save_model(path_dir: str | os.PathLike[str], model: Model, metadata: dict[str, Any]) -> Path:
    """Write ``model`` and ``metadata`` as a bundle in ``path_dir`` (created if needed).

    Parameters
    ----------
    path_dir:
        The bundle folder; existing bundle files in it are replaced.
    model:
        An initialized or fitted estimator.
    metadata:
        JSON-serializable facts to keep with the model (feature schema hash, round, metrics).

    Returns
    -------
    Path
        The bundle folder.

    Raises
    ------
    ModelError
        When the model has no weights or ``metadata`` is not JSON-serializable.
    """
    folder = Path(path_dir)
    names = model.layer_names()
    weights = model.get_weights()
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": type(model).__name__,
        "params": model.get_params(),
        "fitted": model.fitted_state(),
        "layers": names,
        "metadata": metadata,
    }
    try:
        text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ModelError(f"bundle metadata is not JSON-serializable: {err}") from err
    folder.mkdir(parents=True, exist_ok=True)
    tmp_weights = folder / f".{WEIGHTS_FILE}.tmp"
    tmp_meta = folder / f".{META_FILE}.tmp"
    save_file(dict(zip(names, weights, strict=True)), str(tmp_weights))
    tmp_meta.write_text(text + "\n", encoding="utf-8")
    (folder / SIG_FILE).unlink(missing_ok=True)  # a signature of the old files is void
    os.replace(tmp_weights, folder / WEIGHTS_FILE)
    os.replace(tmp_meta, folder / META_FILE)
    return folder


def load_model(path_dir: str | os.PathLike[str]) -> tuple[Model, dict[str, Any]]:
    """Rebuild the estimator saved by :func:`save_model`; return it with its metadata.

    Raises
    ------
    ModelError
        When a file is missing or garbled, the format or class is unknown, or the weights do
        not match the architecture the parameters describe. The message names the file.
    """
    folder = Path(path_dir)
    meta_path, weights_path = folder / META_FILE, folder / WEIGHTS_FILE
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise ModelError(
                f"{path}: model bundle file is missing",
                hint="a bundle folder holds model.json and model.safetensors from save_model",
            )
    doc = _read_meta(meta_path)
    cls = MODEL_CLASSES[doc["class"]]
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{weights_path}: not a readable safetensors file ({err})") from err
    try:
        model = cls(**_params(doc["params"]))
        model.check_params()
        expected = model.expected_layers()
    except (TypeError, ValueError, ModelError) as err:
        raise ModelError(f"{meta_path}: invalid model parameters: {err}") from err
    names = doc["layers"]
    found = [(n, tuple(tensors[n].shape)) for n in names if n in tensors]
    if sorted(tensors) != sorted(names) or found != expected:
        raise ModelError(
            f"{weights_path}: weights {found} do not match the layers {expected} that "
            f"{meta_path.name} describes",
            hint="model.json and model.safetensors come from different models",
        )
    model.initialize()
    try:
        model.set_weights([tensors[n] for n in names])
    except ModelError as err:
        raise ModelError(f"{weights_path}: {err}") from err
    fitted = doc.get("fitted", {})
    if not isinstance(fitted, dict):
        raise ModelError(f"{meta_path}: 'fitted' must be an object")
    model.load_fitted_state(fitted)
    metadata = doc.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ModelError(f"{meta_path}: 'metadata' must be an object")
    return model, metadata


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as err:
        raise ModelError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelError(f"{path}: not a Phalanx model description (format {FORMAT!r} expected)")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{path}: bundle format version {doc.get('format_version')!r}; this Phalanx reads "
            f"version {FORMAT_VERSION}",
            hint="re-export the model with a matching Phalanx version",
        )
    if doc.get("class") not in MODEL_CLASSES:
        raise ModelError(
            f"{path}: unknown model class {doc.get('class')!r}; expected one of "
            f"{', '.join(MODEL_CLASSES)}"
        )
    if not isinstance(doc.get("params"), dict) or not isinstance(doc.get("layers"), list):
        raise ModelError(f"{path}: 'params' must be an object and 'layers' a list")
    return doc


def _params(raw: dict[str, Any]) -> dict[str, Any]:
    params = dict(raw)
    for key in ("hidden", "ae_hidden"):
        if isinstance(params.get(key), list):
            params[key] = tuple(int(h) for h in params[key])
    return params


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-standard JSON constant {name}")


__all__ = ["load_model", "save_model"]


MAX_BUNDLE_BYTES = 512 * 1024 * 1024


def pack_bundle(path_dir: str | os.PathLike[str]) -> bytes:
    """The bundle in ``path_dir`` as one byte string (a zip of its files) for transfer.

    The signature file goes along when the bundle has one.
    """
    folder = Path(path_dir)
    buf = io.BytesIO()
    names = [META_FILE, WEIGHTS_FILE] + ([SIG_FILE] if (folder / SIG_FILE).is_file() else [])
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in names:
            try:
                zf.writestr(name, (folder / name).read_bytes())
            except OSError as err:
                raise ModelError(f"cannot read model bundle file {folder / name}: {err}") from err
    return buf.getvalue()


def unpack_bundle(blob: bytes, path_dir: str | os.PathLike[str]) -> Path:
    """Write a :func:`pack_bundle` byte string into ``path_dir`` and check it loads.

    Only the two bundle files (and optionally the signature) are accepted, each bounded in
    size; anything else is a :class:`ModelError` and nothing is written. The signature is not
    checked here: that needs the federation's trust root (``phalanx detect`` checks it).
    """
    if len(blob) > MAX_BUNDLE_BYTES:
        raise ModelError(f"model bundle of {len(blob)} bytes exceeds {MAX_BUNDLE_BYTES}")
    files: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            names = sorted(i.filename for i in zf.infolist())
            if names not in (
                sorted((META_FILE, WEIGHTS_FILE)),
                sorted((META_FILE, WEIGHTS_FILE, SIG_FILE)),
            ):
                raise ModelError(
                    f"model bundle holds {names}, expected exactly {META_FILE} and {WEIGHTS_FILE}"
                    f" (and optionally {SIG_FILE})"
                )
            for info in zf.infolist():
                if info.file_size > MAX_BUNDLE_BYTES:
                    raise ModelError(f"model bundle member {info.filename} is too large")
                files[info.filename] = zf.read(info)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ModelError(f"model bundle is not a valid archive: {err}") from err
    folder = Path(path_dir)
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / ".incoming"
    staging.mkdir(exist_ok=True)
    for name, data in files.items():
        (staging / name).write_bytes(data)
    try:
        load_model(staging)
        if SIG_FILE not in files:
            (folder / SIG_FILE).unlink(missing_ok=True)
        for name in files:
            os.replace(staging / name, folder / name)
    finally:
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    return folder


def resolve_bundle(path: str | os.PathLike[str]) -> Path:
    """The bundle folder ``path`` names: a bundle folder, or a run directory holding ``model/``.

    Raises
    ------
    ModelError
        When neither ``path/model.json`` nor ``path/model/model.json`` exists.
    """
    p = Path(path)
    for folder in (p, p / "model"):
        if (folder / META_FILE).is_file():
            return folder
    raise ModelError(
        f"{p}: no model bundle here (looked for {META_FILE} in it and in its model/ folder)",
        hint="pass a bundle folder, a run directory of `phalanx simulate`, or a .zip from"
        " `phalanx model pull`",
    )


def bundle_digest(path_dir: str | os.PathLike[str]) -> str:
    """sha256 over the bundle's metadata and weights files: the model's identity."""

    h = hashlib.sha256()
    for name in (META_FILE, WEIGHTS_FILE):
        path = Path(path_dir) / name
        try:
            h.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError as err:
            raise ModelError(f"cannot read model bundle file {path}: {err}") from err
    return h.hexdigest()
