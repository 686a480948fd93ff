"""A description of the machine a benchmark ran on (figures mean nothing without it)."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def _git_commit(cwd: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def describe_machine(cwd: Path | None = None) -> dict[str, Any]:
    """Cores, CPU model, memory, OS and Python of this host (plus the git commit when there is one)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count() or 0,
        "usable_cores": usable,
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "git_commit": _git_commit(cwd or Path.cwd()),
    }


def machine_line(machine: dict[str, Any]) -> str:
    """One line for a report: ``2 cores (AMD EPYC), 23.4 GiB, Linux 6.1, Python 3.11.9``."""
    mem = f", {machine['memory_gib']} GiB" if machine.get("memory_gib") else ""
    return (
        f"{machine.get('usable_cores')} cores ({machine.get('cpu_model')}){mem}, "
        f"{machine.get('os')}, Python {machine.get('python')}"
    )


def process_tree_sum(pid: int | None, measure: Callable[[Any], float]) -> float:
    """Sum of ``measure(process)`` over ``pid`` and its descendants (psutil processes).

    A server such as tritonserver does its work in children too (Python-backend stubs): CPU time
    and memory figures count the whole tree. Processes that exit while being read count as 0;
    no ``pid`` (or one already gone) gives 0.
    """
    import psutil

    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            total += measure(p)
        except psutil.Error:
            continue
    return total
