"""Outputs of a drift run: Prometheus textfile, alert POST, report folder names."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from drift import outputs
from drift.summary import ColumnDrift, DriftSummary


def _summary(verdict: str = "drift") -> DriftSummary:
    cols = [
        ColumnDrift("a", "wasserstein", 0.5, 0.2, True),
        ColumnDrift("b", "wasserstein", 0.05, 0.2, False),
    ]
    return DriftSummary(
        model="m",
        version="2",
        version_source="--version",
        window="since 7 days",
        window_start=None,
        window_end=None,
        current_rows=900,
        reference_rows=3000,
        columns=cols,
        drift_share=0.5,
        share_threshold=0.3,
        score_drift=ColumnDrift("score", "wasserstein", 0.6, 0.5, True),
        quality=[],
        null_rates={"a": {"reference": 0.0, "current": 0.1}},
        verdict=verdict,  # type: ignore[arg-type]
        created_at="2026-11-27T10:00:00+00:00",
    )


def test_textfile_has_share_verdict_and_per_column_gauges(tmp_path: Path) -> None:
    path = tmp_path / "metrics" / "drift.prom"
    outputs.write_textfile(path, _summary())
    text = path.read_text()
    assert 'treeserve_drift_share{model="m",version="2"} 0.5' in text
    assert 'treeserve_drift_detected{model="m",version="2"} 1.0' in text
    assert 'treeserve_drift_column_score{column="a",method="wasserstein",model="m",version="2"} 0.5' in text


def test_alert_is_posted_as_json_and_a_dead_receiver_is_not_fatal() -> None:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        assert outputs.post_alert(url, _summary().alert_payload(), timeout_s=5)
    finally:
        server.shutdown()
        server.server_close()
    assert received[0]["drifted_columns"][0]["column"] == "a"
    assert received[0]["verdict"] == "drift"
    assert not outputs.post_alert(url, {"x": 1}, timeout_s=1)


def test_report_folders_are_unique_per_run(tmp_path: Path) -> None:
    a = outputs.timestamp_dir(tmp_path, "2026-11-27T10:00:00+00:00")
    b = outputs.timestamp_dir(tmp_path, "2026-11-27T10:00:00+00:00")
    assert a != b and a.is_dir() and b.is_dir()
    outputs.write_report(a, _summary(), None)
    assert json.loads((a / "summary.json").read_text())["n_drifted"] == 1
