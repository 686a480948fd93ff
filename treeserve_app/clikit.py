"""What every CLI command shares: settings built once, errors mapped to one line and exit 1."""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from treeserve import interrupts
from treeserve.errors import TreeserveError

if TYPE_CHECKING:
    from treeserve_app.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

_settings: Settings | None = None
_service = False


@dataclass
class Output:
    """What the root options (``-v/--verbose``, ``--log-json``) asked of every command's output."""

    verbose: int = 0
    log_json: bool = False


output = Output()
"""Set once by the root callback; ``settings()`` and ``service()`` read it."""

QUIET_LEVEL = "WARNING"
"""The CLI's log level without ``-v`` (unless TREESERVE_LOG_LEVEL is given): results, not chatter."""


def configure_output(*, verbose: int = 0, log_json: bool = False) -> None:
    """Apply the root options: third-party warnings and download bars off unless ``verbose``."""
    output.verbose = verbose
    output.log_json = log_json
    # MLflow's own handlers print INFO lines ("Creating initial MLflow database tables") past
    # any level we set; without them its records go through ours.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    if not verbose:
        from treeserve.quiet import quiet_third_parties

        quiet_third_parties()


def settings() -> Settings:
    """The process' settings, built once from the environment (``treeserve_app.settings.Settings``).

    ``--log-json`` and ``-v`` are settings overrides, so services started from here (gateway
    workers) log the same way.
    """
    global _settings
    if _settings is None:
        from treeserve_app.settings import load_settings

        overrides: dict[str, Any] = {}
        if output.log_json:
            overrides["log_json"] = True
        if output.verbose:
            overrides["log_level"] = "DEBUG" if output.verbose > 1 else "INFO"
        _settings = load_settings(**overrides)
        _say_where_state_lives(_settings.home)
        _setup_logging(_settings, service=_service)
    return _settings


def _setup_logging(s: Settings, *, service: bool) -> None:
    """Services log at ``log_level``; one-shot commands at WARNING unless ``-v`` or TREESERVE_LOG_LEVEL."""
    from treeserve.logs import setup_logging

    explicit = service or output.verbose > 0 or "TREESERVE_LOG_LEVEL" in os.environ
    setup_logging(
        s.log_level if explicit else QUIET_LEVEL,
        json_lines=s.log_json,
        # A service's operators read its libraries' warnings (uvicorn, grpc) in the same log.
        third_parties=None if (output.verbose or service) else "ERROR",
    )


def _say_where_state_lives(home: Path) -> None:
    """Run outside the home folder without TREESERVE_HOME: say once where state is read and written."""
    if "TREESERVE_HOME" in os.environ:
        return
    cwd = Path.cwd().resolve()
    if cwd != home.resolve() and home.resolve() not in cwd.parents:
        typer.secho(f"state in {home}/var (set TREESERVE_HOME to change)", dim=True, err=True)


def fail(message: str, code: int = 1) -> None:
    """Print one line to stderr and exit with ``code``."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def command(fn: F) -> F:
    """Wrap a CLI command: TreeserveError -> one-line message + its exit code; Ctrl-C -> exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with interrupts.watching():
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            _interrupted()
        except Exception as e:
            if interrupts.received():
                # A library turned Ctrl-C into its own error (DuckDB: "Query interrupted").
                _interrupted()
            if isinstance(e, TreeserveError):
                fail(str(e), e.exit_code)
            if isinstance(e, OSError) and e.filename is not None:
                # A path the user gave (or a setting named) that cannot be read or written.
                fail(f"{e.filename}: {e.strerror or e}")
            raise

    return wrapper  # type: ignore[return-value]


def _interrupted() -> None:
    """Exit 130 with "interrupted", naming the steps that completed before and stay done."""
    steps = interrupts.completed_steps()
    fail("interrupted" + (f" after {'; '.join(steps)}" if steps else ""), interrupts.EXIT_INTERRUPTED)


def service(fn: F) -> F:
    """Wrap a long-running command: SIGTERM and SIGINT stop it gracefully and it exits 0.

    Supervisors read any other status (143 after SIGTERM, 130 after Ctrl-C) as a crash. The
    command's own handlers (uvicorn's, a stop event) run first; whatever signal reaches this
    process' default handlers afterwards ends the command as a KeyboardInterrupt, mapped to 0.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        main = threading.current_thread() is threading.main_thread()
        global _service
        _service = True  # a service logs at log_level: it has no result line to show instead
        if _settings is not None:
            _setup_logging(_settings, service=True)
        previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            logging.getLogger(fn.__module__).info("stopped by a signal")
            return None
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)

    return command(wrapper)  # type: ignore[return-value]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
