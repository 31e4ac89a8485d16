"""Round checkpoints: bit-identical round trips, damage detected, atomic writes, keep-last-K."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from phalanx.adapters.pki import files as files_mod
from phalanx.adapters.store import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def _arrays(rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    return {
        "weights": [
            rng.standard_normal((4, 3)).astype(np.float32),
            rng.standard_normal(3).astype(np.float32),
            np.array(np.float64(np.pi)),
        ],
        "algo:momentum": [rng.standard_normal(5), np.arange(6, dtype=np.int64).reshape(2, 3)],
        "algo/nested": [np.array([True, False])],
        "empty": [],
    }


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_round_trip_is_bit_identical(tmp_path: Path) -> None:
    arrays = _arrays(np.random.default_rng(0))
    arrays["weights"][0][0, 0] = np.float32(np.nan)
    meta = {"round": 12, "schema_hash": "ab" * 32, "rng": {"state": 2**127 + 3}}
    path, digest = save_checkpoint(tmp_path, 12, arrays, meta)
    assert path.name == "round-000012.safetensors"
    rnd, back, meta_back = load_checkpoint(path, sha256=digest)
    assert rnd == 12
    assert meta_back == meta
    assert back.keys() == arrays.keys()
    for group, values in arrays.items():
        assert len(back[group]) == len(values)
        assert all(_same(a, b) for a, b in zip(values, back[group], strict=True))


@settings(max_examples=25, deadline=None)
@given(
    arr=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int32, np.uint8, np.float16]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
    )
)
def test_any_array_round_trips(tmp_path_factory: pytest.TempPathFactory, arr: np.ndarray) -> None:
    d = tmp_path_factory.mktemp("h")
    path, digest = save_checkpoint(d, 1, {"w": [arr]}, {})
    _, back, _ = load_checkpoint(path, sha256=digest)
    assert _same(arr, back["w"][0])


def test_truncated_checkpoint_is_detected(tmp_path: Path) -> None:
    path, digest = save_checkpoint(tmp_path, 3, _arrays(np.random.default_rng(1)), {"a": 1})
    data = path.read_bytes()
    for cut in (0, 5, 100, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=str(path.name)):
            load_checkpoint(path)
        with pytest.raises(CheckpointError, match="sha256"):
            load_checkpoint(path, sha256=digest)


def test_flipped_byte_is_detected_without_external_digest(tmp_path: Path) -> None:
    path, _ = save_checkpoint(tmp_path, 3, {"w": [np.zeros(64, np.float32)]}, {})
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its digest"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    other = tmp_path / "round-000001.safetensors"
    save_file({"x": np.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not a Phalanx checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_atomic_write_leaves_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, 1, {"w": [np.ones(3)]}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000001.safetensors"]

    def broken_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files_mod.os, "replace", broken_replace)
    with pytest.raises(CheckpointError, match="No space left"):
        save_checkpoint(tmp_path, 2, {"w": [np.ones(3)]}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000001.safetensors"]


def test_keep_last_k_and_latest(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "none") is None
    for r in (1, 2, 3, 4, 5, 10):
        save_checkpoint(tmp_path, r, {"w": [np.full(2, r)]}, {"r": r}, keep=3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "round-000004.safetensors",
        "round-000005.safetensors",
        "round-000010.safetensors",
    ]
    latest = latest_checkpoint(tmp_path)
    assert latest is not None
    assert load_checkpoint(latest)[0] == 10
    save_checkpoint(tmp_path, 1_000_000, {"w": []}, {}, keep=1)
    assert [p.name for p in tmp_path.iterdir()] == ["round-1000000.safetensors"]


def test_invalid_inputs(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not JSON"):
        save_checkpoint(tmp_path, 1, {"w": []}, {"x": object()})
    with pytest.raises(CheckpointError, match="dtype object"):
        save_checkpoint(tmp_path, 1, {"w": [np.array([object()])]}, {})
    with pytest.raises(CheckpointError, match="invalid checkpoint request"):
        save_checkpoint(tmp_path, -1, {}, {})
    with pytest.raises(CheckpointError, match="group name"):
        save_checkpoint(tmp_path, 1, {"": [np.ones(1)]}, {})
    assert list(tmp_path.iterdir()) == []


def test_renamed_file_is_detected(tmp_path: Path) -> None:
    path, _ = save_checkpoint(tmp_path, 4, {"w": [np.ones(1)]}, {})
    moved = path.rename(tmp_path / "round-000009.safetensors")
    with pytest.raises(CheckpointError, match="file name says round 000009"):
        load_checkpoint(moved)
