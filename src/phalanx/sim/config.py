"""The resolved configuration of a simulation run (validated; unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ALGORITHMS = ("fedavg", "fedprox", "scaffold", "fedavgm", "fedadam", "fedyogi")


class ModelSpec(BaseModel):
    """The detection model every participant trains."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["mlp", "autoencoder"] = "mlp"
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    lr: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(256, ge=1)
    class_weight: Literal["balanced", "none"] = "balanced"


class SimConfig(BaseModel):
    """Everything ``phalanx simulate`` needs; written to ``config.json`` as resolved."""

    model_config = ConfigDict(extra="forbid")

    data: str = "synthetic"
    test: str | None = None
    format: str = "auto"
    participants: int = Field(10, ge=1, le=100_000)
    partition: str = "natural"
    rounds: int = Field(10, ge=1, le=10_000)
    local_epochs: int = Field(1, ge=1, le=1000)
    algorithm: str = "fedavg"
    proximal_mu: float = Field(0.01, ge=0.0)
    server_lr: float | None = Field(None, gt=0.0)
    server_momentum: float = Field(0.9, ge=0.0, lt=1.0)
    fraction: float = Field(1.0, gt=0.0, le=1.0)
    min_participants: int = Field(1, ge=1)
    seed: int = 0
    baselines: bool = False
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    validation_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    target_fpr: float = Field(0.01, gt=0.0, lt=1.0)
    synthetic_flows: int = Field(20_000, ge=100)
    workers: int = Field(2, ge=1, le=64)
    model: ModelSpec = ModelSpec()
    out: Path | None = None

    @field_validator("algorithm")
    @classmethod
    def _algorithm(cls, v: str) -> str:
        if v not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {v!r}; expected one of {', '.join(ALGORITHMS)}")
        return v
