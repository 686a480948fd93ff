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

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
OWN_PACKAGES = ("treeserve", "exporter", "gateway", "training", "drift", "loadtest")


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour/cursor escape sequences."""
    return _ANSI.sub("", text)


def quiet_third_parties() -> None:
    """Warnings from libraries off, MLflow's download bars off (warnings of our own stay on)."""
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    for package in OWN_PACKAGES:
        warnings.filterwarnings("default", category=UserWarning, module=rf"{package}(\.|$)")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")


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
