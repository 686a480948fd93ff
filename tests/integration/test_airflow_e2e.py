"""``airflow dags test churn_model_pipeline`` end to end with real Airflow (``.venv-airflow``, SQLite
metadata in a temporary AIRFLOW_HOME), the DAG's tasks running treeserve in ``.venv``, the session's
Triton and a world of its own (model ``churn-airflow-e2e``): a clean world skips retraining, a
drifted one retrains, gates, promotes and ends with the new champion served and scored.

The DAG runs on its embedded defaults; the world reaches it through ``TREESERVE_*`` variables, as
a deployment's environment would.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from drift.score_store import open_sink
from drift.scoring import ServingModel
from tests.fixtures.airflow import DAG_ID, DAGS_TEST, run_airflow
from tests.fixtures.drift import latest_snapshot_traffic, write_predlog
from tests.fixtures.feast_data import world_env
from tests.fixtures.triton import served_world
from treeserve_app.settings import Settings
from treeserve_app.steps import serving_version

pytestmark = pytest.mark.integration
MODEL = "churn-airflow-e2e"
CUSTOMERS = 1500
TRAFFIC_ROWS = 900


def _env(settings: Settings, triton: Any) -> dict[str, str]:
    return world_env(settings) | {
        "TREESERVE_EXPORTER__REPOSITORY": str(triton.repository),
        "TREESERVE_TRITON__HTTP_PORT": str(triton.http_port),
        "TREESERVE_TRITON__GRPC_PORT": str(triton.grpc_port),
        "TREESERVE_SYNC__MODELS": json.dumps([MODEL]),
        "TREESERVE_GATEWAY__PREDLOG_DIR": str(settings.path(settings.gateway.predlog_dir)),
        "TREESERVE_DRIFT__LOG_TO_MLFLOW": "false",
        "TREESERVE_TRAINING__N_ESTIMATORS": str(settings.training.n_estimators),
        # a failing task retries on the defaults' count, without the production back-off
        "AIRFLOW_VAR_TREESERVE_RETRY_DELAY_S": "1",
    }


def _serve_traffic(settings: Settings, version: str) -> None:
    """What the gateway would log for the online store's customers, scored by ``version``."""
    predlog = settings.path(settings.gateway.predlog_dir)
    shutil.rmtree(predlog, ignore_errors=True)  # each run judges its own week of traffic
    traffic = latest_snapshot_traffic(
        settings.path(settings.data.data_dir) / "customer_stats.parquet",
        settings.path(settings.exporter.repository),
        MODEL,
        version,
        settings.gateway,
        rows=TRAFFIC_ROWS,
        seed=5,
    )
    features = ServingModel.load(settings.path(settings.exporter.repository), MODEL, version).features
    write_predlog(predlog, MODEL, version, features, traffic, spacing_s=2.0)


def _dags_test(airflow_home: Path, env: dict[str, str], day: date) -> dict[str, Any]:
    """Run the DAG once for ``day``; task states and return values of that run."""
    t0 = time.perf_counter()
    done = run_airflow(airflow_home, *DAGS_TEST, day.isoformat(), env=env)
    wall_s = time.perf_counter() - t0
    output = done.stdout + done.stderr
    (airflow_home / f"dags-test-{day}.log").write_text(output)
    errors = [ln for ln in output.splitlines() if re.search(r"error|failed|Traceback", ln, re.I)]
    assert done.returncode == 0, "\n".join(errors[-40:])
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        (run_id,) = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (DAG_ID,)
        ).fetchone()
        states = dict(
            db.execute(
                "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?", (DAG_ID, run_id)
            )
        )
        xcoms = {
            task: json.loads(value)
            for task, value in db.execute(
                "SELECT task_id, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'",
                (DAG_ID, run_id),
            )
        }
        (run_state,) = db.execute("SELECT state FROM dag_run WHERE run_id = ?", (run_id,)).fetchone()
    print(f"airflow dags test {DAG_ID} {day}: {run_state} in {wall_s:.1f} s")
    return {"state": run_state, "tasks": states, "xcom": xcoms, "output": output}


# Two full DAG runs (each task a fresh treeserve interpreter): minutes on a loaded 2-core machine.
@pytest.mark.timeout(1800)
def test_a_clean_world_skips_retraining_and_a_drifted_one_serves_a_new_champion(
    triton_server: Any, airflow_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from training.api import generate_data, materialize

    home = tmp_path_factory.mktemp("airflow-world")
    settings, v1 = served_world(triton_server, home, MODEL, n_customers=CUSTOMERS, seed=21)
    env = _env(settings, triton_server)
    today = datetime.now(UTC).date()

    # 1. the world the champion was trained on: no drift, no retraining, scores written
    _serve_traffic(settings, v1)
    clean = _dags_test(airflow_home, env, today - timedelta(days=1))
    assert clean["state"] == "success", clean["output"][-4000:]
    assert clean["xcom"]["drift_check"]["detail"]["verdict"] == "ok"
    assert clean["tasks"]["skip_retrain"] == "success"
    assert {clean["tasks"][t] for t in ("train", "gate", "promote", "wait_served")} == {"skipped"}
    assert clean["xcom"]["batch_score"]["detail"]["model_version"] == v1
    assert serving_version(settings, MODEL) == v1

    # 2. the population shifts: drift -> retrain -> gate -> promote -> served -> scored
    generate_data(settings, n_customers=CUSTOMERS, seed=22, drift=True)
    materialize(settings)
    _serve_traffic(settings, v1)
    drifted = _dags_test(airflow_home, env, today)
    assert drifted["state"] == "success", drifted["output"][-4000:]
    drift = drifted["xcom"]["drift_check"]["detail"]
    assert drift["verdict"] == "drift" and "order_count_90d" in drift["drifted_columns"]
    assert drifted["tasks"]["skip_retrain"] == "skipped"
    v2 = str(drifted["xcom"]["train"]["detail"]["version"])
    assert v2 != v1
    assert drifted["xcom"]["promote"]["detail"]["previous"] == v1
    assert drifted["xcom"]["wait_served"]["detail"]["version"] == v2
    # Triton routes champion to v2 and answers for it; the day's batch scores come from v2
    assert serving_version(settings, MODEL) == v2
    ready = httpx.get(f"http://127.0.0.1:{triton_server.http_port}/v2/models/{MODEL}/versions/{v2}/ready")
    assert ready.status_code == 200
    scores = open_sink(settings).read_partition(MODEL, today)
    assert set(scores["model_version"].astype(str)) == {v2}
    # the score check compared today's scores with yesterday's (v1 on the clean world)
    check = drifted["xcom"]["score_check"]
    assert (
        check["status"] in ("ok", "warning")
        and check["detail"]["previous_date"] == (today - timedelta(days=1)).isoformat()
    )
