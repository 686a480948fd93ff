"""The Grafana dashboard against live ``/metrics``: a real Triton and a real gateway process.

The unit tests check the dashboard against the metric definitions in the code; here the same
names must appear in what the running servers actually expose (Triton's names are not ours).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.flavors import VersionArtifacts, get_flavor
from exporter.triton_server import TritonServer
from tests.unit.deploy.test_observability import (
    DASHBOARD,
    TRITON_METRICS,
    dashboard_exprs,
    metric_names,
    series_names,
)
from treeserve import contract
from treeserve import repository as repo_mod
from treeserve.procs import free_port, http_ok, start_background, stop_pid, wait_until
from treeserve.repository import TritonModelSpec

pytestmark = pytest.mark.integration

MODEL = "deploy-metrics"
FEATURES = ("tenure_days", "orders_30d", "spend_30d")


def _scrape(url: str) -> list[Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return list(text_string_to_metric_families(r.read().decode()))


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _raw_samples(url: str) -> list[tuple[str, dict[str, str], float]]:
    """(series name, labels, value) exactly as exposed (the client parser renames counters)."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def _dashboard_metrics(prefix: str) -> set[str]:
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    return {m for e in exprs for m in metric_names(e) if m.startswith(prefix)}


def _install_small_model(repo: Path) -> None:
    """One binary XGBoost version, exported the exporter's way (python-ort flavour), as ``MODEL`` v1."""
    import xgboost as xgb

    from exporter.convert import convert_to_onnx
    from exporter.source import SourceModel
    from exporter.validate import check_parity, parity_inputs

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, len(FEATURES))).astype(np.float32)
    y = (x[:, 0] + rng.normal(scale=0.5, size=len(x)) > 0).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(x, label=y, feature_names=list(FEATURES)),
        num_boost_round=10,
    )
    src = SourceModel(
        name=MODEL,
        version="1",
        run_id="deploy-test",
        booster=booster,
        features=list(FEATURES),
        task="binary",
        n_classes=2,
        objective="binary:logistic",
        best_iteration=None,
        source_sha256="0" * 64,
        reference=x[:64].astype(np.float64),
    )
    onnx_bytes = convert_to_onnx(src).SerializeToString()
    inputs = parity_inputs(src, rows=64)
    report = check_parity(src, onnx_bytes, inputs, proba_atol=1e-5, regression_rtol=1e-5)
    spec = TritonModelSpec(
        name=MODEL, task="binary", features=FEATURES, versions=(1,), routing={"champion": "1"}
    )
    folder = repo_mod.version_dir(repo, MODEL, 1)
    folder.mkdir(parents=True)
    get_flavor("python-ort").write_version_files(VersionArtifacts(spec=spec, onnx_model=onnx_bytes), folder)
    repo_mod.write_reference(folder, inputs, report.outputs)
    repo_mod.write_config(repo, spec, get_flavor("python-ort"))


@pytest.fixture(scope="module")
def triton_with_traffic(triton_server: TritonServer) -> TritonServer:
    """The session Triton with ``MODEL`` loaded and a few batched inferences served."""
    _install_small_model(triton_server.repository)
    triton_server.load_model(MODEL)
    triton_server.admin.wait_version_ready(MODEL, 1)
    rows = np.random.default_rng(2).normal(size=(8, len(FEATURES))).astype(np.float32)
    for n in (1, 3, 8):
        out = triton_server.admin.infer(MODEL, 1, rows[:n], [contract.OUTPUT_PROBABILITIES])
        assert out[contract.OUTPUT_PROBABILITIES].shape == (n, 2)
    return triton_server


def test_triton_exports_every_metric_the_dashboard_reads(triton_with_traffic: TritonServer) -> None:
    samples = [
        (n, v)
        for n, labels, v in _raw_samples(triton_with_traffic.metrics_url)
        if labels.get("model") == MODEL
    ]
    names = {n for n, _ in samples}
    wanted = _dashboard_metrics("nv_")
    assert wanted, "the dashboard should read Triton's metrics"
    assert wanted <= TRITON_METRICS
    assert wanted <= names, f"missing from Triton's /metrics: {sorted(wanted - names)}"
    assert names >= TRITON_METRICS, sorted(TRITON_METRICS - names)
    # The values are live: 12 rows in 3 requests, each executed at least once.
    values = {
        name: sum(v for n, v in samples if n == name)
        for name in ("nv_inference_count", "nv_inference_exec_count", "nv_inference_request_success")
    }
    assert values["nv_inference_count"] == 12
    assert values["nv_inference_request_success"] == 3
    assert 1 <= values["nv_inference_exec_count"] <= 3


@pytest.fixture(scope="module")
def gateway_metrics_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``treeserve gateway`` process (no model installed: metrics do not depend on one)."""
    home = tmp_path_factory.mktemp("deploy-gateway")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TREESERVE_", "MLFLOW_", "PROMETHEUS_"))}
    env.update(TREESERVE_HOME=str(home), OMP_NUM_THREADS="1")
    treeserve = str(Path(sys.executable).with_name("treeserve"))
    proc = start_background(
        [treeserve, "gateway", "--port", str(port), "--grpc-port", "0", "--workers", "1"],
        log_file=home / "gateway.log",
        env=env,
        cwd=home,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        ok = wait_until(lambda: http_ok(base + "/healthz"), timeout_s=60, alive=lambda: proc.poll() is None)
        assert ok, (home / "gateway.log").read_text()[-2000:]
        yield base
    finally:
        stop_pid(proc.pid, timeout_s=10)


def test_gateway_exports_every_metric_the_dashboard_reads(gateway_metrics_url: str) -> None:
    # One request so labelled series carry samples, not only their declarations.
    req = urllib.request.Request(
        gateway_metrics_url + "/v1/models/churn-prediction/predict",
        data=json.dumps({"entities": [{"customer_id": "cust-000001"}]}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    # No model is installed: an error answer is still a counted request.
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(req, timeout=10).close()
    families = _scrape(gateway_metrics_url + "/metrics")
    exposed = series_names(families)
    wanted = _dashboard_metrics("treeserve_gateway_")
    assert wanted, "the dashboard should read the gateway's metrics"
    assert wanted <= exposed, f"missing from the gateway's /metrics: {sorted(wanted - exposed)}"
    requests = [s for fam in families for s in fam.samples if s.name == "treeserve_gateway_requests_total"]
    assert sum(s.value for s in requests) >= 1
