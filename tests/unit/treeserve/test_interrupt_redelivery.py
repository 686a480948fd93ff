"""A Ctrl-C that lands where Python drops exceptions (``__del__``, weakref callbacks) is not lost."""

from __future__ import annotations

import gc
import signal
import time

import pytest

from treeserve import interrupts


class _InterruptedWhileCollected:
    """Raises SIGINT from its finalizer: the KeyboardInterrupt is raised inside ``__del__``."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)


def _collect_one() -> None:
    obj = _InterruptedWhileCollected()
    del obj
    gc.collect()


def test_a_ctrl_c_dropped_by_a_finalizer_stops_the_command() -> None:
    # Seen for real: `treeserve export` ran to the end after a Ctrl-C raised inside the import
    # system's module-lock weakref callback ("Exception ignored in: ... cb").
    with pytest.raises(KeyboardInterrupt), interrupts.watching():
        _collect_one()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:  # the signal is tripped again a moment later
            time.sleep(0.001)
    assert interrupts.received()


def test_other_dropped_exceptions_still_reach_the_previous_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[type[BaseException]] = []
    monkeypatch.setattr("sys.unraisablehook", lambda u: seen.append(u.exc_type))

    class Broken:
        def __del__(self) -> None:
            raise ValueError("finalizer bug")

    with interrupts.watching():
        obj = Broken()
        del obj
        gc.collect()
    assert seen == [ValueError]
