"""Ctrl-C during ``treeserve train`` and ``treeserve export``: one line, exit 130, nothing half-written."""

from __future__ import annotations

import fcntl
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from treeserve.procs import wait_until

pytestmark = pytest.mark.integration

TREESERVE = str(Path(sys.executable).parent / "treeserve")


class Child:
    """``treeserve ARGS`` with stderr collected line by line while it runs."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [TREESERVE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def saw(self, needle: str) -> bool:
        return any(needle in line for line in self.lines)

    def interrupt(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=120)
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        return self.proc.returncode, self.proc.stdout.read(), "".join(self.lines)


def _versions(world: Any) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(world.settings.mlflow_tracking_uri, registry_uri=world.settings.mlflow_tracking_uri)
    return sorted(v.version for v in client.search_model_versions(f"name='{world.model_name}'"))


def _assert_interrupted(code: int, out: str, err: str) -> None:
    assert code == 130, f"exit {code}\nstdout: {out[-1500:]}\nstderr: {err[-3000:]}"
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    assert err.strip().splitlines()[-1] == "error: interrupted", err[-1500:]


@pytest.mark.parametrize(
    "phase", ["reading labels and point-in-time features", "logging the run and registering"]
)
def test_interrupted_train_registers_nothing(demo_world: Any, phase: str) -> None:
    before = _versions(demo_world)
    child = Child(["train"], demo_world.subprocess_env({"TREESERVE_LOG_LEVEL": "DEBUG"}))
    wait_until(lambda: child.saw(phase) or child.proc.poll() is not None, timeout_s=180)
    assert child.proc.poll() is None, "".join(child.lines)[-2000:]
    time.sleep(0.5)  # inside the step: the Feast join runs in DuckDB, the logging talks to MLflow
    _assert_interrupted(*child.interrupt())
    assert _versions(demo_world) == before


def _lock_held(path: Path) -> bool:
    if not path.exists():
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_interrupted_export_leaves_no_staging_and_no_version(demo_world: Any, tmp_path: Path) -> None:
    repo, lock = tmp_path / "repository", tmp_path / "sync.lock"
    env = demo_world.subprocess_env(
        {"TREESERVE_EXPORTER__REPOSITORY": str(repo), "TREESERVE_SYNC__LOCK_FILE": str(lock)}
    )
    child = Child(["export", demo_world.model_name, "--version", demo_world.version], env)
    # The export holds the repository lock from its first step (download) to its last (config).
    wait_until(lambda: _lock_held(lock) or child.proc.poll() is not None, timeout_s=120)
    assert child.proc.poll() is None, "".join(child.lines)[-2000:]
    _assert_interrupted(*child.interrupt())
    staging = repo / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == []
    assert not (repo / demo_world.model_name / demo_world.version).exists()
