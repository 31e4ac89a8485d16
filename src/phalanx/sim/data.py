"""Data preparation for a simulation: load or generate, split, partition."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import ConfigError, SchemaMismatchError
from phalanx.core.features.batch import FlowBatch
from phalanx.data.partition import category_matrix, parse_partition
from phalanx.data.readers import read_flows
from phalanx.data.synthetic import generate_federation
from phalanx.sim.config import SimConfig


@dataclass(frozen=True)
class SimData:
    """The flows of one simulation, already split."""

    parts: list[FlowBatch]
    """Each participant's training flows."""
    validation: FlowBatch
    """Held-out labelled flows for threshold calibration (never trained on)."""
    test: FlowBatch
    """The test set every model is scored on."""
    source: str
    """Human description of where the data came from."""
    category_matrix: NDArray[np.int64]
    """Rows per participant (rows) and taxonomy category (columns)."""


def stratified_split(
    labels: NDArray[np.object_], fraction: float, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Indices ``(keep, held_out)``: ``fraction`` of every label value held out (seeded).

    A label with a single row stays in ``keep``.
    """
    keep: list[NDArray[np.int64]] = []
    held: list[NDArray[np.int64]] = []
    values, inverse = np.unique(labels.astype(str), return_inverse=True)
    for k in range(len(values)):
        idx = np.flatnonzero(inverse == k)
        rng.shuffle(idx)
        n_out = round(len(idx) * fraction) if len(idx) > 1 else 0
        held.append(idx[:n_out])
        keep.append(idx[n_out:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def prepare(cfg: SimConfig) -> SimData:
    """Load (or generate) the flows of ``cfg`` and split them into parts, validation and test."""
    root = np.random.SeedSequence(cfg.seed)
    split_rng, val_rng, part_rng = (np.random.default_rng(s) for s in root.spawn(3))
    if cfg.data == "synthetic":
        orgs = generate_federation(cfg.participants, cfg.synthetic_flows, seed=cfg.seed)
        test_flows = max(1000, cfg.synthetic_flows // 4)
        test = FlowBatch.concat(
            generate_federation(cfg.participants, test_flows, seed=cfg.seed + 1_000_003)
        )
        source = (
            f"synthetic traffic, {cfg.participants} organizations x {cfg.synthetic_flows} flows"
        )
        if cfg.partition == "natural":
            parts, vals = [], []
            for org in orgs:
                keep, held = stratified_split(org.category, cfg.validation_fraction, val_rng)
                parts.append(org.take(keep))
                vals.append(org.take(held))
            validation = FlowBatch.concat(vals)
            return SimData(parts, validation, test, source, parts_category_matrix(parts))
        pooled = FlowBatch.concat(orgs)
    else:
        if cfg.partition == "natural":
            raise ConfigError(
                "--partition natural only applies to synthetic traffic (one part per organization)",
                hint="use iid, dirichlet:ALPHA, families:K or quantity:ALPHA",
            )
        pooled, _ = read_flows(cfg.data, cfg.format)
        source = cfg.data
        if cfg.test is not None:
            test, _ = read_flows(cfg.test, cfg.format)
            if test.schema.hash() != pooled.schema.hash():
                raise SchemaMismatchError(
                    f"test file {cfg.test} is in schema {test.schema.source!r}"
                    f" ({test.schema.hash()[:12]}), the training file {cfg.data} in"
                    f" {pooled.schema.source!r} ({pooled.schema.hash()[:12]})",
                    hint="train and test on files of the same format and columns",
                )
            source += f" (test: {cfg.test})"
        else:
            keep, held = stratified_split(pooled.label, cfg.test_fraction, split_rng)
            test = pooled.take(held)
            pooled = pooled.take(keep)
            source += f" (seeded stratified split, {cfg.test_fraction:.0%} test)"
    keep, held = stratified_split(pooled.category, cfg.validation_fraction, val_rng)
    validation = pooled.take(held)
    train = pooled.take(keep)
    spec = "iid" if cfg.partition == "natural" else cfg.partition
    partitioner = parse_partition(spec)
    indices = partitioner(train.category, cfg.participants, part_rng)
    parts = [train.take(np.asarray(ix)) for ix in indices]
    return SimData(parts, validation, test, source, parts_category_matrix(parts))


def parts_category_matrix(parts: list[FlowBatch]) -> NDArray[np.int64]:
    """Rows per participant (rows) and taxonomy category (columns)."""
    labels = np.concatenate([p.category for p in parts])
    offsets = np.cumsum([0] + [len(p) for p in parts])
    idx = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(parts))]
    return category_matrix(labels, idx)
