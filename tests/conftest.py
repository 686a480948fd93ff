"""Shared pytest set-up. Fixtures live in tests/fixtures/, one module per outside system."""

from __future__ import annotations

import os

# In-process XGBoost/ORT on a 2-core box: threads fight without this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

pytest_plugins = [
    "tests.fixtures.common",
    "tests.fixtures.feast_data",
    "tests.fixtures.mlflow_server",
    "tests.fixtures.triton",
    "tests.fixtures.gateway",
    "tests.fixtures.drift",
]
