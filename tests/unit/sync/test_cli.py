"""``treeserve sync`` front-end: bad input is one line and exit 1; status works before any pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from treeserve import clikit
from treeserve.cli import app


@pytest.fixture
def run(treeserve_home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(clikit, "_settings", None)

    def _run(*args: str):
        return CliRunner().invoke(app, list(args))

    return _run


def test_register_webhook_refuses_bad_input(run) -> None:
    no_secret = run("sync", "register-webhook", "http://127.0.0.1:8070/webhooks/mlflow")
    assert no_secret.exit_code == 1 and "webhook secret is required" in no_secret.output
    bad_url = run("sync", "register-webhook", "ftp://x", "--secret", "s")
    assert bad_url.exit_code == 1 and "must start with http" in bad_url.output
    assert "Traceback" not in no_secret.output + bad_url.output


def test_once_and_watch_are_exclusive(run) -> None:
    r = run("sync", "--once", "--watch")
    assert r.exit_code == 1 and "choose one of --once and --watch" in r.output


def test_status_before_any_pass(run) -> None:
    r = run("sync", "status", "--no-live", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["last_pass"]["result"] == "never"
    assert report["models"]["churn-prediction"]["message"] == "no sync pass recorded yet"
    text = run("sync", "status", "--no-live")
    assert text.exit_code == 0 and "never" in text.stdout
