"""``treeserve drift`` on prediction logs written by the gateway's log writer, against the demo
champion's training reference in MLflow: the verdict, its outputs, and bad input."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.fixtures.drift import latest_snapshot_traffic, write_predlog
from tests.fixtures.gateway import export_champion
from training.data import DRIFTED_FEATURES
from treeserve_app import clikit

pytestmark = pytest.mark.integration
ROWS = 1500


@dataclass
class DriftCase:
    world: Any
    root: Path
    repository: Path
    same: Path
    drifted: Path
    features: list[str]
    alerts: list[dict[str, Any]]
    alert_url: str

    def env(self, predlog: Path, **extra: str) -> dict[str, str]:
        env = self.world.subprocess_env(
            {
                "TREESERVE_GATEWAY__PREDLOG_DIR": str(predlog),
                "TREESERVE_EXPORTER__REPOSITORY": str(self.repository),
                "TREESERVE_DRIFT__REPORTS_DIR": str(self.root / "reports"),
                "TREESERVE_DRIFT__TEXTFILE_PATH": str(self.root / "metrics" / "drift.prom"),
                "TREESERVE_DRIFT__ALERT_URL": self.alert_url,
                "TREESERVE_LOG_LEVEL": "WARNING",
            }
        )
        env.update(extra)
        return env


def _receiver(alerts: list[dict[str, Any]]) -> HTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            alerts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def case(demo_world: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriftCase]:
    """Same-world and drifted-world traffic, logged by the gateway's writer for the champion."""
    from training.api import generate_data

    root = tmp_path_factory.mktemp("drift")
    s = demo_world.settings
    repository = root / "model_repository"
    version = export_champion(s, repository)
    drifted_data = root / "drifted-data"
    generate_data(s, n_customers=1500, seed=11, drift=True, out=drifted_data)
    same, drifted = root / "predlog-same", root / "predlog-drifted"
    for folder, stats, seed in (
        (same, demo_world.data_dir / "customer_stats.parquet", 1),
        (drifted, drifted_data / "customer_stats.parquet", 2),
    ):
        traffic = latest_snapshot_traffic(
            stats, repository, demo_world.model_name, version, s.gateway, rows=ROWS, seed=seed
        )
        write_predlog(folder, demo_world.model_name, version, demo_world.features, traffic, spacing_s=2.0)
    alerts: list[dict[str, Any]] = []
    server = _receiver(alerts)
    try:
        yield DriftCase(
            demo_world,
            root,
            repository,
            same,
            drifted,
            list(demo_world.features),
            alerts,
            f"http://127.0.0.1:{server.server_address[1]}/alerts",
        )
    finally:
        server.shutdown()
        server.server_close()


def _cli(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> Any:
    """``treeserve <args>`` in-process with exactly ``env`` (settings rebuilt from it)."""
    from treeserve_app.cli import app

    monkeypatch.setattr(clikit, "_settings", None)
    for key in list(__import__("os").environ):
        if key.startswith(("TREESERVE_", "MLFLOW_")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(("TREESERVE_", "MLFLOW_")):
            monkeypatch.setenv(key, value)
    return CliRunner().invoke(app, list(args))


def _latest_summary(case: DriftCase) -> dict[str, Any]:
    newest = max((case.root / "reports").iterdir(), key=lambda p: p.stat().st_mtime)
    assert (newest / "report.html").stat().st_size > 10_000
    return json.loads((newest / "summary.json").read_text())


def test_drifted_traffic_exits_3_names_the_columns_and_alerts(
    case: DriftCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _cli(monkeypatch, case.env(case.drifted), "drift", "--since", "1d")
    assert result.exit_code == 3, result.output  # 2 is click's usage error
    summary = _latest_summary(case)
    assert summary["verdict"] == "drift" and summary["current_rows"] == ROWS
    named = {c["column"] for c in summary["drifted_columns"]}
    assert set(DRIFTED_FEATURES) <= named and "days_since_signup" not in named
    assert all(
        c["method"] == "wasserstein" and c["score"] > c["threshold"] for c in summary["drifted_columns"]
    )
    assert "alert: posted" in result.output  # the payload itself is printed with -v only
    assert case.alerts and {c["column"] for c in case.alerts[-1]["drifted_columns"]} == named

    from mlflow import MlflowClient

    client = MlflowClient(
        case.world.settings.mlflow_tracking_uri, registry_uri=case.world.settings.mlflow_tracking_uri
    )
    exp = client.get_experiment_by_name("drift-monitoring")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.experiment_id == exp.experiment_id
    assert run.data.metrics["drift_share"] == pytest.approx(summary["drift_share"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"report.html", "summary.json"}
    prom = (case.root / "metrics" / "drift.prom").read_text()
    assert "treeserve_drift_detected{" in prom and "} 1.0" in prom


def test_same_world_traffic_is_not_an_alarm(case: DriftCase, monkeypatch: pytest.MonkeyPatch) -> None:
    alerts_before = len(case.alerts)
    result = _cli(monkeypatch, case.env(case.same), "drift", "--last", "1200")
    assert result.exit_code == 0, result.output
    summary = _latest_summary(case)
    assert summary["verdict"] == "ok" and summary["current_rows"] == 1200
    assert summary["drift_share"] < summary["share_threshold"]
    assert len(case.alerts) == alerts_before


def test_bad_input_is_one_clear_line(
    case: DriftCase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = _cli(monkeypatch, case.env(tmp_path / "nothing"), "drift")
    assert empty.exit_code == 1 and "has no rows in window" in empty.output
    small = _cli(monkeypatch, case.env(case.same), "drift", "--last", "100")
    assert small.exit_code == 1 and "only 100 rows" in small.output
    unknown = _cli(monkeypatch, case.env(case.same), "drift", "--version", "999")
    assert unknown.exit_code == 1 and "no version '999'" in unknown.output
    assert "Traceback" not in unknown.output

    # a log written for the same version under an older feature list
    frame = pd.read_parquet(next(case.same.rglob("part-*.parquet")))
    renamed = frame.rename(columns={case.features[0]: "legacy_feature"})
    features = ["legacy_feature", *case.features[1:]]
    write_predlog(tmp_path / "old", case.world.model_name, case.world.version, features, renamed)
    mismatch = _cli(monkeypatch, case.env(tmp_path / "old"), "drift")
    assert (
        mismatch.exit_code == 1 and "do not match" in mismatch.output and case.features[0] in mismatch.output
    )


def test_attribution_drift_is_in_the_json_html_mlflow_and_textfile(
    case: DriftCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _cli(monkeypatch, case.env(case.drifted), "drift", "--since", "1d")
    assert result.exit_code == 3, result.output
    summary = _latest_summary(case)
    shares = {a["feature"]: a for a in summary["attribution"]}
    assert set(shares) == set(case.features) and summary["attribution_note"] == ""
    assert sum(a["reference_share"] for a in shares.values()) == pytest.approx(1.0)
    assert sum(a["current_share"] for a in shares.values()) == pytest.approx(1.0)
    assert summary["attribution_drifted"] == [f for f, a in shares.items() if a["shift"] >= a["threshold"]]
    newest = max((case.root / "reports").iterdir(), key=lambda p: p.stat().st_mtime)
    assert "Attribution drift" in (newest / "report.html").read_text()
    from mlflow import MlflowClient

    client = MlflowClient(
        case.world.settings.mlflow_tracking_uri, registry_uri=case.world.settings.mlflow_tracking_uri
    )
    metrics = client.get_run(summary["mlflow_run_id"]).data.metrics
    assert all(f"attribution_shift.{f}" in metrics for f in case.features)
    prom = (case.root / "metrics" / "drift.prom").read_text()
    assert "treeserve_drift_attribution_share{" in prom and "treeserve_drift_attribution_drifted{" in prom
