"""The Airflow DAG folder as Airflow itself reads it (``DagBag`` in ``.venv-airflow``): no import
errors, the pipeline's tasks and edges, nothing heavy imported at parse time, and the failure
callback's one-line reason reaching a webhook."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.fixtures.airflow import DAG_ID, DAGS_FOLDER, run_airflow_python

pytestmark = pytest.mark.integration

_PARSE = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(DAGS_FOLDER)!r})
dag = bag.dags.get({DAG_ID!r})
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"treeserve", "drift", "training", "exporter", "mlflow", "feast", "numpy", "pandas", "xgboost"}})
print(json.dumps({{
    "import_errors": bag.import_errors,
    "dags": sorted(bag.dags),
    "edges": {{t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}} if dag else {{}},
    "retries": {{t.task_id: t.retries for t in dag.tasks}} if dag else {{}},
    "trigger_rules": {{t.task_id: getattr(t.trigger_rule, "value", t.trigger_rule) for t in dag.tasks}} if dag else {{}},
    "schedule": str(dag.schedule) if dag else None,
    "heavy_modules": heavy,
}}))
"""

# the pipeline's order, without resolve_config's edges to every task that reads the run config
PIPELINE_EDGES = {
    "materialize": ["drift_check"],
    "drift_check": ["decide_retrain"],
    "decide_retrain": ["skip_retrain", "train"],
    "train": ["gate", "promote", "wait_served"],
    "gate": ["promote"],
    "promote": ["wait_served"],
    "wait_served": ["batch_score"],
    "skip_retrain": ["batch_score"],
    "batch_score": ["score_check"],
    "score_check": [],
}


def _parse(home: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = run_airflow_python(home, _PARSE, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_dag_folder_imports_cleanly_with_the_pipeline_tasks_and_edges(tmp_path: Path) -> None:
    parsed = _parse(tmp_path)
    assert parsed["import_errors"] == {}
    assert parsed["dags"] == [DAG_ID]
    edges = parsed["edges"]
    assert {k: v for k, v in edges.items() if k != "resolve_config"} == PIPELINE_EDGES
    assert set(edges["resolve_config"]) >= {"materialize", "drift_check", "train", "batch_score"}
    # the branch's two paths meet again at batch scoring
    assert parsed["trigger_rules"]["batch_score"] == "none_failed_min_one_success"
    assert parsed["retries"]["gate"] == 0 and parsed["retries"]["train"] == 2
    assert parsed["schedule"] == "@daily"
    # parsing imports Airflow only: treeserve and its heavy dependencies load inside the tasks
    assert parsed["heavy_modules"] == []


def test_variables_set_the_schedule_and_the_retries(tmp_path: Path) -> None:
    env = {"AIRFLOW_VAR_TREESERVE_SCHEDULE": "0 3 * * 1", "AIRFLOW_VAR_TREESERVE_RETRIES": "4"}
    parsed = _parse(tmp_path, env)
    assert parsed["import_errors"] == {}
    assert parsed["schedule"] == "0 3 * * 1"
    assert parsed["retries"]["materialize"] == 4 and parsed["retries"]["gate"] == 0


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


_FAIL = f"""
import logging, sys, types
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
sys.path.insert(0, {str(DAGS_FOLDER)!r})
import churn_model_pipeline as pipeline
ti = types.SimpleNamespace(task_id="gate", run_id="manual__2026-11-30")
error = RuntimeError("Process returned non-zero exit status 1.\\npipeline step 'gate' failed: version 3 refused: vs_champion: worse")
pipeline.on_failure({{"ti": ti, "exception": error}})
"""


def test_the_failure_callback_logs_one_line_and_posts_the_reason(tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/alert"
        done = run_airflow_python(tmp_path, _FAIL, env={"AIRFLOW_VAR_TREESERVE_ALERT_WEBHOOK": url})
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr[-3000:]
    reason = "pipeline step 'gate' failed: version 3 refused: vs_champion: worse"
    assert f"churn_model_pipeline: task gate failed in run manual__2026-11-30: {reason}" in done.stdout
    assert _Hook.received == [
        {"dag_id": DAG_ID, "task_id": "gate", "run_id": "manual__2026-11-30", "reason": reason}
    ]
