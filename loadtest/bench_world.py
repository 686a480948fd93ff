"""A demo world for the benchmark suite, built once through every package's Python API.

Data (training.data) → Feast apply + materialize (training.features) → train and register
(training.train) → alias ``champion`` → export into a Triton repository (exporter.install) →
Triton (exporter.triton_server) → gateway (gateway.server.GatewayProcess). Everything lives in a
fresh home folder with its own ports; the TREESERVE_* variables describing it are set in this
process too (``world.env``), so bench functions that build settings from the environment see the
same world. ``close()`` stops what was started, by PID.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.settings import LoadtestConfig
from treeserve import contract
from treeserve.procs import free_port

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BenchWorld:
    """The world's settings, environment and running servers."""

    home: Path
    settings: LoadtestConfig
    env: dict[str, str]
    """TREESERVE_* variables describing this world (applied to ``os.environ`` when built with apply_env)."""
    model: str = ""
    version: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)
    triton: Any = None
    """exporter.triton_server.TritonServer once started."""
    gateway: Any = None
    """gateway.server.GatewayProcess once started."""

    def start_triton(self) -> Any:
        """Start Triton on the world's repository and load the model (idempotent)."""
        if self.triton is None:
            from exporter.triton_server import TritonServer

            t0 = time.perf_counter()
            server = TritonServer.from_settings(self.settings)
            server.start()
            self.triton = server
            server.load_model(self.model)
            server.admin.wait_version_ready(self.model, self.version)
            self.timings_s["triton_start"] = round(time.perf_counter() - t0, 2)
        return self.triton

    def start_gateway(self, *, workers: int = 1) -> Any:
        """Start the gateway (after Triton) and wait for /readyz (idempotent)."""
        if self.gateway is None:
            from gateway.server import GatewayProcess

            self.start_triton()
            t0 = time.perf_counter()
            g = self.settings.gateway
            proc = GatewayProcess(
                env=self.env_for_children(),
                port=g.port,
                grpc_port=g.grpc_port,
                workers=workers,
                log_file=self.home / "var" / "gateway" / "gateway.log",
            )
            proc.start(timeout_s=90)
            self.gateway = proc
            self.timings_s["gateway_start"] = round(time.perf_counter() - t0, 2)
        return self.gateway

    def env_for_children(self) -> dict[str, str]:
        """The full environment a child process of this world should get."""
        base = {
            k: v
            for k, v in os.environ.items()
            if not (k.startswith("TREESERVE_") or k == "MLFLOW_TRACKING_URI")
        }
        return {**base, **self.env, "OMP_NUM_THREADS": "1"}

    def close(self) -> None:
        """Stop the gateway and Triton (by PID) and drop the Redis keys of this world's Feast project."""
        if self.gateway is not None:
            try:
                self.gateway.stop()
            finally:
                self.gateway = None
        if self.triton is not None:
            try:
                self.triton.stop()
            finally:
                self.triton = None
        if self.settings.feast.online_store == "redis":
            try:
                drop_redis_project(self.settings.feast.redis_connection_string, self.settings.feast.project)
            except Exception as e:  # best effort: never hide the benchmark's own result
                log.warning("dropping the world's Redis keys failed: %s", e)


def drop_redis_project(connection_string: str, project: str) -> int:
    """Delete the Feast Redis keys of ``project`` (they end with the project name); the count.

    Only this world's unique project is touched — never a FLUSHDB.
    """
    import redis

    host, _, rest = connection_string.partition(":")
    port, *options = rest.split(",") if rest else ["6379"]
    db = next((int(o.split("=", 1)[1]) for o in options if o.startswith("db=")), 0)
    client: Any = redis.Redis(host=host or "127.0.0.1", port=int(port or 6379), db=db)
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=b"*" + project.encode(), count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(client.delete(*batch))
            batch.clear()
    if batch:
        deleted += int(client.delete(*batch))
    client.close()
    log.info("dropped %d Redis keys of Feast project %s", deleted, project)
    return deleted


def _redis_up(url: str) -> bool:
    import socket

    host, _, port = url.split(",")[0].partition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=0.5):
            return True
    except OSError:
        return False


def world_env(home: Path, *, n_customers: int, online_store: str) -> dict[str, str]:
    """TREESERVE_* variables for a world in ``home`` with fresh ports and a unique Feast project."""
    env = {
        "TREESERVE_HOME": str(home),
        "TREESERVE_DATA__N_CUSTOMERS": str(n_customers),
        "TREESERVE_FEAST__ONLINE_STORE": online_store,
        "TREESERVE_FEAST__PROJECT": f"bench_{os.getpid()}_{int(time.time())}",
        "TREESERVE_TRITON__HTTP_PORT": str(free_port()),
        "TREESERVE_TRITON__GRPC_PORT": str(free_port()),
        "TREESERVE_TRITON__METRICS_PORT": str(free_port()),
        "TREESERVE_TRITON__VENV": str(PROJECT_ROOT / ".venv-triton"),
        "TREESERVE_FEAST__REPO_PATH": str(PROJECT_ROOT / "feature_repo"),
        "TREESERVE_GATEWAY__HOST": "127.0.0.1",
        "TREESERVE_GATEWAY__PORT": str(free_port()),
        "TREESERVE_GATEWAY__GRPC_PORT": str(free_port()),
        "TREESERVE_LOADTEST__REPORTS_DIR": str(home / "reports" / "loadtest"),
    }
    env["TREESERVE_GATEWAY__TRITON__HTTP_URL"] = f"127.0.0.1:{env['TREESERVE_TRITON__HTTP_PORT']}"
    return env


def build_world(
    home: Path,
    *,
    n_customers: int = 2000,
    online_store: str = "redis",
    step: Callable[[str], None] | None = None,
    apply_env: bool = True,
) -> BenchWorld:
    """Generate, materialize, train, promote and export: a world ready for Triton and the gateway.

    ``apply_env`` also sets the world's TREESERVE_* variables in this process (the bench suite);
    tests pass False and hand ``world.env`` to the children only.
    """
    from treeserve_app.settings import load_settings

    say = step or (lambda m: log.info("%s", m))
    if online_store == "redis" and not _redis_up(
        os.environ.get("TREESERVE_FEAST__REDIS_CONNECTION_STRING", "127.0.0.1:6379")
    ):
        log.warning("Redis is not reachable: the bench world uses the SQLite online store")
        online_store = "sqlite"
    home.mkdir(parents=True, exist_ok=True)
    env = world_env(home, n_customers=n_customers, online_store=online_store)
    saved = dict(os.environ)
    for k in [k for k in os.environ if k.startswith("TREESERVE_") or k == "MLFLOW_TRACKING_URI"]:
        if k not in env:
            os.environ.pop(k)
    os.environ.update(env)
    try:
        settings = load_settings()
    finally:
        if not apply_env:  # tests: build the settings from the world's variables, leave the process alone
            os.environ.clear()
            os.environ.update(saved)
    world = BenchWorld(home=home, settings=settings, env=env, model=settings.mlflow.model_name)

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        say(name)
        t0 = time.perf_counter()
        out = fn()
        world.timings_s[name] = round(time.perf_counter() - t0, 2)
        return out

    from training.data import generate_world
    from training.features import apply_features, materialize
    from training.train import train

    d = settings.data
    timed(
        "generate data",
        lambda: generate_world(
            settings.path(d.data_dir), n_customers=d.n_customers, n_days=d.n_days, seed=d.seed
        ),
    )
    timed("feast apply", lambda: apply_features(settings))
    timed("feast materialize", lambda: materialize(settings))
    result = timed("train", lambda: train(settings))
    world.version = str(result.version)

    from exporter.install import export
    from exporter.source import mlflow_client

    client = mlflow_client(settings)
    client.set_registered_model_alias(world.model, contract.ALIAS_CHAMPION, world.version)
    timed("export", lambda: export(settings, client, world.model, alias=contract.ALIAS_CHAMPION))
    return world
