"""Column-wise ECS rendering: the same documents as the former per-alert renderer."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pytest
from ecs_reference import documents as reference_documents
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phalanx.core.features.batch import FlowBatch
from phalanx.core.taxonomy import CATEGORIES
from phalanx.data.synthetic import generate_federation
from phalanx.services.alerts import AlertBatch, FlowFields, json_floats, json_strings

BASE = FlowBatch.concat(generate_federation(1, 64, seed=3))
NAMES = tuple(BASE.schema.numeric) + tuple(BASE.schema.categorical)
PORTS = ["80", "443.0", " 22 ", "", "abc", "1e3", "-5", "nan", "+7", "0x10", "1_000", None]
ODD = st.text(max_size=12)


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON types all the way down (1 and 1.0 differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@st.composite
def alert_cases(draw: st.DrawFn) -> tuple[FlowBatch, AlertBatch]:
    n = draw(st.integers(1, 12))
    batch = BASE.take(np.arange(n))
    ids: dict[str, np.ndarray] = {}
    for name in ("IPV4_SRC_ADDR", "IPV4_DST_ADDR"):
        form = draw(st.sampled_from(["uint32", "int64", "text", "absent"]))
        if form == "uint32":
            ids[name] = np.array(
                draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n)), dtype=np.uint32
            )
        elif form == "int64":
            ids[name] = np.array(
                draw(st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n)), dtype=np.int64
            )
        elif form == "text":
            ids[name] = np.array(
                draw(st.lists(st.one_of(ODD, st.none()), min_size=n, max_size=n)), dtype=object
            )
    for name in ("L4_SRC_PORT", "L4_DST_PORT"):
        form = draw(st.sampled_from(["int", "float", "text", "absent"]))
        if form == "int":
            ids[name] = np.array(
                draw(st.lists(st.integers(0, 65535), min_size=n, max_size=n)), dtype=np.int64
            )
        elif form == "float":
            values = st.one_of(st.floats(-1e6, 1e6), st.just(math.nan))
            ids[name] = np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=np.float64)
        elif form == "text":
            ids[name] = np.array(
                draw(st.lists(st.sampled_from(PORTS), min_size=n, max_size=n)), dtype=object
            )
    if draw(st.booleans()):
        ms = st.integers(-(10**12), 8 * 10**12)
        ids["FLOW_START_MILLISECONDS"] = np.array(
            draw(st.lists(ms, min_size=n, max_size=n)), dtype=np.int64
        )
    categorical = batch.categorical.copy()
    protocols = st.one_of(st.sampled_from(["6", "17", "1.0", "58", "47.5", ""]), ODD, st.none())
    categorical[:, list(batch.schema.categorical).index("PROTOCOL")] = draw(
        st.lists(protocols, min_size=n, max_size=n)
    )
    categorical[:, list(batch.schema.categorical).index("L4_DST_PORT")] = draw(
        st.lists(st.sampled_from(PORTS), min_size=n, max_size=n)
    )
    batch = dataclasses.replace(batch, identifiers=ids, categorical=categorical)
    hit = np.array(sorted(draw(st.sets(st.integers(0, n - 1), min_size=1))), dtype=np.intp)
    k = draw(st.integers(0, 3))
    m = len(hit)
    contributions = st.floats(-5, 5, width=32)
    values = np.array(draw(st.lists(contributions, min_size=m * k, max_size=m * k)), np.float32)
    values = -np.sort(-values.reshape(m, k), axis=1)
    kind = draw(st.sampled_from(["mlp", "autoencoder"]))
    top = np.array(draw(st.lists(st.integers(0, len(NAMES) - 1), min_size=m * k, max_size=m * k)))
    alerts = AlertBatch(
        rows=hit,
        offset=draw(st.integers(0, 10**9)),
        score=np.array(
            draw(st.lists(st.floats(0, 1, width=32), min_size=m, max_size=m)), np.float32
        ),
        category=np.array(
            draw(st.lists(st.one_of(st.sampled_from(CATEGORIES), ODD), min_size=m, max_size=m)),
            dtype=object,
        ),
        top_columns=top.reshape(m, k).astype(np.intp),
        top_values=values.round(6),
        names=NAMES,
        fields=FlowFields.of(batch, hit),
        source=draw(ODD),
        created="2026-11-29T12:00:00.000001+00:00",
        # (the former renderer crashes on a threshold so small that score / threshold is inf)
        threshold=draw(st.one_of(st.floats(-1, 0), st.floats(1e-6, 2))),
        kind=kind,
        model_id=draw(ODD),
        model_version=draw(ODD),
    )
    return batch, alerts


def _reference(batch: FlowBatch, alerts: AlertBatch) -> list[dict[str, Any]]:
    why = [
        [(alerts.names[c], v) for c, v in zip(cols, vals, strict=True) if v > 0]
        for cols, vals in zip(alerts.top_columns.tolist(), alerts.top_values.tolist(), strict=True)
    ]
    return reference_documents(
        batch,
        alerts.rows,
        alerts.score.astype(np.float64).tolist(),
        [str(c) for c in alerts.category.tolist()],
        why,
        kind=alerts.kind,
        threshold=alerts.threshold,
        model_id=alerts.model_id,
        model_version=alerts.model_version,
        now=alerts.created,
        source=alerts.source,
        offset=alerts.offset,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alert_cases())
def test_jsonl_parses_to_the_former_documents(case: tuple[FlowBatch, AlertBatch]) -> None:
    batch, alerts = case
    lines = alerts.to_jsonl().decode("ascii").split("\n")
    assert lines[-1] == ""  # every line ends in a newline
    parsed = [json.loads(line) for line in lines[:-1]]
    expected = _reference(batch, alerts)
    assert len(parsed) == len(expected) == len(alerts)
    for got, want in zip(parsed, expected, strict=True):
        assert _same(got, want), (got, want)


def test_category_can_be_replaced_and_fields_added_before_rendering() -> None:
    batch = BASE.take(np.arange(8))
    hit = np.array([1, 4, 6], dtype=np.intp)
    alerts = AlertBatch(
        rows=hit, offset=100, score=np.array([0.9, 0.8, 0.99], np.float32),
        category=np.array(["recon", "recon", "dos"], dtype=object),
        top_columns=np.zeros((3, 0), np.intp), top_values=np.zeros((3, 0), np.float32),
        names=NAMES, fields=FlowFields.of(batch, hit), source="day.csv", created="now",
        threshold=0.5, kind="mlp", model_id="m", model_version="3",
    )  # fmt: skip
    alerts.category = np.array(["ddos", "recon", "dos"], dtype=object)
    alerts.extra = json_strings(np.array(["recon", None, "dos"], dtype=object))
    alerts.extra = np.char.add(',"model_category":', np.array(['"recon"', "null", '"dos"']))
    import pyarrow as pa

    alerts.extra = pa.array(alerts.extra.tolist())
    docs = alerts.documents()
    assert [d["rule"]["name"] for d in docs] == ["phalanx-ddos", "phalanx-recon", "phalanx-dos"]
    assert docs[0]["threat"]["technique"]["id"] == ["T1498"]
    assert [d["phalanx"]["model_category"] for d in docs] == ["recon", None, "dos"]
    assert [d["phalanx"]["input"]["row"] for d in docs] == [101, 104, 106]
    assert docs[0]["phalanx"]["top_features"] == []


@given(st.one_of(st.floats(allow_nan=True), st.floats(width=32)))
def test_floats_read_back_as_the_same_floats(value: float) -> None:
    text = json_floats(np.array([value], dtype=np.float64))[0].as_py()
    back = json.loads(text)
    assert isinstance(back, float)
    assert back == value or (math.isnan(value) and math.isnan(back))
    assert text == json.dumps(value) or "e" in text or "e" in json.dumps(value)


@given(st.lists(st.one_of(st.text(), st.none()), max_size=20))
def test_strings_are_json_dumps_literals(values: list[str | None]) -> None:
    import pyarrow as pa

    rendered = json_strings(pa.array(values, pa.string())).to_pylist()
    assert rendered == [json.dumps(v) for v in values]


def test_no_alerts_render_nothing() -> None:
    empty = np.zeros(0, dtype=np.intp)
    alerts = AlertBatch(
        rows=empty, offset=0, score=np.zeros(0, np.float32), category=np.zeros(0, object),
        top_columns=np.zeros((0, 3), np.intp), top_values=np.zeros((0, 3), np.float32),
        names=NAMES, fields=FlowFields.of(BASE, empty), source="", created="now",
        threshold=0.5, kind="mlp", model_id="m", model_version="1",
    )  # fmt: skip
    assert alerts.to_jsonl() == b""
    assert alerts.documents() == []


@pytest.mark.parametrize("value", [1.0, 1e-05, 1e16, -0.0, 123456789.0, 0.1])
def test_float_forms(value: float) -> None:
    text = json_floats(np.array([value]))[0].as_py()
    assert json.loads(text) == value and isinstance(json.loads(text), float)
