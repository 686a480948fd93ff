"""`make demo`'s command, end to end on embedded defaults, in a fresh home on free ports."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from treeserve.procs import free_port, port_in_use

NOISE = ("Warning", "Traceback", "Downloading artifacts", "it/s]", "PosixPath(", "datetime.datetime(")
"""What a library prints on its own (warnings, tqdm bars) or a raw repr leaks into the output."""


def test_demo_runs_the_whole_job_and_stops_what_it_started(treeserve_home: Path) -> None:
    ports = {
        "TREESERVE_TRITON__HTTP_PORT": free_port(),
        "TREESERVE_TRITON__GRPC_PORT": free_port(),
        "TREESERVE_TRITON__METRICS_PORT": free_port(),
        "TREESERVE_GATEWAY__PORT": free_port(),
        "TREESERVE_GATEWAY__GRPC_PORT": free_port(),
    }
    env = dict(os.environ)
    env.update({k: str(v) for k, v in ports.items()})
    env["TREESERVE_HOME"] = str(treeserve_home)
    env["OMP_NUM_THREADS"] = "1"
    exe = Path(sys.executable).with_name("treeserve")
    proc = subprocess.run(
        [str(exe), "demo", "--customers", "1500", "--loadtest-s", "3"],
        cwd=treeserve_home,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # The summary names the champion, a real gateway prediction, a load test without errors and
    # the drift the demo planted.
    assert "champion → v1" in out
    assert "cust-" in out and "score" in out
    assert "errors 0.00%" in out
    assert "drift verdict: drift" in out
    # Written for people: no library warnings, tracebacks, raw dataclass reprs, download bars or
    # pretty-printed JSON (a bare "{" line), and scores with 4 decimals.
    for noise in NOISE:
        assert noise not in out, f"{noise!r} in the demo output:\n{out[-4000:]}"
    assert not re.search(r"\b[A-Z][A-Za-z]+\((\w+=)", out), out[-4000:]
    assert not re.search(r"^\s*[{}]\s*$", out, re.M), out[-4000:]
    assert re.search(r"score 0\.\d{4} \(", out), out[-4000:]
    # Artifacts a user opens afterwards.
    assert (treeserve_home / "model_repository" / "churn-prediction" / "1" / "model.onnx").is_file()
    assert list((treeserve_home / "reports" / "loadtest").glob("*/report.html"))
    assert list((treeserve_home / "reports" / "drift").glob("*/report.html"))
    # Everything it started is stopped.
    for port in ports.values():
        assert not port_in_use(port), f"port {port} still in use after the demo"
