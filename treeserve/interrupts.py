"""Ctrl-C as a user means it: stop now, say "interrupted", leave nothing half-written.

Libraries turn SIGINT into their own exceptions (DuckDB raises ``RuntimeError: Query interrupted``,
others wrap the ``KeyboardInterrupt``), so the CLI records that the signal arrived
(``watching()``) and treats whatever exception follows as the interruption. Steps that must not be
cut in half (registering a model version, moving a directory into the repository) run inside
``deferred()``: the signal is held until the step is over, and the step can undo itself when one
arrived. A step that completed and stays (a registered version) says so with ``completed()``, so
an interruption afterwards does not read as if nothing was done.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

EXIT_INTERRUPTED = 130
"""128 + SIGINT, what shells report for a command stopped by Ctrl-C."""

_received = threading.Event()
_completed: list[str] = []


def completed(what: str) -> None:
    """Record a step that finished and stays, for the "interrupted" message of the command.

    ``what`` completes "interrupted after ...": "registering churn-prediction version 7, which stays
    registered".
    """
    _completed.append(what)


def completed_steps() -> list[str]:
    """What ``completed()`` recorded since the current ``watching()`` began."""
    return list(_completed)


def received() -> bool:
    """Whether SIGINT arrived while ``watching()`` was active."""
    return _received.is_set()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _received.set()
    raise KeyboardInterrupt


@contextmanager
def watching() -> Iterator[None]:
    """Record SIGINT (then raise KeyboardInterrupt as usual) for the duration of a command."""
    if not _in_main_thread():
        yield
        return
    _received.clear()
    _completed.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class Deferred:
    """What ``deferred()`` saw: ``received`` turns true when SIGINT arrived inside the block."""

    received: bool = False


@contextmanager
def deferred() -> Iterator[Deferred]:
    """Hold SIGINT until the block ends, then raise KeyboardInterrupt; the block may check ``received``."""
    state = Deferred()
    if not _in_main_thread():
        yield state
        return

    def hold(signum: int, frame: Any) -> None:
        state.received = True
        _received.set()

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)
    if state.received:
        raise KeyboardInterrupt
