"""``phalanx detect``, ``phalanx model inspect`` and ``phalanx export --onnx`` end to end."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from phalanx.adapters.pki import Signer, init_ca, issue_signer, sign_bundle
from phalanx.cli.main import app
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.stats import compute_stats
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.taxonomy import CATEGORIES
from phalanx.data.synthetic import generate_federation
from phalanx.models import AutoencoderDetector, MLPClassifier, save_model
from phalanx.models.explain import Model
from phalanx.services.detection import choose_threshold
from phalanx.services.participant import category_indices
from phalanx.sim.scoring import calibrate

torch.set_num_threads(1)
runner = CliRunner(env={"COLUMNS": "240"})
ECS_FIELDS = ("@timestamp", "event", "source", "destination", "network", "rule", "threat")


def _train(kind: str, flows: int, epochs: int) -> tuple[Model, FeatureTransform, FlowBatch]:
    data = FlowBatch.concat(generate_federation(4, flows, seed=11))
    transform = FeatureTransform.fit(compute_stats(data))
    x, y = transform.transform(data), category_indices(data)
    model: Model
    if kind == "mlp":
        model = MLPClassifier(transform.n_features, epochs=epochs, seed=2).fit(x, y)
    else:
        model = AutoencoderDetector(transform.n_features, epochs=epochs, seed=2).fit(x, y)
    validation = FlowBatch.concat(generate_federation(4, flows // 4, seed=12))
    return model, transform, validation


def _bundle(folder: Path, kind: str, flows: int = 2500, epochs: int = 2) -> Path:
    model, transform, validation = _train(kind, flows, epochs)
    meta = {
        "schema": transform.schema.to_dict(),
        "schema_hash": transform.schema_hash,
        "transform": transform.to_dict(),
        "taxonomy": list(CATEGORIES),
        "thresholds": calibrate(model, transform, validation, 0.01),
        "provenance": {"federation": "test", "round": 7, "participants": 4, "dp_epsilon": None},
    }
    return save_model(folder, model, meta)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("detect")
    ca = init_ca(root / "ca", "north-isac")
    signing = issue_signer(ca, "hub")
    mlp = _bundle(root / "mlp", "mlp")
    sign_bundle(mlp, Signer.load(signing.directory))
    flows = root / "flows.csv"
    day = generate_federation(2, 1500, seed=99)
    _write_netflow_csv(flows, FlowBatch.concat(day))
    return {"ca": ca, "mlp": mlp, "root": root, "flows": flows}


def _write_netflow_csv(path: Path, batch: FlowBatch) -> None:
    """A NetFlow v2 CSV of ``batch`` as the NF-v2 releases lay it out (with Label, Attack)."""
    from phalanx.data.schemas import NETFLOW_V2
    from phalanx.data.synthetic import format_ipv4

    cols: list[list[str]] = []
    for c in NETFLOW_V2.columns:
        if c.name in batch.schema.numeric:
            j = batch.schema.numeric.index(c.name)
            cols.append([f"{v:g}" for v in batch.numeric[:, j]])
        elif c.name in batch.schema.categorical:
            cols.append(batch.categorical[:, batch.schema.categorical.index(c.name)].tolist())
        elif c.name in ("IPV4_SRC_ADDR", "IPV4_DST_ADDR"):
            cols.append(format_ipv4(batch.identifiers[c.name]).tolist())
        else:
            cols.append([str(v) for v in batch.identifiers[c.name].tolist()])
    label = ["0" if c == "benign" else "1" for c in batch.category.tolist()]
    lines = [",".join([c.name for c in NETFLOW_V2.columns] + ["Label", "Attack"])]
    for i in range(len(batch)):
        lines.append(",".join([col[i] for col in cols] + [label[i], str(batch.label[i])]))
    path.write_text("\n".join(lines) + "\n")


def _alerts(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_signed_model_scores_a_netflow_csv_into_ecs_alerts(
    federation: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "alerts.jsonl"
    args = ["detect", "-m", str(federation["mlp"]), "-i", str(federation["flows"])]
    res = runner.invoke(
        app, [*args, "-o", str(out), "--trust", str(federation["ca"]), "--fpr", "0.01"]
    )
    assert res.exit_code == 0, res.output
    assert "valid" in res.output and "flows/s" in res.output and "3,000" in res.output
    alerts = _alerts(out)
    assert 0 < len(alerts) < 3000
    doc = alerts[0]
    for key in ECS_FIELDS:
        assert key in doc
    assert doc["event"]["kind"] == "alert"
    assert doc["rule"]["name"] == f"phalanx-{doc['phalanx']['category']}"
    assert doc["phalanx"]["model"]["version"] == "round-7"
    assert doc["network"]["transport"] in ("tcp", "udp", "icmp")
    assert doc["source"]["ip"].count(".") == 3 and isinstance(doc["destination"]["port"], int)
    assert doc["phalanx"]["score"] > doc["phalanx"]["threshold"]
    assert 1 <= len(doc["phalanx"]["top_features"]) <= 3
    # The CSV keeps the truth in Attack: benign flows rarely alert (the threshold is calibrated at
    # 1% FPR on other benign flows); attacks alert far more often (a small model, 2 epochs).
    truth = [r.rsplit(",", 1)[1] for r in federation["flows"].read_text().splitlines()[1:]]
    hit = Counter(truth[a["phalanx"]["input"]["row"]] != "benign" for a in alerts)
    n_attack = sum(t != "benign" for t in truth)
    benign_rate = hit[False] / (len(truth) - n_attack)
    assert benign_rate < 0.05
    assert hit[True] / n_attack > 5 * benign_rate


def test_a_folder_skips_files_in_no_known_format_and_scores_the_rest(
    federation: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "captures"
    folder.mkdir()
    (folder / "flows.csv").write_bytes(federation["flows"].read_bytes())
    (folder / "README.txt").write_text("Captures of 2026-11-29, see the ticket.\n")
    out = tmp_path / "alerts.jsonl"
    base = ["detect", "-m", str(federation["mlp"]), "--trust", str(federation["ca"])]
    res = runner.invoke(app, [*base, "-i", str(folder), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "skipped" in res.output and "README.txt" in res.output
    assert "3,000" in res.output  # every flow of the CSV was scored
    (folder / "flows.csv").unlink()
    res = runner.invoke(app, [*base, "-i", str(folder), "-o", str(out)])
    assert res.exit_code == 2
    assert "no flow files to score" in res.output


def test_calibrate_on_local_benign_traffic_meets_the_fpr_there(
    federation: dict[str, Path], tmp_path: Path
) -> None:
    benign_day = FlowBatch.concat(generate_federation(2, 3000, seed=7))
    benign_day = benign_day.take(benign_day.category.astype(str) == "benign")
    local = tmp_path / "our-benign.csv"
    _write_netflow_csv(local, benign_day)
    out = tmp_path / "alerts.jsonl"
    base = ["detect", "-m", str(federation["mlp"]), "--trust", str(federation["ca"])]
    res = runner.invoke(
        app,
        [*base, "-i", str(local), "-o", str(out), "--fpr", "0.05", "--calibrate-on", str(local)],
    )
    assert res.exit_code == 0, res.output
    assert "local benign flows" in res.output
    # scored on the very traffic it was calibrated on: at most 5% of it alerts
    assert 0 < len(_alerts(out)) <= 0.05 * len(benign_day)
    # the model was not touched: its signature still verifies
    res = runner.invoke(app, [*base, "-i", str(local), "-o", str(out)])
    assert res.exit_code == 0 and "valid" in res.output
    res = runner.invoke(
        app, [*base, "-i", str(local), "-o", str(out), "--calibrate-on", str(local)]
    )
    assert res.exit_code == 2 and "needs --fpr" in res.output


def test_tampered_unsigned_and_foreign_models_are_refused(
    federation: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(federation["mlp"], copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["metadata"]["thresholds"]["default"] = 0.99999  # silence the detector
    (copy / "model.json").write_text(json.dumps(meta))
    base = ["detect", "-i", str(federation["flows"]), "-o", str(tmp_path / "a.jsonl")]
    trust = ["--trust", str(federation["ca"] / "ca.crt")]
    res = runner.invoke(app, [*base, "-m", str(copy), *trust])
    assert res.exit_code == 2
    assert "refusing model" in res.output and "model.json" in res.output
    (copy / "model.sig").unlink()
    res = runner.invoke(app, [*base, "-m", str(copy), *trust])
    assert res.exit_code == 2 and "unsigned" in res.output
    res = runner.invoke(app, [*base, "-m", str(copy), *trust, "--allow-unsigned"])
    assert res.exit_code == 0, res.output
    assert "WARNING" in res.output
    sign_bundle(copy, Signer.throwaway())
    res = runner.invoke(app, [*base, "-m", str(copy), *trust])
    assert res.exit_code == 2 and "refusing model" in res.output
    res = runner.invoke(app, [*base, "-m", str(federation["mlp"])])  # no trust root given
    assert res.exit_code == 2 and "--trust" in res.output


def test_thresholds_fpr_choice_and_errors(federation: dict[str, Path], tmp_path: Path) -> None:
    base = ["detect", "-m", str(federation["mlp"]), "-i", str(federation["flows"])]
    base += ["-o", str(tmp_path / "a.jsonl"), "--trust", str(federation["ca"])]
    res = runner.invoke(app, [*base, "--fpr", "0.2"])
    assert res.exit_code == 2 and "stored FPRs: 0.001, 0.01" in res.output
    res = runner.invoke(app, [*base, "--fpr", "0.01", "--threshold", "0.5"])
    assert res.exit_code == 2
    strict = runner.invoke(app, [*base, "--threshold", "0.999999"])
    loose = runner.invoke(app, [*base, "--threshold", "0.0"])
    assert strict.exit_code == loose.exit_code == 0
    assert len(_alerts(tmp_path / "a.jsonl")) == 3000  # every flow scores above 0
    assert choose_threshold({"default": 0.5, "fpr=0.01": 0.9}, fpr=0.01) == (
        0.9,
        "calibrated at FPR 0.01",
    )


def test_threads_write_the_same_alerts_and_zero_is_refused(
    federation: dict[str, Path], tmp_path: Path
) -> None:
    base = ["detect", "-m", str(federation["mlp"]), "-i", str(federation["flows"])]
    base += ["--trust", str(federation["ca"]), "--threshold", "0.3", "--chunk-rows", "5000"]
    docs = []
    for threads in ("1", "2"):
        out = tmp_path / f"t{threads}.jsonl"
        res = runner.invoke(app, [*base, "-o", str(out), "--threads", threads])
        assert res.exit_code == 0, res.output
        alerts = _alerts(out)
        for a in alerts:  # detection time (also @timestamp: CSV flows carry no start time)
            a["event"].pop("created")
            a.pop("@timestamp")
        docs.append(alerts)
    assert len(docs[0]) > 100 and docs[0] == docs[1]
    res = runner.invoke(app, [*base, "-o", str(tmp_path / "x.jsonl"), "--threads", "0"])
    assert res.exit_code == 2 and "--threads must be at least 1" in res.output


def test_prefetched_keeps_order_raises_producer_errors_and_stops_early() -> None:
    from phalanx.cli.detect import prefetched

    assert list(prefetched(iter(range(50)), depth=2)) == list(range(50))

    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("bad chunk at line 7")

    got: list[int] = []
    with pytest.raises(ValueError, match="line 7"):
        got.extend(prefetched(failing()))
    assert got == [1]
    produced: list[int] = []

    def counted() -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    for item in prefetched(counted(), depth=2):
        if item == 3:
            break
    assert len(produced) <= 3 + 2 + 2  # the consumer's, the queue's and the one in hand


def test_model_inspect_and_run_directory(federation: dict[str, Path]) -> None:
    res = runner.invoke(
        app,
        [
            "model",
            "inspect",
            "-m",
            str(federation["mlp"]),
            "--trust",
            str(federation["ca"]),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["signature"]["state"] == "valid"
    assert info["signature"]["signer"] == "phalanx://north-isac/coordinator/hub"
    assert info["provenance"]["round"] == 7 and info["class"] == "MLPClassifier"
    assert set(info["thresholds"]) == {"default", "fpr=0.001", "fpr=0.01"}
    res = runner.invoke(app, ["model", "inspect", "-m", str(federation["root"])])
    assert res.exit_code == 2 and "no model bundle here" in res.output


def test_autoencoder_alerts_and_onnx_export(tmp_path: Path) -> None:
    import onnx

    bundle = _bundle(tmp_path / "ae-run" / "model", "autoencoder", flows=1500)
    flows = tmp_path / "flows.csv"
    day = FlowBatch.concat(generate_federation(1, 800, seed=3))
    _write_netflow_csv(flows, day)
    out = tmp_path / "ae.jsonl"
    res = runner.invoke(
        app,
        ["detect", "-m", str(tmp_path / "ae-run"), "-i", str(flows), "-o", str(out),
         "--allow-unsigned", "--chunk-rows", "100"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    alerts = _alerts(out)
    assert alerts and {a["phalanx"]["category"] for a in alerts} == {"other"}
    assert all(a["phalanx"]["model"]["kind"] == "autoencoder" for a in alerts)
    onnx_path = tmp_path / "ae.onnx"
    res = runner.invoke(app, ["export", "-m", str(bundle), "--onnx", str(onnx_path)])
    assert res.exit_code == 0, res.output
    # onnxruntime parity is tested in tests/models/test_onnx.py; no runtime session here: its
    # native thread pool would outlive the test, and nfstream forks its meter processes.
    graph = onnx.load(str(onnx_path)).graph
    assert [i.name for i in graph.input] == ["features"]
    assert [o.name for o in graph.output] == ["score"]


def test_hybrid_model_alerts_explains_and_calibrates(tmp_path: Path) -> None:
    run = tmp_path / "hybrid-run"
    res = runner.invoke(
        app, ["simulate", "-n", "2", "-r", "2", "--synthetic-flows", "3000", "--model", "hybrid",
              "--out", str(run)]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    flows = tmp_path / "flows.csv"
    _write_netflow_csv(flows, FlowBatch.concat(generate_federation(1, 1500, seed=5)))
    out = tmp_path / "hybrid.jsonl"
    base = ["detect", "-m", str(run), "-i", str(flows), "-o", str(out), "--allow-unsigned"]
    res = runner.invoke(app, base)
    assert res.exit_code == 0, res.output
    assert "hybrid" in res.output
    alerts = _alerts(out)
    assert alerts and all(a["phalanx"]["model"]["kind"] == "hybrid" for a in alerts)
    assert all(a["phalanx"]["score"] > 1.0 for a in alerts)  # the OR rule: combined score > 1
    assert all(a["phalanx"]["top_features"] for a in alerts[:50])
    # A member sets the anomaly part's threshold on its own benign traffic.
    benign = tmp_path / "benign.csv"
    day = FlowBatch.concat(generate_federation(1, 3000, seed=6))
    _write_netflow_csv(benign, day.take(day.category == "benign"))
    res = runner.invoke(app, [*base, "--fpr", "0.05", "--calibrate-on", str(benign)])
    assert res.exit_code == 0, res.output
    assert "anomaly part calibrated at FPR 0.05" in res.output
    res = runner.invoke(app, ["export", "-m", str(run), "--onnx", str(tmp_path / "h.onnx")])
    assert res.exit_code == 2 and "hybrid" in res.output
    # As a coordinator publishes it: no anomaly threshold. Refused unless the member calibrates.
    meta_path = run / "model" / "model.json"
    meta = json.loads(meta_path.read_text())
    del meta["fitted"]["autoencoder"]["threshold_"]
    meta_path.write_text(json.dumps(meta))
    res = runner.invoke(app, base)
    assert (
        res.exit_code == 2
        and "no anomaly threshold" in res.output
        and "--calibrate-on" in res.output
    )
    res = runner.invoke(app, [*base, "--fpr", "0.05", "--calibrate-on", str(benign)])
    assert res.exit_code == 0, res.output


# --- must show: real captures and logs, a model trained on synthetic traffic --------------------


@pytest.fixture(scope="module")
def synthetic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of `phalanx simulate` on synthetic traffic: 4 organizations, 5 FedAvg rounds."""
    run = tmp_path_factory.mktemp("synth") / "run"
    args = ["simulate", "-n", "4", "-r", "5", "--synthetic-flows", "20000", "--out", str(run)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return run


def _detect(model: Path, path: Path, tmp: Path) -> tuple[int, Counter[str]]:
    out = tmp / f"{path.name}.jsonl"
    res = runner.invoke(
        app, ["detect", "-m", str(model), "-i", str(path), "-o", str(out), "--allow-unsigned",
              "--fpr", "0.01"]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "WARNING" in res.output  # simulation runs are unsigned
    flows = int(res.output.split("flows ")[1].split("│")[1].replace(",", "").strip())
    return flows, Counter(a["phalanx"]["category"] for a in _alerts(out))


@pytest.mark.slow
@pytest.mark.datasets
@pytest.mark.parametrize(
    ("name", "kind", "share"),
    [
        ("pcaps/zeek/sshguess.pcap", "brute-force", 0.5),
        ("pcaps/stratosphere-slips/test12-icmp-portscan.pcap", "recon", 0.9),
        ("zeek-logs/stratosphere-slips/portscan-vertical.conn.log", "recon", 0.5),
    ],
)
def test_attack_captures_raise_alerts_of_their_kind(
    synthetic_model: Path, datasets: Path, tmp_path: Path, name: str, kind: str, share: float
) -> None:
    flows, cats = _detect(synthetic_model, datasets / name, tmp_path)
    assert cats, f"no alerts on {name}"
    assert cats.most_common(1)[0][0] == kind, cats
    assert sum(cats.values()) >= share * flows, (flows, cats)


@pytest.mark.slow
@pytest.mark.datasets
@pytest.mark.parametrize(
    "name",
    [
        "pcaps/stopddos/pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng",
        "pcaps/stopddos/pkt.TCP.synflood.spoofed.pcap",
        "pcaps/stopddos/amp.TCP.reflection.SYNACK.pcap",
    ],
)
def test_flood_captures_alert_on_most_flows(
    synthetic_model: Path, datasets: Path, tmp_path: Path, name: str
) -> None:
    # Per flow, one spoofed SYN looks like one scan probe (the model says recon); the alert
    # correlation sees thousands of sources on one target and names the flood (ADR 0011).
    flows, cats = _detect(synthetic_model, datasets / name, tmp_path)
    assert sum(cats.values()) >= 0.9 * flows, (flows, cats)
    assert cats.most_common(1)[0][0] in {"dos", "ddos"}, cats
    assert cats["ddos"] + cats["dos"] >= 0.9 * sum(cats.values()), cats
    alerts = _alerts(tmp_path / f"{Path(name).name}.jsonl")
    moved = [a for a in alerts if "correlation" in a["phalanx"]]
    was = Counter(a["phalanx"]["model_category"] for a in moved)
    assert set(was) <= {"recon", "dos"} and was.most_common(1)[0][0] == "recon", was
    assert moved[0]["phalanx"]["correlation"]["rule"] == "fan-in"
    assert moved[0]["rule"]["name"] == "phalanx-ddos"
    assert moved[0]["threat"]["technique"]["id"] == ["T1498"]
    # Without correlation the per-flow labels stand: the flood reads as a scan.
    out = tmp_path / "raw.jsonl"
    res = runner.invoke(
        app, ["detect", "-m", str(synthetic_model), "-i", str(datasets / name), "-o", str(out),
              "--allow-unsigned", "--fpr", "0.01", "--no-correlate"]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    raw = Counter(a["phalanx"]["category"] for a in _alerts(out))
    assert raw.most_common(1)[0][0] == "recon", raw


@pytest.mark.slow
@pytest.mark.datasets
def test_benign_captures_raise_few_alerts(
    synthetic_model: Path, datasets: Path, tmp_path: Path
) -> None:
    total = alerts = 0
    for name in ("smtp.pcap", "workshop_2011_browse.pcap", "m57-long-49583-80.pcap", "smb2.pcap"):
        flows, cats = _detect(synthetic_model, datasets / "pcaps" / "zeek" / name, tmp_path)
        total += flows
        alerts += sum(cats.values())
    assert alerts <= 0.2 * total, (alerts, total)
