"""treeserve's scheduled loop as an Airflow DAG: ``churn_model_pipeline``.

    resolve_config -> materialize -> drift_check -> decide_retrain -+-> train -> gate -> promote -> wait_served -+
                                                                     +-> skip_retrain ----------------------------+
                                                                                 -> batch_score -> score_check

Every step runs treeserve's own code (``treeserve_app.airflow_tasks`` -> ``treeserve_app.steps``, the functions behind
``treeserve pipeline run``) in treeserve's virtual environment through ``@task.external_python``:
Airflow's and treeserve's dependency pins conflict, so they live in two environments. This file
imports nothing from treeserve, so parsing it stays cheap. Results travel as small JSON dicts
through XCom.

Settings (docs/operations/airflow.md): Airflow Variables ``treeserve_python``,
``treeserve_schedule``, ``treeserve_model_name``, ``treeserve_settings``, ``treeserve_retries``,
``treeserve_retry_delay_s``, ``treeserve_alert_webhook``; per run, the conf keys ``force_retrain``,
``model_name``, ``drift_since``, ``drift_last`` and ``settings``.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, Variable, task

DAG_ID = "churn_model_pipeline"
log = logging.getLogger(__name__)


def _default_python() -> str:
    """The checkout's ``.venv/bin/python`` (this file lives in ``<checkout>/deploy/airflow/dags``)."""
    parents = Path(__file__).resolve().parents
    return (
        str(parents[3] / ".venv" / "bin" / "python")
        if len(parents) > 3
        else "/opt/treeserve/.venv/bin/python"
    )


TREESERVE_PYTHON = f"{{{{ var.value.get('treeserve_python', '{_default_python()}') }}}}"
SCHEDULE = Variable.get("treeserve_schedule", default="@daily")
RETRIES = int(Variable.get("treeserve_retries", default="2"))
RETRY_DELAY_S = float(Variable.get("treeserve_retry_delay_s", default="300"))


def _reason(exc: BaseException | None) -> str:
    """The last non-empty line of the error: for a task run in treeserve's environment, treeserve's
    own message (Airflow appends the body's exception to its exit status)."""
    lines = [ln.strip() for ln in str(exc or "unknown error").splitlines() if ln.strip()]
    last = lines[-1] if lines else type(exc).__name__
    exit_status = re.search(r"returned non-zero exit status (\d+)", last)
    if exit_status:  # the interpreter died before the body ran (no message of its own)
        return f"the task's process exited with status {exit_status.group(1)} before its step ran; see the task log"
    return last


def on_failure(context: Any) -> None:
    """Log one line naming the task and the reason; POST it to ``treeserve_alert_webhook`` if set."""
    ti = context["ti"]
    reason = _reason(context.get("exception"))
    log.error("%s: task %s failed in run %s: %s", DAG_ID, ti.task_id, ti.run_id, reason)
    url = Variable.get("treeserve_alert_webhook", default="")
    if not url:
        return
    body = {"dag_id": DAG_ID, "task_id": ti.task_id, "run_id": ti.run_id, "reason": reason}
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5.0):
            pass
    except OSError as e:
        log.warning("%s: alert webhook %s failed: %s", DAG_ID, url, e)


# The tasks that run their body in treeserve's virtual environment. Airflow ships the body's source
# to that interpreter without its decorator: the decorator must be `@task.external_python` itself.
IN_TREESERVE: dict[str, Any] = {"python": TREESERVE_PYTHON, "expect_airflow": False}


with DAG(
    dag_id=DAG_ID,
    description="materialize -> drift -> retrain when needed -> gate -> promote -> serve -> batch score",
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # runs move the champion alias: never two at once
    default_args={
        "retries": RETRIES,
        "retry_delay": timedelta(seconds=RETRY_DELAY_S),
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": on_failure,
    },
    params={
        "force_retrain": Param(False, type="boolean", description="Retrain even without drift."),
        "model_name": Param(
            None, type=["null", "string"], description="Registered model (Variable/treeserve default)."
        ),
        "drift_since": Param(
            None, type=["null", "string"], description="Drift window, e.g. 7d (default: treeserve's)."
        ),
        "drift_last": Param(
            None, type=["null", "integer"], description="Drift window as the last N logged rows."
        ),
        "settings": Param(
            {}, type="object", description="treeserve Settings overrides, nested like TREESERVE_ variables."
        ),
    },
    tags=["treeserve"],
    doc_md=__doc__,
) as dag:

    @task
    def resolve_config(**context: Any) -> dict[str, Any]:
        """The run's config: Variables, then the run's conf, over treeserve's defaults."""
        params = context["params"]
        overrides = Variable.get("treeserve_settings", default={}, deserialize_json=True) or {}
        for key, value in (params.get("settings") or {}).items():
            merged = overrides.get(key)
            overrides[key] = (
                {**merged, **value} if isinstance(merged, dict) and isinstance(value, dict) else value
            )
        model = params.get("model_name") or Variable.get("treeserve_model_name", default="")
        if model:
            overrides["mlflow"] = {**overrides.get("mlflow", {}), "model_name": model}
        when = context.get("logical_date") or context["dag_run"].run_after
        return {
            "settings": overrides,
            "force_retrain": bool(params.get("force_retrain")),
            "drift_since": params.get("drift_since"),
            "drift_last": params.get("drift_last"),
            "score_date": when.date().isoformat(),
        }

    @task.external_python(task_id="materialize", **IN_TREESERVE)
    def materialize(config: dict[str, Any]) -> dict[str, Any]:
        from treeserve_app import airflow_tasks as tasks

        return tasks.materialize(config)

    @task.external_python(task_id="drift_check", **IN_TREESERVE)
    def drift_check(config: dict[str, Any]) -> dict[str, Any]:
        from treeserve_app import airflow_tasks as tasks

        return tasks.drift(config)

    @task.branch_external_python(task_id="decide_retrain", **IN_TREESERVE)
    def decide_retrain(config: dict[str, Any], drift: dict[str, Any]) -> str:
        from treeserve_app import airflow_tasks as tasks

        return "train" if tasks.retrain_reason(config, drift) else "skip_retrain"

    @task.external_python(task_id="train", **IN_TREESERVE)
    def train(config: dict[str, Any]) -> dict[str, Any]:
        from treeserve_app import airflow_tasks as tasks

        return tasks.train(config)

    @task.external_python(task_id="gate", retries=0, **IN_TREESERVE)  # a refused version stays refused
    def gate(config: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
        from treeserve_app import airflow_tasks as tasks

        return tasks.gate(config, trained)

    @task.external_python(task_id="promote", **IN_TREESERVE)
    def promote(config: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
        from treeserve_app import airflow_tasks as tasks

        return tasks.promote(config, trained)

    @task.external_python(task_id="wait_served", **IN_TREESERVE)
    def wait_served(
        config: dict[str, Any], trained: dict[str, Any], promoted: dict[str, Any]
    ) -> dict[str, Any]:
        from treeserve_app import airflow_tasks as tasks
        from treeserve_app.commands.pipeline import sync_pass, triton_admin

        return tasks.wait_served(config, trained, promoted, sync=sync_pass, triton_for=triton_admin)

    @task.external_python(task_id="batch_score", trigger_rule="none_failed_min_one_success", **IN_TREESERVE)
    def batch_score(config: dict[str, Any]) -> dict[str, Any]:
        from treeserve_app import airflow_tasks as tasks

        return tasks.batch_score(config)

    @task.external_python(task_id="score_check", **IN_TREESERVE)
    def score_check(config: dict[str, Any], scored: dict[str, Any]) -> dict[str, Any]:
        from treeserve_app import airflow_tasks as tasks

        return tasks.score_check(config, scored)

    cfg = resolve_config()
    drifted = drift_check(cfg)
    materialize(cfg) >> drifted
    decision = decide_retrain(cfg, drifted)
    trained = train(cfg)
    checked = gate(cfg, trained)
    promoted = promote(cfg, trained)
    checked >> promoted
    served = wait_served(cfg, trained, promoted)
    skipped = EmptyOperator(task_id="skip_retrain", doc_md="No retraining this run: serving stays as it is.")
    decision >> [trained, skipped]
    scored = batch_score(cfg)
    [served, skipped] >> scored
    score_check(cfg, scored)
