"""``federation.toml``: the coordinator's configuration, validated (unknown keys are errors).

Example::

    [federation]
    name = "north-isac"

    [data]
    schema = "netflow-v2"          # the schema every participant reads its flows into

    [model]
    kind = "mlp"
    hidden = [256, 128]
    # min_class_rows = 32          # oversample rare classes by the federation's counts (ADR 0019)

    [training]
    algorithm = "fedavg"
    rounds = 10
    local_epochs = 1
    seed = 0
    secure_aggregation = true      # SecAgg+: the coordinator learns only sums (docs/protocol.md)
    # algorithm = "trimmed-mean"   # a robust aggregator (docs/robustness.md)
    # quarantine_after = 3         # suspend a participant after 3 flagged rounds (0: never)

    [privacy]                      # optional; each participant also enforces its own budget
    mode = "none"                  # record | client-central | client-distributed (docs/privacy.md)
    # epsilon = 8.0                # target per participant over the whole federation
    # delta = 1e-5
    # clip = 1.0                   # L2 clipping norm (per example for record, per update else)

    [participants]
    enrolled = ["hospital-a", "bank-b", "isp-c"]
    admins = ["soc-lead"]
    min = 2                        # fewest replies a round accepts
    max = 10                       # most participants sampled per round
    fraction = 1.0                 # share of connected participants sampled per round

    [rounds]
    deadline_s = 120               # stragglers after this are left out of the round
    max_retries = 3                # retries of a round that fell short of `min`

    [server]
    listen = "127.0.0.1:50051"
    pki_dir = "pki"                # from `phalanx pki init`; holds ca.crt, crl.pem
    identity_dir = "pki/coordinators/localhost"

    [state]
    dir = "state"                  # SQLite database, checkpoints, model versions

Unsafe modes are never configurable here: mutual TLS is always on.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from phalanx.core.errors import ConfigError
from phalanx.sim.config import ALGORITHMS, ModelSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FederationSection(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")


class DataSection(_Strict):
    schema_name: str = Field("netflow-v2", alias="schema")


class TrainingSection(_Strict):
    algorithm: str = "fedavg"
    rounds: int = Field(10, ge=1, le=100_000)
    local_epochs: int = Field(1, ge=1, le=1000)
    restricted_softmax: float = Field(1.0, ge=0.0, le=1.0)
    """FedRS alpha of the classifier's local training (1: off; models/mlp.py)."""
    classwise_head: bool = False
    """Average the classifier's output rows class by class (ADR 0018); not with differential
    privacy. Under secure aggregation the coordinator learns each bucket's rows per class."""
    seed: int = 0
    params: dict[str, float] = Field(default_factory=dict)
    secure_aggregation: bool = True
    secagg_clip: float = Field(100.0, gt=0.0)
    secagg_bucket_size: int | None = Field(None, ge=2)
    quarantine_after: int = Field(0, ge=0)
    """Suspend a participant after this many rounds with a flagged update (0: never)."""

    @field_validator("algorithm")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {v!r}; expected one of {', '.join(ALGORITHMS)}")
        return v


class PrivacySection(_Strict):
    """Differential privacy of the training tasks (``docs/privacy.md``)."""

    mode: Literal["none", "record", "client-central", "client-distributed"] = "none"
    epsilon: float | None = Field(None, gt=0.0)
    delta: float = Field(1e-5, gt=0.0, lt=1.0)
    clip: float = Field(1.0, gt=0.0)
    noise_multiplier: float | None = Field(None, gt=0.0)
    class_balance: float = Field(0.0, ge=0.0, le=1.0)


class ParticipantsSection(_Strict):
    enrolled: list[str] = Field(min_length=1)
    admins: list[str] = Field(default_factory=list)
    min: int = Field(1, ge=1)
    max: int | None = Field(None, ge=1)
    fraction: float = Field(1.0, gt=0.0, le=1.0)


class RoundsSection(_Strict):
    deadline_s: float = Field(120.0, gt=0.0)
    max_retries: int = Field(3, ge=0)
    linger_s: float = Field(3.0, ge=0.0)


class ServerSection(_Strict):
    listen: str = "127.0.0.1:50051"
    pki_dir: Path = Path("pki")
    identity_dir: Path = Path("pki/coordinators/localhost")


class StateSection(_Strict):
    dir: Path = Path("state")


class FederationConfig(_Strict):
    """The whole ``federation.toml``."""

    federation: FederationSection
    data: DataSection = DataSection()
    model: ModelSpec = ModelSpec()
    training: TrainingSection = TrainingSection()
    privacy: PrivacySection = PrivacySection()
    participants: ParticipantsSection
    rounds: RoundsSection = RoundsSection()
    server: ServerSection = ServerSection()
    state: StateSection = StateSection()


def load_config(path: Path) -> FederationConfig:
    """Read and validate ``path``; relative paths in it are taken from its folder."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        cfg = FederationConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(
            f"{path} is not a valid federation configuration: {problems}",
            hint="see the example in 'phalanx coordinator serve --help' and docs/user-guide.md",
        ) from None
    base = path.parent
    server = cfg.server.model_copy(
        update={
            "pki_dir": _under(base, cfg.server.pki_dir),
            "identity_dir": _under(base, cfg.server.identity_dir),
        }
    )
    if cfg.privacy.mode == "record" and cfg.model.kind == "hybrid":
        raise ConfigError(
            f'{path}: [privacy] mode = "record" cannot train [model] kind = "hybrid"'
            " (DP-SGD accounts for one network; the hybrid trains two on different rows)",
            hint='use kind = "mlp" with record-level DP, or mode = "client-central" or'
            ' "client-distributed" with the hybrid',
        )
    if cfg.privacy.mode == "record" and cfg.training.restricted_softmax != 1.0:
        raise ConfigError(
            f'{path}: [privacy] mode = "record" cannot train with [training] restricted_softmax'
            " (DP-SGD trains with the plain softmax)",
            hint="remove restricted_softmax, or use client-level DP",
        )
    if cfg.privacy.mode == "record" and cfg.model.min_class_rows > 1:
        raise ConfigError(
            f'{path}: [privacy] mode = "record" cannot train with [model] min_class_rows'
            " (DP-SGD's accounting samples each record once per step; a repeated row would"
            " spend more privacy than it accounts for)",
            hint="remove min_class_rows, or use client-level DP",
        )
    if cfg.training.classwise_head and cfg.privacy.mode != "none":
        raise ConfigError(
            f"{path}: [training] classwise_head cannot run with [privacy] mode ="
            f" {cfg.privacy.mode!r}: the per-class weights of the output layer would leave each"
            " participant without noise",
            hint='remove classwise_head, or set [privacy] mode = "none"',
        )
    state = cfg.state.model_copy(update={"dir": _under(base, cfg.state.dir)})
    return cfg.model_copy(update={"server": server, "state": state})


def _under(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else (base / p)
