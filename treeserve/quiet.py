"""Keep third-party chatter off the user's terminal: warnings, progress bars, raw colour codes.

The CLI calls ``quiet_third_parties()`` once unless ``-v`` is given; code that calls a library
which prints on its own (Feast's materialize prints coloured lines and a tqdm bar) wraps the call
in ``captured_output(log)``, which hands the text to the logger at DEBUG instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
OWN_PACKAGES = ("treeserve", "treeserve_app", "exporter", "gateway", "training", "drift", "loadtest")


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour/cursor escape sequences."""
    return _ANSI.sub("", text)


def quiet_third_parties() -> None:
    """Warnings from libraries off, MLflow's download bars off (warnings of our own stay on).

    Filters alone do not hold: Feast and Evidently add their own (``once`` for every
    DeprecationWarning) when they are imported. So the printing itself is replaced: a warning is
    shown only when our own code raised it and it is not a deprecation notice.
    """
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    for package in OWN_PACKAGES:
        warnings.filterwarnings("default", category=UserWarning, module=rf"{package}(\.|$)")
    if warnings.showwarning is not _show_own_warnings:
        global _show_any_warning
        _show_any_warning = warnings.showwarning
        warnings.showwarning = _show_own_warnings
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")


_CHECKOUT = Path(__file__).resolve().parents[1]
_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_show_any_warning = warnings.showwarning


def is_own_file(filename: str) -> bool:
    """Whether ``filename`` is a module of one of treeserve's packages (not a library's)."""
    try:
        parts = Path(filename).resolve().relative_to(_CHECKOUT).parts
    except ValueError:
        return False
    return bool(parts) and parts[0] in OWN_PACKAGES


def _show_own_warnings(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    if is_own_file(filename) and not issubclass(category, _DEPRECATIONS):
        _show_any_warning(message, category, filename, lineno, file, line)


@contextlib.contextmanager
def captured_output(log: logging.Logger) -> Iterator[None]:
    """Capture what a library prints (stdout and stderr) and log it, colour codes removed, at DEBUG."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield
    finally:
        for line in strip_ansi(buffer.getvalue()).replace("\r", "\n").splitlines():
            if line.strip():
                log.debug("%s", line.rstrip())
