"""Ctrl-C handling: a library's own 'interrupted' error is still an interruption; held steps finish."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from treeserve import interrupts
from treeserve_app import clikit


def _sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_a_library_error_raised_by_ctrl_c_exits_130() -> None:
    app = typer.Typer()

    @app.command()
    @clikit.command
    def work() -> None:
        try:
            _sigint()
        except KeyboardInterrupt:
            raise RuntimeError("Query interrupted") from None  # what DuckDB does

    result = CliRunner().invoke(app, [])
    assert result.exit_code == 130
    assert result.stderr.strip() == "error: interrupted"


def test_other_errors_are_not_mistaken_for_an_interrupt() -> None:
    app = typer.Typer()

    @app.command()
    @clikit.command
    def work() -> None:
        raise RuntimeError("a real bug")

    result = CliRunner().invoke(app, [])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)


def test_deferred_step_finishes_then_raises() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred() as sigint:
        _sigint()
        done.append(sigint.received)
    assert done == [True]


class _Client:
    def __init__(self) -> None:
        self.versions: list[str] = []

    def create_registered_model(self, name: str) -> None:
        pass

    def create_model_version(self, name: str, **kwargs: Any) -> Any:
        self.versions.append("7")
        _sigint()  # Ctrl-C while the registry writes the version
        return type("MV", (), {"version": "7"})()

    def delete_model_version(self, name: str, version: str) -> None:
        self.versions.remove(version)


def test_train_registration_interrupted_midway_leaves_no_version() -> None:
    from training.train import _register_version

    client = _Client()
    info = type("Info", (), {"model_uri": "models:/m-1", "model_id": "m-1"})()
    with pytest.raises(KeyboardInterrupt):
        _register_version(client, "churn-prediction", info, "run-1", {"treeserve.task": "binary"})
    assert client.versions == []


class _RegisteringClient(_Client):
    def create_model_version(self, name: str, **kwargs: Any) -> Any:
        self.versions.append("7")
        return type("MV", (), {"version": "7"})()


def test_ctrl_c_after_train_registered_a_version_says_it_stays() -> None:
    from training.train import _register_version

    app = typer.Typer()

    @app.command()
    @clikit.command
    def train() -> None:
        info = type("Info", (), {"model_uri": "models:/m-1", "model_id": "m-1"})()
        _register_version(_RegisteringClient(), "churn-prediction", info, "run-1", {})
        _sigint()  # after "registered churn-prediction version 7" was printed

    result = CliRunner().invoke(app, [])
    assert result.exit_code == 130
    assert result.stderr.strip() == (
        "error: interrupted after registering churn-prediction version 7, which stays registered"
    )
    # The next command starts with a clean slate.
    idle = typer.Typer()
    idle.command()(clikit.command(_sigint))
    assert CliRunner().invoke(idle, []).stderr.strip() == "error: interrupted"
