"""The Airflow DAG folder as Airflow itself reads it (``DagBag`` in ``.venv-airflow``): no import
errors, the pipeline's tasks and edges, nothing heavy imported at parse time, the failure
callback's one-line reason reaching a webhook, and the commands of docs/operations/airflow.md."""

from __future__ import annotations

import json
import os
import re
import shlex
import sqlite3
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.fixtures.airflow import AIRFLOW_VENV, CHECKOUT, DAG_ID, DAGS_FOLDER, DAGS_TEST, run_airflow_python
from tests.unit.deploy.conftest import COMPOSE, ENV_EXAMPLE, docker_compose
from tests.unit.docs.test_documented_commands import shell_lines

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


DOC = CHECKOUT / "docs" / "operations" / "airflow.md"

# Runs the page's ``airflow ...`` lines in order in one interpreter (the console script's own
# entry point; one Airflow import instead of one per command).
_RUN_LINES = """
import json, shlex, sys
from airflow.__main__ import main
for line in json.loads(sys.argv[1]):
    sys.argv = shlex.split(line, comments=True)
    print("$", line, flush=True)
    try:
        main()
    except SystemExit as e:
        if e.code not in (0, None):
            raise
from airflow.models.variable import Variable
print("treeserve_retries =", Variable.get("treeserve_retries"))
"""


def test_the_commands_of_the_airflow_page_run(tmp_path: Path) -> None:
    lines = shell_lines(DOC)
    exports = [ln for ln in lines if ln.startswith("export ")]
    airflow = [ln for ln in lines if ln.startswith(".venv-airflow/bin/airflow ")]
    compose = [ln for ln in lines if ln.startswith("docker compose ")]
    makes = [ln for ln in lines if ln.startswith("make ")]
    assert len(exports) == 1 and airflow and compose and makes
    assert len(exports) + len(airflow) + len(compose) + len(makes) == len(lines), "a command no test runs"
    # `make venv venv-airflow`: the targets exist (test_documented_commands) and made this venv
    assert all(t in ("venv", "venv-airflow") for ln in makes for t in ln.split()[1:])
    # `airflow dags test`: the end-to-end test runs exactly this, with a logical date
    dags_test = [ln for ln in airflow if " dags test " in ln]
    assert [shlex.split(ln, comments=True)[1:] for ln in dags_test] == [DAGS_TEST]
    # every other line, in order, in a checkout-shaped scratch folder with the page's environment
    (tmp_path / "deploy").symlink_to(CHECKOUT / "deploy")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TREESERVE_", "MLFLOW_"))}
    for word in shlex.split(exports[0])[1:]:
        key, value = word.split("=", 1)
        env[key] = value.replace("$PWD", str(tmp_path))
    rest = [ln.removeprefix(".venv-airflow/bin/") for ln in airflow if ln not in dags_test]
    done = subprocess.run(
        [str(AIRFLOW_VENV / "bin" / "python"), "-c", _RUN_LINES, json.dumps(rest)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "treeserve_retries = 1" in done.stdout
    with sqlite3.connect(tmp_path / "var" / "airflow" / "airflow.db") as db:
        assert db.execute("SELECT dag_id FROM dag WHERE dag_id = ?", (DAG_ID,)).fetchone() == (DAG_ID,)
        conf = db.execute("SELECT conf FROM dag_run WHERE dag_id = ?", (DAG_ID,)).fetchone()
    assert conf is not None and json.loads(conf[0]) == {"force_retrain": True}
    # `docker compose --profile airflow up -d`: the profile's services, as docker-compose reads them
    assert compose == ["docker compose --profile airflow up -d"]
    services = subprocess.run(
        [docker_compose(), "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "--profile", "airflow",
         "config", "--services"],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert services.returncode == 0, services.stderr
    assert {"airflow-init", "airflow-apiserver", "airflow-dag-processor", "airflow-scheduler"} <= set(
        services.stdout.split()
    )
    assert re.search(r"127\.0\.0\.1:\$\{AIRFLOW_PORT:-8090\}", COMPOSE.read_text())
