"""What a person at the terminal sees: a version flag, readable --help, quiet libraries, -v/--log-json."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from treeserve import quiet
from treeserve_app import clikit
from treeserve_app.cli import app

ROOT = Path(__file__).resolve().parents[3]
TYPER_NOISE = re.compile(r"<(bool|str|int|float|path)>|\{\w+\}")


def _help_pages() -> list[list[str]]:
    import typer

    pages: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        pages.append([*path, "--help"])
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return pages


def test_version_flag_prints_the_version() -> None:
    from treeserve import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"treeserve {__version__}"


@pytest.mark.parametrize("args", _help_pages(), ids=lambda a: " ".join(a))
def test_help_pages_read_without_type_labels(args: list[str]) -> None:
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert not TYPER_NOISE.search(result.stdout), result.stdout


def test_usage_names_arguments_and_option_values() -> None:
    out = CliRunner().invoke(app, ["promote", "--help"], terminal_width=200).stdout
    assert "treeserve promote [OPTIONS] MODEL VERSION" in out
    assert re.search(r"--alias\s+TEXT", out)
    root = CliRunner().invoke(app, ["--help"], terminal_width=200).stdout
    for flag in ("--version", "--verbose", "-v", "--log-json"):
        assert flag in root


def test_a_wrong_value_still_names_the_option() -> None:
    result = CliRunner().invoke(app, ["export", "churn", "--version", "abc"])
    assert result.exit_code == 2
    assert "'--version'" in result.output


@pytest.fixture
def fresh_output() -> Iterator[None]:
    clikit._settings = None
    saved = (clikit.output.verbose, clikit.output.log_json)
    try:
        yield
    finally:
        clikit._settings = None
        clikit.output.verbose, clikit.output.log_json = saved


def test_verbose_and_log_json_become_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_output: None
) -> None:
    monkeypatch.setenv("TREESERVE_HOME", str(tmp_path))
    monkeypatch.delenv("TREESERVE_LOG_LEVEL", raising=False)
    monkeypatch.setattr(clikit, "_setup_logging", lambda s, service: None)
    clikit.output.verbose, clikit.output.log_json = 1, True
    s = clikit.settings()
    # The gateway hands these settings to its workers: they log the same way.
    assert s.log_level == "INFO" and s.log_json is True


def test_library_warnings_are_not_shown_ours_are() -> None:
    shown: list[str] = []
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
        quiet.quiet_third_parties()
        # A library may add its own filters after ours (Feast: "once" for every DeprecationWarning).
        warnings.simplefilter("always")
        library = "/venv/lib/python3.11/site-packages/ibis/backends/duckdb/__init__.py"
        warnings.warn_explicit("fetch_arrow_table() is deprecated", DeprecationWarning, library, 332)
        warnings.warn_explicit("noload is deprecated", UserWarning, library, 1)
        ours = str(ROOT / "drift" / "job.py")
        warnings.warn_explicit("only 600 rows in the window", UserWarning, ours, 1)
    assert shown == ["only 600 rows in the window"]


@pytest.mark.parametrize(
    "args",
    [
        ["-vv", "--log-json", "version"],
        ["version", "-vv", "--log-json"],
        ["version", "--log-json", "-v", "-v"],
    ],
)
def test_output_flags_work_before_and_after_the_command(args: list[str], fresh_output: None) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (clikit.output.verbose, clikit.output.log_json) == (2, True)


def test_output_flags_after_a_double_dash_are_left_to_the_command() -> None:
    from treeserve_app.cli import hoist_output_flags

    assert hoist_output_flags(["sync", "status", "-v", "--", "-v"]) == ["-v", "sync", "status", "--", "-v"]
