"""Ctrl-C as a user means it: stop now, say "interrupted", leave nothing half-written.

Libraries turn SIGINT into their own exceptions (DuckDB raises ``RuntimeError: Query interrupted``,
others wrap the ``KeyboardInterrupt``), so the CLI records that the signal arrived
(``watching()``) and treats whatever exception follows as the interruption. Steps that must not be
cut in half (registering a model version, moving a directory into the repository) run inside
``deferred()``: the signal is held until the step is over, and the step can undo itself when one
arrived. A step that completed and stays (a registered version) says so with ``completed()``, so
an interruption afterwards does not read as if nothing was done.

A ``KeyboardInterrupt`` raised where Python cannot propagate it (a ``__del__``, a weakref callback
such as the import system's module-lock cleanup) is printed as "Exception ignored" and dropped,
and the command would run on to the end. While ``watching()`` is active such a dropped interrupt
is delivered again: the signal is re-raised and lands at the next point that can take it.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

EXIT_INTERRUPTED = 130
"""128 + SIGINT, what shells report for a command stopped by Ctrl-C."""

REDELIVER_AFTER_S = 0.005
"""How long after a dropped KeyboardInterrupt the signal is tripped again (the callback that
dropped it has returned by then; if another one drops it, it is delivered once more)."""

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
    previous_hook = sys.unraisablehook

    def redeliver(unraisable: Any) -> None:
        if unraisable.exc_type is KeyboardInterrupt and _in_main_thread():
            # Raised here, it would be dropped again: a moment later, from another thread, the
            # signal is tripped anew and handled wherever the main thread is by then.
            threading.Timer(REDELIVER_AFTER_S, _thread.interrupt_main, args=(signal.SIGINT,)).start()
            return
        previous_hook(unraisable)

    previous = signal.signal(signal.SIGINT, _on_sigint)
    sys.unraisablehook = redeliver
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
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
