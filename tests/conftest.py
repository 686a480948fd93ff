"""Shared pytest set-up. Fixtures live in tests/fixtures/, one module per outside system."""

from __future__ import annotations

import os
import sys

import pytest

# In-process XGBoost/ORT on a 2-core box: threads fight without this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

pytest_plugins = [
    "tests.fixtures.common",
    "tests.fixtures.feast_data",
    "tests.fixtures.mlflow_server",
    "tests.fixtures.triton",
    "tests.fixtures.gateway",
    "tests.fixtures.drift",
    "tests.fixtures.airflow",
]


@pytest.fixture(autouse=True)
def _no_mlflow_state_between_tests() -> None:
    """MLflow's fluent API keeps an active run and experiment per process: start every test clean."""
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is None:
        return
    while fluent.active_run() is not None:
        fluent.end_run()
    fluent._active_experiment_id = None  # type: ignore[attr-defined]
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
