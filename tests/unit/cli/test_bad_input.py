"""Bad settings and bad paths: one line naming the setting (or path) and what it accepts, exit 1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from treeserve_app import clikit
from treeserve_app.cli import app


def _invoke(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    clean = {k: None for k in os.environ if k.startswith(("TREESERVE_", "MLFLOW_"))}
    clikit._settings = None
    try:
        result = CliRunner().invoke(app, args, env={**clean, **env})
    finally:
        clikit._settings = None
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    ("var", "value", "needles"),
    [
        ("TREESERVE_LOG_LEVEL", "LOUD", ["TREESERVE_LOG_LEVEL='LOUD'", "'DEBUG'", "'CRITICAL'"]),
        (
            "TREESERVE_SYNC__MODELS",
            "churn-prediction",
            ["TREESERVE_SYNC__MODELS='churn-prediction'", "not valid JSON", '["churn-prediction"]'],
        ),
        ("TREESERVE_TRITON__HTTP_PORT", "-5", ["TREESERVE_TRITON__HTTP_PORT='-5'", "from 1 to 65535"]),
        ("TREESERVE_GATEWAY__PORT", "70000", ["TREESERVE_GATEWAY__PORT='70000'", "from 1 to 65535"]),
        ("TREESERVE_FEAST__ONLINE_STORE", "mongo", ["'sqlite' or 'redis'"]),
    ],
)
def test_bad_setting_is_one_line_naming_it(tmp_path: Path, var: str, value: str, needles: list[str]) -> None:
    code, err = _invoke(["promote", "churn-prediction", "1"], {"TREESERVE_HOME": str(tmp_path), var: value})
    assert code == 1
    assert err.startswith("error: invalid setting "), err
    assert err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    from treeserve_app.settings import load_settings

    os.environ["TREESERVE_LOG_LEVEL"] = "debug"
    try:
        assert load_settings(home=tmp_path).log_level == "DEBUG"
    finally:
        del os.environ["TREESERVE_LOG_LEVEL"]


def test_unwritable_data_folder_is_one_line(tmp_path: Path) -> None:
    code, err = _invoke(
        ["data", "generate", "--customers", "100", "--out", "/proc/nope"], {"TREESERVE_HOME": str(tmp_path)}
    )
    assert code == 1
    assert err.strip() == "error: cannot write the data folder /proc/nope: No such file or directory"


def test_home_defaults_to_the_checkout_wherever_the_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from treeserve_app.settings import load_settings

    checkout = Path(__file__).resolve().parents[3]
    monkeypatch.delenv("TREESERVE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_settings().home == checkout
