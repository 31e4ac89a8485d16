"""The resolved configuration of a simulation run (validated; unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ALGORITHMS = (
    "fedavg", "fedprox", "scaffold", "fedavgm", "fedadam", "fedyogi",
    # Byzantine-robust (docs/robustness.md)
    "median", "trimmed-mean", "krum", "multi-krum", "centered-clipping", "norm-bound", "fltrust",
)  # fmt: skip


class ModelSpec(BaseModel):
    """The detection model every participant trains."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["mlp", "autoencoder", "hybrid"] = "mlp"
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    lr: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(256, ge=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    """Local optimizer (a fresh one each local step; see MLPClassifier)."""
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    """SGD momentum (optimizer "sgd" only)."""
    class_weight: Literal["balanced", "none"] = "balanced"
    logit_adjust: float = Field(0.0, ge=0.0, le=10.0)
    """Logit-adjusted loss strength tau (Menon et al., ICLR 2021); see MLPClassifier."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    min_class_rows: int = Field(0, ge=0, le=100_000)
    """Oversample the classifier's rare classes (0: off): a class the federation holds
    ``c < min_class_rows`` times has each row presented ``ceil(min_class_rows / c)`` times per
    epoch (ADR 0019, models/mlp.py)."""
    # the hybrid detector's anomaly part (models/hybrid.py); ignored by the other kinds
    ae_hidden: tuple[int, ...] = (64, 16)
    """Encoder widths of the hybrid's autoencoder (the last one is the bottleneck)."""
    anomaly_fpr: float = Field(0.01, gt=0.0, lt=1.0)
    """Share of benign validation flows the hybrid's anomaly part may flag (sets t_a)."""
    classifier_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    """t_c: the hybrid's classifier alerts when 1 - P(benign) exceeds it."""
    ae_epochs: int = Field(1, ge=1, le=1000)
    """Passes of the hybrid's autoencoder over the benign rows per local epoch."""
    ae_optimizer: Literal["adam", "sgd"] | None = None
    """The hybrid autoencoder's local optimizer (None: the classifier's)."""
    ae_lr: float | None = Field(None, gt=0.0)
    """The hybrid autoencoder's learning rate (None: the classifier's)."""


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
    restricted_softmax: float = Field(1.0, ge=0.0, le=1.0)
    """FedRS alpha for the classifier's local training (1: off); models/mlp.py."""
    classwise_head: bool = False
    """Average the classifier's output rows class by class (ADR 0018)."""
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
    secure_aggregation: bool = False
    secagg_bucket_size: int | None = Field(None, ge=2)
    secagg_clip: float = Field(100.0, gt=0.0)
    model: ModelSpec = ModelSpec()
    out: Path | None = None
    # differential privacy (issue #6, docs/privacy.md)
    dp: Literal["none", "record", "client-central", "client-distributed"] = "none"
    epsilon: float | None = Field(None, gt=0.0)
    """Target epsilon: per participant for record mode, of the federation for client modes."""
    delta: float = Field(1e-5, gt=0.0, lt=1.0)
    clip: float = Field(1.0, gt=0.0)
    noise_multiplier: float | None = Field(None, gt=0.0)
    participant_epsilon: float | None = Field(None, gt=0.0)
    """Each participant's own budget (default: --epsilon, or unlimited tracking)."""
    adaptive_clip: bool = False
    dp_class_balance: float = Field(0.0, ge=0.0, le=1.0)
    """Record mode: class-balanced sampling exponent (1 balanced, 0 uniform; docs/privacy.md)."""
    # poisoning and robustness (issue #8, docs/robustness.md)
    algorithm_options: dict[str, float] = Field(default_factory=dict)
    """Extra algorithm parameters (e.g. ``trim_ratio``, ``byzantine``), as for federation.toml."""
    attack: str = "none"
    attackers: int = Field(0, ge=0)
    attack_scale: float | None = None
    attack_target: str = "dos"
    poison_rows: int = Field(1000, ge=1)
    fltrust_root: int = Field(200, ge=10)
    """Labelled flows of the coordinator's FLTrust root dataset (drawn from validation)."""
    quarantine_after: int = Field(0, ge=0)
    """Exclude a participant after this many flagged rounds (0: never)."""

    @model_validator(mode="after")
    def _dp_model(self) -> SimConfig:
        if self.dp == "record" and self.model.kind == "hybrid":
            raise ValueError(
                "record-level DP (--dp record) is not supported with --model hybrid: DP-SGD"
                " would need one privacy accounting over both of its networks; use --model mlp"
                " with --dp record, or client-level DP (client-central, client-distributed)"
            )
        if self.dp == "record" and self.restricted_softmax != 1.0:
            raise ValueError(
                "--restricted-softmax (FedRS) is not supported with record-level DP (--dp"
                " record): DP-SGD trains with the plain softmax; drop one of them"
            )
        if self.dp == "record" and self.model.min_class_rows > 1:
            raise ValueError(
                "--min-class-rows is not supported with record-level DP (--dp record): DP-SGD's"
                " accounting samples each record once per step, and a repeated row would spend"
                " more privacy than it accounts for; drop --min-class-rows or use client-level DP"
            )
        if self.classwise_head:
            from phalanx.models.federated import CLASSWISE_ALGORITHMS

            if self.dp != "none":
                raise ValueError(
                    "--classwise-head cannot run with --dp: the per-class weights of the output"
                    " layer would leave each participant without noise; drop one of them"
                )
            if self.model.kind == "autoencoder":
                raise ValueError(
                    "--classwise-head averages a classifier's output rows; --model autoencoder"
                    " has none (use mlp or hybrid)"
                )
            if self.algorithm not in CLASSWISE_ALGORITHMS:
                raise ValueError(
                    f"--classwise-head does not apply to --algorithm {self.algorithm}; it works"
                    f" with {', '.join(CLASSWISE_ALGORITHMS)}"
                )
        return self

    @field_validator("attack")
    @classmethod
    def _attack(cls, v: str) -> str:
        from phalanx.sim.attacks import ATTACKS

        if v not in ATTACKS:
            raise ValueError(f"unknown attack {v!r}; expected one of {', '.join(ATTACKS)}")
        return v

    @field_validator("algorithm")
    @classmethod
    def _algorithm(cls, v: str) -> str:
        if v not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {v!r}; expected one of {', '.join(ALGORITHMS)}")
        return v
