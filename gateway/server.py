"""Running the gateway: uvicorn (uvloop, httptools, N workers) in this process, or as a child process.

``run(settings)`` blocks (what ``treeserve gateway`` calls). ``GatewayProcess`` starts
``treeserve gateway`` in the background for the demo and the tests and stops it by PID.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treeserve import procs
from treeserve.errors import ServiceUnavailableError

if TYPE_CHECKING:
    import subprocess

    from gateway.settings import GatewayConfig

log = logging.getLogger(__name__)


SETTINGS_ENV = "TREESERVE_SETTINGS_JSON"
"""The whole settings tree given to ``run``, as JSON, for its worker processes."""


def run(settings: GatewayConfig, *, app_factory: str) -> None:
    """Serve HTTP (and KServe v2 gRPC when ``gateway.grpc_port``) until SIGINT/SIGTERM.

    ``app_factory`` is the ``module:function`` uvicorn calls in each worker to build the app (a
    fresh interpreter); the application owns it and reads the settings from ``SETTINGS_ENV``.
    """
    import uvicorn

    gw = settings.gateway
    # Workers are fresh interpreters: they get the whole tree, programmatic overrides included.
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    prom: Path | None = None
    if gw.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        prom = settings.var_dir / "gateway" / f"prometheus-{os.getpid()}"
        shutil.rmtree(prom, ignore_errors=True)
        prom.mkdir(parents=True)
        # Both names: prometheus_client reads one for values, one for collection (and Feast
        # invents its own per-process folder unless they are set).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
        os.environ["PROMETHEUS_MULTIPROCESS_DIR"] = str(prom)
    try:
        _serve(uvicorn, settings, app_factory)
    finally:
        if prom is not None:
            shutil.rmtree(prom, ignore_errors=True)


def _serve(uvicorn: Any, settings: GatewayConfig, app_factory: str) -> None:
    from gateway.http_protocol import GatewayHttpProtocol

    gw = settings.gateway
    uvicorn.run(
        app_factory,
        factory=True,
        host=gw.host,
        port=gw.port,
        workers=gw.workers,
        loop="uvloop",
        http=GatewayHttpProtocol,  # httptools, one socket write per response
        access_log=False,
        log_level=settings.log_level.lower(),
        backlog=4096,
        timeout_graceful_shutdown=10,
    )


@dataclass
class GatewayProcess:
    """``treeserve gateway`` as a child process (demo, tests, benchmarks)."""

    env: Mapping[str, str]
    """Full environment of the child (TREESERVE_* settings included)."""
    port: int
    grpc_port: int = 0
    host: str = "127.0.0.1"
    workers: int = 1
    log_file: Path = Path("var/gateway/gateway.log")
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{self.host}:{self.port}"

    @property
    def grpc_url(self) -> str:
        """host:port of the KServe v2 gRPC endpoint."""
        return f"{self.host}:{self.grpc_port}"

    def start(self, *, timeout_s: float = 60.0, wait_ready: bool = True) -> GatewayProcess:
        """Start and wait for /healthz (and /readyz when ``wait_ready``)."""
        env = dict(self.env)
        env.update(
            {
                "TREESERVE_GATEWAY__HOST": self.host,
                "TREESERVE_GATEWAY__PORT": str(self.port),
                "TREESERVE_GATEWAY__GRPC_PORT": str(self.grpc_port),
                "TREESERVE_GATEWAY__WORKERS": str(self.workers),
            }
        )
        env.setdefault("OMP_NUM_THREADS", "1")
        # A parent that imported Feast carries Feast's per-process metrics folder in these: the
        # child must not write its metrics there (the gateway sets its own for several workers).
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.pop("PROMETHEUS_MULTIPROCESS_DIR", None)
        exe = Path(sys.executable).with_name("treeserve")
        cmd = (
            [str(exe), "gateway"] if exe.exists() else [sys.executable, "-m", "treeserve_app.cli", "gateway"]
        )
        self.proc = procs.start_background(cmd, log_file=self.log_file, env=env)
        path = "/readyz" if wait_ready else "/healthz"
        ok = procs.wait_until(
            lambda: procs.http_ok(self.url + path),
            timeout_s=timeout_s,
            interval_s=0.1,
            alive=lambda: self.proc is not None and self.proc.poll() is None,
        )
        if not ok:
            tail = self.log_tail()
            self.stop()
            raise ServiceUnavailableError(f"the gateway did not become ready on {self.url}{path}:\n{tail}")
        return self

    def log_tail(self, lines: int = 30) -> str:
        """The end of the child's log."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, *, timeout_s: float = 20.0) -> None:
        """SIGTERM (graceful: the prediction log is flushed), SIGKILL after ``timeout_s``."""
        if self.proc is not None:
            procs.stop_pid(self.proc.pid, timeout_s=timeout_s)
            self.proc.wait(timeout=5)
            self.proc = None

    def __enter__(self) -> GatewayProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
