"""What every CLI command shares: settings built once, errors mapped to one line and exit 1."""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from treeserve import interrupts
from treeserve.errors import TreeserveError

if TYPE_CHECKING:
    from treeserve_app.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

_settings: Settings | None = None


def settings() -> Settings:
    """The process' settings, built once from the environment (``treeserve_app.settings.Settings``)."""
    global _settings
    if _settings is None:
        from treeserve.logs import setup_logging
        from treeserve_app.settings import load_settings

        _settings = load_settings()
        _say_where_state_lives(_settings.home)
        setup_logging(_settings.log_level, json_lines=_settings.log_json)
    return _settings


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
            fail("interrupted", interrupts.EXIT_INTERRUPTED)
        except Exception as e:
            if interrupts.received():
                # A library turned Ctrl-C into its own error (DuckDB: "Query interrupted").
                fail("interrupted", interrupts.EXIT_INTERRUPTED)
            if isinstance(e, TreeserveError):
                fail(str(e), e.exit_code)
            if isinstance(e, OSError) and e.filename is not None:
                # A path the user gave (or a setting named) that cannot be read or written.
                fail(f"{e.filename}: {e.strerror or e}")
            raise

    return wrapper  # type: ignore[return-value]


def service(fn: F) -> F:
    """Wrap a long-running command: SIGTERM and SIGINT stop it gracefully and it exits 0.

    Supervisors read any other status (143 after SIGTERM, 130 after Ctrl-C) as a crash. The
    command's own handlers (uvicorn's, a stop event) run first; whatever signal reaches this
    process' default handlers afterwards ends the command as a KeyboardInterrupt, mapped to 0.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        main = threading.current_thread() is threading.main_thread()
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
