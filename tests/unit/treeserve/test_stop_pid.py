"""Stopping a server stops its whole process group, also a child that ignores SIGTERM."""

from __future__ import annotations

import sys
from pathlib import Path

from treeserve import procs

# The leader starts a child that ignores SIGTERM (as a Triton Python-backend stub still starting
# does), writes the child's pid, then waits to be terminated.
LEADER = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(60)
"""


def test_a_child_ignoring_sigterm_does_not_outlive_its_stopped_server(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    leader = procs.start_background(
        [sys.executable, "-c", LEADER, str(pid_file)], log_file=tmp_path / "leader.log"
    )
    assert procs.wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", timeout_s=30)
    child = int(pid_file.read_text())
    assert procs.pid_alive(child)
    procs.stop_pid(leader.pid, timeout_s=5.0)
    assert not procs.pid_alive(leader.pid)
    assert procs.wait_until(lambda: not procs.pid_alive(child), timeout_s=5.0), (
        "the child outlived its server"
    )
