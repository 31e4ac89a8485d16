"""federation.toml is validated: unknown keys, bad values and broken files are named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from phalanx.cli.config import load_config
from phalanx.cli.main import app
from phalanx.core.errors import ConfigError

GOOD = """
[federation]
name = "north-isac"

[participants]
enrolled = ["hospital-a", "bank-b"]
admins = ["soc-lead"]
min = 2

[server]
listen = "127.0.0.1:50051"
pki_dir = "pki"
identity_dir = "pki/coordinators/localhost"
"""


def test_a_good_file_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    (tmp_path / "federation.toml").write_text(GOOD)
    cfg = load_config(tmp_path / "federation.toml")
    assert cfg.federation.name == "north-isac"
    assert cfg.server.pki_dir == tmp_path / "pki"
    assert cfg.state.dir == tmp_path / "state"
    assert cfg.training.algorithm == "fedavg"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (GOOD + "\n[rounds]\ndeadlin_s = 5\n", "deadlin_s"),
        (GOOD.replace('name = "north-isac"', 'name = "north isac!"'), "federation.name"),
        (GOOD + '\n[training]\nalgorithm = "fedmagic"\n', "fedmagic"),
        (GOOD + "\n[server]\ninsecure = true\n", "server"),
        ("[federation\nname = 1", "not valid TOML"),
    ],
)
def test_bad_files_are_refused_with_the_key_named(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "federation.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_serve_with_a_missing_file_exits_2_with_a_message(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["coordinator", "serve", "--config", str(tmp_path / "nope.toml")])
    assert res.exit_code == 2
    assert "does not exist" in " ".join(res.output.split())


def test_record_dp_with_a_hybrid_model_is_refused_up_front(tmp_path: Path) -> None:
    text = GOOD + '\n[model]\nkind = "hybrid"\n\n[privacy]\nmode = "record"\nepsilon = 8.0\n'
    (tmp_path / "federation.toml").write_text(text)
    with pytest.raises(ConfigError, match="hybrid") as err:
        load_config(tmp_path / "federation.toml")
    assert "client-central" in (err.value.hint or "")
    (tmp_path / "federation.toml").write_text(text.replace('"record"', '"client-central"'))
    assert load_config(tmp_path / "federation.toml").model.kind == "hybrid"
