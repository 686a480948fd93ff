"""Every command the compose file runs exists in the installed CLIs (``--help`` exits 0).

The gateway, sync, webhook-registration and job services run ``treeserve …`` commands; the MLflow
service runs ``mlflow server …``. Each is invoked here with its exact arguments plus ``--help``:
an unknown command or option fails, a renamed one is caught before a deployment is.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.unit.deploy.conftest import COMPOSE, command_of, resolved

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return resolved(COMPOSE)


def _treeserve_commands(service: dict[str, Any]) -> list[list[str]]:
    """Every ``treeserve ...`` invocation in a service's command (direct or inside ``sh -c``)."""
    cmd = command_of(service)
    if cmd[:2] == ["sh", "-c"]:
        parts = [shlex.split(p) for p in re.split(r"&&|;|\|\|", " ".join(cmd[2:]))]
    else:
        parts = [cmd]
    return [p for p in parts if p and p[0] == "treeserve"]


def test_every_treeserve_command_in_compose_is_real(compose: dict[str, Any]) -> None:
    """Each service command, with its options, is accepted by the CLI: ``--help`` exits 0."""
    from treeserve_app.cli import app

    # The console script itself (what the image's PATH runs).
    proc = subprocess.run(
        [str(BIN / "treeserve"), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    runner = CliRunner()
    seen, failures = 0, []
    for name, service in sorted(compose["services"].items()):
        for argv in _treeserve_commands(service):
            seen += 1
            result = runner.invoke(app, [*argv[1:], "--help"])
            if result.exit_code != 0:
                failures.append(
                    f"{name}: `{shlex.join(argv)}` -> exit {result.exit_code}: {result.output.strip()[-300:]}"
                )
    assert seen >= 6, "expected the gateway, sync, webhook registration and job commands"
    assert not failures, "\n".join(failures)


def test_mlflow_server_command_is_accepted(compose: dict[str, Any]) -> None:
    cmd = command_of(compose["services"]["mlflow"])
    assert cmd[:2] == ["mlflow", "server"]
    assert "postgresql+psycopg2://" in " ".join(cmd)
    assert cmd[cmd.index("--workers") + 1] == "1"
    from click.testing import CliRunner as ClickRunner
    from mlflow.cli import cli as mlflow_cli

    result = ClickRunner().invoke(mlflow_cli, [*cmd[1:], "--help"])
    assert result.exit_code == 0, result.output
    env = compose["services"]["mlflow"]["environment"]
    assert env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] == "http,https"
    assert env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] == "true"
    assert env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"]
