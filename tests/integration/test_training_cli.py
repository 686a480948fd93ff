"""The training CLI end to end on embedded defaults, and its answers to bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def invoke(args: list[str], env: dict[str, str]) -> Any:
    """Run ``treeserve ARGS`` in-process with ``env`` (settings rebuilt for this call)."""
    from typer.testing import CliRunner

    from treeserve_app import clikit
    from treeserve_app.cli import app

    clean = {k: None for k in os.environ if k.startswith(("TREESERVE_", "MLFLOW_"))}
    clikit._settings = None
    try:
        return CliRunner().invoke(app, args, env={**clean, **env})
    finally:
        clikit._settings = None


def test_embedded_defaults_end_to_end(tmp_path: Path) -> None:
    env = {"TREESERVE_HOME": str(tmp_path), "TREESERVE_TRAINING__N_ESTIMATORS": "150"}
    steps = [
        (["data", "generate", "--customers", "600", "--seed", "3"], "600 customers"),
        (["features", "apply"], "FeatureService:churn_model"),
        (["features", "materialize"], "sqlite online store"),
        (["train"], "registered churn-prediction version 1"),
        (["promote", "churn-prediction", "1"], "gate passed: churn-prediction @champion -> version 1"),
        (
            ["promote", "churn-prediction", "1"],
            "churn-prediction version 1 is already champion; nothing to do",
        ),
    ]
    for args, needle in steps:
        result = invoke(args, env)
        assert result.exit_code == 0, f"{args}: {result.output}"
        assert needle in result.output, result.output
        assert "\x1b[" not in result.output, f"{args}: raw colour codes in {result.output!r}"
        if args == ["train"]:
            assert "val_roc_auc" in result.output and "best_iteration" in result.output
    assert (tmp_path / "var" / "data" / "labels.parquet").is_file()
    assert (tmp_path / "var" / "feast" / "online.db").is_file()
    assert (tmp_path / "var" / "mlflow" / "mlflow.db").is_file()


def test_missing_data_directory_is_a_one_line_error(tmp_path: Path) -> None:
    env = {"TREESERVE_HOME": str(tmp_path)}
    for args in (["train"], ["features", "materialize"]):
        result = invoke(args, env)
        assert result.exit_code == 1
        assert result.stderr.strip().count("\n") == 0
        assert "run `treeserve data generate` first" in result.stderr


def test_malformed_settings_are_one_line_errors(tmp_path: Path) -> None:
    for var, value, needle in (
        ("TREESERVE_DATA__N_CUSTOMERS", "many", "invalid setting data.n_customers"),
        ("TREESERVE_FEAST__ONLINE_STORE", "mongo", "invalid setting feast.online_store"),
        ("TREESERVE_TRAINING__LEARNING_RATE", "-1", "invalid setting training.learning_rate"),
    ):
        result = invoke(["data", "generate"], {"TREESERVE_HOME": str(tmp_path), var: value})
        assert result.exit_code == 1
        assert needle in result.stderr
        assert result.stderr.strip().count("\n") == 0


def test_bad_end_date_is_a_one_line_error(tmp_path: Path) -> None:
    result = invoke(["data", "generate", "--end-date", "yesterday"], {"TREESERVE_HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert "--end-date must be YYYY-MM-DD" in result.stderr


def test_real_process_prints_one_line_without_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TREESERVE_", "MLFLOW_"))}
    env.update({"TREESERVE_HOME": str(tmp_path), "TREESERVE_DATA__N_CUSTOMERS": "many"})
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "treeserve"), "train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: invalid setting data.n_customers")
    assert "Traceback" not in proc.stderr
