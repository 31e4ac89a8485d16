"""``federation.toml``'s ``[training]`` and ``[model]`` reach the deployed round engine as in
simulation: FedRS's alpha goes out with every task, and a hybrid under FedAdam keeps the adaptive
server step off its autoencoder (ADR 0016)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from phalanx.adapters.pki import init_ca, issue
from phalanx.cli.config import load_config
from phalanx.cli.coordinator import CoordinatorHost
from phalanx.core.aggregation import FedAdam
from phalanx.core.errors import ConfigError
from phalanx.models import HybridDetector, build_model


def _config(root: Path, training: str, model: str) -> Path:
    init_ca(root / "pki", "train-fed")
    issue(root / "pki", "coordinator", "localhost")
    path = root / "federation.toml"
    path.write_text(
        f'[federation]\nname = "train-fed"\n\n[model]\n{model}\n\n[training]\n{training}\n\n'
        f"[participants]\nenrolled = {json.dumps(['a', 'b', 'c'])}\nmin = 2\n"
    )
    return path


@contextmanager
def _host(path: Path) -> Iterator[CoordinatorHost]:
    """The coordinator host ``path`` configures, its store closed afterwards."""
    host = CoordinatorHost(load_config(path))
    try:
        yield host
    finally:
        host.store.close()


def test_hybrid_under_fedadam_with_fedrs(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        'algorithm = "fedadam"\nrestricted_softmax = 0.5',
        'kind = "hybrid"\nhidden = [32, 16]\nae_epochs = 10\nmin_class_rows = 32',
    )
    with _host(path) as host:
        algo = host.federation.algorithm
        assert isinstance(algo, FedAdam)
        hybrid = build_model({"kind": "hybrid", "hidden": [32, 16]}, 8, {"seed": 0})
        assert isinstance(hybrid, HybridDetector)
        assert algo.adaptive_layers == len(hybrid.classifier_.get_weights()) == 6
        config = host.federation.plan.train_config
        assert config["restricted_softmax"] == 0.5
        assert config["model"]["ae_epochs"] == 10
        assert config["model"]["min_class_rows"] == 32


def test_defaults_send_no_fedrs_and_keep_every_layer_adaptive(tmp_path: Path) -> None:
    with _host(_config(tmp_path, 'algorithm = "fedadam"', "")) as host:
        assert "restricted_softmax" not in host.federation.plan.train_config
        assert host.federation.algorithm.adaptive_layers == 0  # type: ignore[attr-defined]


def test_a_bad_fedrs_alpha_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="restricted_softmax"):
        load_config(_config(tmp_path, "restricted_softmax = 1.5", ""))


def test_classwise_head_reaches_the_algorithm_and_its_tasks(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        'algorithm = "fedadam"\nclasswise_head = true',
        'kind = "hybrid"\nhidden = [32, 16]',
    )
    with _host(path) as host:
        algo = host.federation.algorithm
        assert isinstance(algo, FedAdam)
        assert algo.classwise_layer == 4 and algo.adaptive_layers == 6
        assert algo.task_config() == {"class_counts": 1.0}


_RECORD_DP = '[privacy]\nmode = "record"\nepsilon = 8.0\nclip = 1.0'
_CLIENT_DP = '[privacy]\nmode = "client-central"\nepsilon = 8.0'


@pytest.mark.parametrize(
    ("training", "model", "privacy", "named", "hint"),
    [
        ("restricted_softmax = 0.5", "", _RECORD_DP, "restricted_softmax", "remove restricted"),
        ("", "min_class_rows = 32", _RECORD_DP, "min_class_rows", "remove min_class_rows"),
        ("classwise_head = true", "", _CLIENT_DP, "classwise_head", "remove classwise_head"),
    ],
)
def test_options_that_dp_cannot_account_for_are_refused(
    tmp_path: Path, training: str, model: str, privacy: str, named: str, hint: str
) -> None:
    path = _config(tmp_path, training, model)
    path.write_text(path.read_text() + f"\n{privacy}\n")
    with pytest.raises(ConfigError, match=named) as err:
        load_config(path)
    assert hint in str(err.value.hint)
