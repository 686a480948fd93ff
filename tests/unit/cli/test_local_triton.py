"""One source of truth for the local Triton's ports: its state file while it runs, else settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from treeserve.local_triton import local_triton, write_state
from treeserve_app.settings import load_settings


def test_settings_ports_when_no_server_runs(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, triton={"http_port": 18000, "grpc_port": 18001})
    ep = local_triton(settings)
    assert (ep.http_url, ep.grpc_url, ep.pid) == ("127.0.0.1:18000", "127.0.0.1:18001", None)


def test_running_server_ports_win_over_settings(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    run_dir = settings.path(settings.triton.run_dir)
    run_dir.mkdir(parents=True)
    write_state(run_dir, {"pid": os.getpid(), "http_port": 28000, "grpc_port": 28001, "metrics_port": 28002})
    ep = local_triton(settings)
    assert (ep.http_url, ep.grpc_url, ep.metrics_port, ep.pid) == (
        "127.0.0.1:28000",
        "127.0.0.1:28001",
        28002,
        os.getpid(),
    )


def test_state_of_a_dead_server_is_ignored(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    run_dir = settings.path(settings.triton.run_dir)
    run_dir.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    write_state(run_dir, {"pid": int(dead.stdout), "http_port": 28000, "grpc_port": 28001, "metrics_port": 1})
    assert local_triton(settings).http_port == settings.triton.http_port
