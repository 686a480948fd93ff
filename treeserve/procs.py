"""Starting, waiting for and stopping local processes (Triton, mlflow server, gateway)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str, *, timeout_s: float = 1.0) -> bool:
    """True when GET ``url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    interval_s: float = 0.1,
    alive: Callable[[], bool] | None = None,
) -> bool:
    """Poll ``check`` until it is true (True), the time is up or ``alive`` turns false (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        if alive is not None and not alive():
            return False
        time.sleep(interval_s)
    return check()


def start_background(
    cmd: Sequence[str],
    *,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session with stdout/stderr appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_file, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )
    finally:
        log.close()


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists (and is not a zombie we own)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int, *, timeout_s: float = 10.0, group: bool = True) -> None:
    """SIGTERM ``pid`` (its process group when ``group``), SIGKILL after ``timeout_s``.

    With ``group``, members still alive once ``pid`` has exited are killed too: a child that
    ignores SIGTERM (seen: a Triton Python-backend stub still starting when its server was
    stopped) would otherwise outlive its server, re-parented to init.
    """

    def _send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                try:
                    os.killpg(pid, sig)
                    return
                except (ProcessLookupError, PermissionError):
                    pass
            os.kill(pid, sig)

    def _group_left() -> None:
        if group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # nothing left: ProcessLookupError

    if not pid_alive(pid):
        return
    _send(signal.SIGTERM)
    if not wait_until(lambda: not pid_alive(pid), timeout_s=timeout_s, interval_s=0.05):
        _send(signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), timeout_s=5.0, interval_s=0.05)
    _group_left()
