"""``treeserve sync`` front-end: bad input is one line and exit 1; status works before any pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from treeserve_app import clikit
from treeserve_app.cli import app


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


def test_status_before_any_pass_reports_and_exits_1(run) -> None:
    r = run("sync", "status", "--no-live", "--json")
    assert r.exit_code == 1, r.output  # out of sync: scripts and probes must see it
    report = json.loads(r.stdout)
    assert report["last_pass"]["result"] == "never"
    assert report["models"]["churn-prediction"]["message"] == "no sync pass recorded yet"
    assert "not in sync: churn-prediction: no sync pass recorded yet" in r.stderr
    text = run("sync", "status", "--no-live")
    assert text.exit_code == 1 and "never" in text.stdout


def test_status_exits_0_only_when_every_model_is_in_sync(run, treeserve_home: Path) -> None:
    from exporter.sync.status import ModelStatus, SyncStatus, write_status
    from treeserve_app.settings import load_settings

    path = load_settings(home=treeserve_home).path(load_settings(home=treeserve_home).sync.status_file)
    served = ModelStatus(routing={"champion": "3"}, served_versions=["3"], in_sync=True, message="serving")
    write_status(path, SyncStatus(result="ok", models={"churn-prediction": served}))
    assert run("sync", "status", "--no-live").exit_code == 0
    behind = ModelStatus(routing={"champion": "3"}, in_sync=False, message="version 4 failed its canary")
    write_status(path, SyncStatus(result="degraded", models={"churn-prediction": behind}))
    r = run("sync", "status", "--no-live")
    assert r.exit_code == 1 and "version 4 failed its canary" in r.stderr
