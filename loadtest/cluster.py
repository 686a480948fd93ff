"""N Triton servers x M gateways x one ``sync --watch`` on loopback, under steady load.

The building blocks the multi-Triton integration test and the ``multi_triton`` benchmark share:

- :class:`Cluster`: Triton servers on one shared model repository (not started until asked),
  one ``treeserve sync --watch`` driving all of them (``TREESERVE_SYNC__TRITON_URLS``) and
  gateways balancing over all of them (``TREESERVE_GATEWAY__TRITON__HTTP_URLS``); free ports,
  own state under one folder, everything stopped by PID.
- :class:`Load`: async clients spread over the gateways, every answer kept as an
  :data:`Answer`; the figures are computed from those answers by the pure functions below
  (:func:`mixed_window_s`, :func:`every_gateway_answers`, :func:`first_answer_s`).
- :func:`private_registry`: a copy of a SQLite MLflow with a second version of a model, so
  aliases move there only.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from exporter.triton_admin import TritonAdminClient
from exporter.triton_server import TritonServer
from gateway.server import GatewayProcess
from treeserve import procs
from treeserve.repository import read_model_config

CLIENTS = 8
Answer = tuple[float, int, int, str]
"""(monotonic time, gateway index, HTTP status (0: no answer), model version or error text)."""

SYNC_ENV: dict[str, str] = {
    "TREESERVE_SYNC__POLL_INTERVAL_S": "1",
    "TREESERVE_SYNC__HEALTH_INTERVAL_S": "0.5",
    "TREESERVE_SYNC__KEEP_CHAMPIONS": "1",
    "TREESERVE_SYNC__UNLOAD_GRACE_S": "1.5",
}
"""Sync settings of the loopback test: quick passes, one previous champion kept."""
GATEWAY_ENV: dict[str, str] = {
    "TREESERVE_GATEWAY__TRITON__BREAKER_RESET_S": "0.5",
    # A deadline for a shared 2-core machine that also loads models on several servers.
    "TREESERVE_GATEWAY__TRITON__TIMEOUT_S": "2",
    "TREESERVE_GATEWAY__ROUTING_POLL_INTERVAL_S": "0.5",
}
"""Gateway settings of the loopback test."""


# ---- what the answers say (pure) -------------------------------------------------------------


def failed(
    answers: Iterable[Answer], *, since: float = float("-inf"), until: float = float("inf")
) -> list[Answer]:
    """Answers other than 200 between ``since`` and ``until``."""
    return [a for a in answers if since <= a[0] <= until and a[2] != 200]


def every_gateway_answers(answers: Iterable[Answer], n_gateways: int, version: str, since: float) -> bool:
    """True when the last 200 answer of each of the ``n_gateways`` since ``since`` carries ``version``."""
    last: dict[int, str] = {}
    for t, g, status, v in answers:
        if t >= since and status == 200:
            last[g] = v
    return len(last) == n_gateways and set(last.values()) == {version}


def mixed_window_s(answers: Iterable[Answer], old: str, new: str, since: float) -> float:
    """Seconds from the first 200 answer with ``new`` to the last with ``old`` (answers since
    ``since``; 0 when no ``old`` answer follows the first ``new``, NaN when ``new`` never came)."""
    served = [(t, v) for t, _, s, v in answers if t >= since and s == 200]
    first_new = min((t for t, v in served if v == new), default=None)
    if first_new is None:
        return float("nan")
    last_old = max((t for t, v in served if v == old), default=first_new)
    return max(0.0, last_old - first_new)


def first_answer_s(answers: Iterable[Answer], version: str, since: float) -> float | None:
    """Seconds from ``since`` to the first 200 answer with ``version`` (None: none yet)."""
    first = min((t for t, _, s, v in answers if t >= since and s == 200 and v == version), default=None)
    return None if first is None else first - since


# ---- load ------------------------------------------------------------------------------------


class Load:
    """``clients`` async clients (one thread) spread over the gateways' HTTP APIs, each asking for
    one known entity in a closed loop; every answer is kept in :attr:`answers`."""

    def __init__(
        self,
        urls: Sequence[str],
        ids: Sequence[str],
        model: str,
        *,
        clients: int = CLIENTS,
        max_s: float = 240,
    ) -> None:
        self.urls, self.ids, self.path = list(urls), list(ids), f"/v1/models/{model}/predict"
        self.clients, self.max_s = clients, max_s
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_s  # bounded even if the caller fails
        async with httpx.AsyncClient(timeout=10.0) as c:

            async def client(k: int) -> None:
                i = k
                while not self._stop.is_set() and time.monotonic() < deadline:
                    i += self.clients
                    g = i % len(self.urls)
                    body = {"entities": [{"customer_id": self.ids[i % len(self.ids)]}]}
                    try:
                        r = await c.post(self.urls[g] + self.path, json=body)
                        what = r.json().get("model_version", "") if r.status_code == 200 else r.text[:200]
                        self.answers.append((time.monotonic(), g, r.status_code, what))
                    except httpx.HTTPError as e:
                        self.answers.append((time.monotonic(), g, 0, repr(e)))

            await asyncio.gather(*(client(k) for k in range(self.clients)))

    def snapshot(self) -> list[Answer]:
        """The answers so far (a copy: the load thread keeps appending)."""
        return list(self.answers)

    def count(self) -> int:
        return len(self.answers)

    def more(self, n: int, timeout_s: float = 60) -> bool:
        """Wait for ``n`` more answers; False when they did not come within ``timeout_s``."""
        start = self.count()
        return procs.wait_until(lambda: self.count() >= start + n, timeout_s=timeout_s, interval_s=0.05)

    def failed(self) -> list[Answer]:
        return failed(self.snapshot())

    def every_gateway_answers(self, version: str, since: float) -> bool:
        return every_gateway_answers(self.snapshot(), len(self.urls), version, since)

    def mixed_window_s(self, old: str, new: str, since: float) -> float:
        return mixed_window_s(self.snapshot(), old, new, since)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# ---- the servers -----------------------------------------------------------------------------


def private_registry(tracking_uri: str, model: str, version: str, folder: Path) -> tuple[str, str]:
    """A copy of a SQLite MLflow (artifacts stay where they are, read only) with ``version`` of
    ``model`` registered once more; (tracking URI of the copy, the new version)."""
    import mlflow
    from mlflow import MlflowClient

    src = Path(tracking_uri.removeprefix("sqlite:///"))
    folder.mkdir(parents=True)
    shutil.copy(src, folder / "mlflow.db")
    with sqlite3.connect(folder / "mlflow.db") as db:
        db.execute("PRAGMA wal_checkpoint")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version(model, version)
    # MLflow resolves a logged-model source (models:/m-...) through the process's default tracking
    # URI, not the client's: point it at the copy while registering.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        new = client.create_model_version(
            model,
            str(mv.source),
            run_id=mv.run_id,
            tags=dict(mv.tags or {}),  # the contract (features, encodings, entity keys) travels in tags
            model_id=getattr(mv, "model_id", None),
        )
    finally:
        mlflow.set_tracking_uri(previous)
    return uri, str(new.version)


def routing(repository: Path, model: str) -> dict[str, str]:
    """alias -> version as the repository routes ``model`` now ({} when unreadable)."""
    try:
        return dict(read_model_config(repository, model).routing)
    except Exception:
        return {}


def ready_on(url: str, model: str) -> set[str]:
    """The versions of ``model`` READY on the Triton at ``url`` (empty when it does not answer)."""
    try:
        with TritonAdminClient(url, timeout_s=2.0) as c:
            return c.ready_versions(model)
    except Exception:
        return set()


def kill_triton(server: TritonServer) -> None:
    """``kill -9`` of a Triton server's process group (nothing when it is not running)."""
    pid = server.pid()
    if pid is not None:
        os.killpg(pid, signal.SIGKILL)
        procs.wait_until(lambda: not procs.pid_alive(pid), timeout_s=10, interval_s=0.02)


class Cluster:
    """Triton servers on one repository, one ``sync --watch`` and gateways, under ``work_dir``.

    ``env`` is the full environment of the children (a world's settings); the cluster adds the
    repository, the registry, the model and the server lists. Use as a context manager: every
    process it started is stopped by PID on exit.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        env: Mapping[str, str],
        model: str,
        tracking_uri: str,
        triton_venv: Path,
        n_tritons: int,
        sync_env: Mapping[str, str] = SYNC_ENV,
        gateway_env: Mapping[str, str] = GATEWAY_ENV,
    ) -> None:
        self.work_dir = work_dir
        self.model = model
        self.repository = work_dir / "model_repository"
        self.repository.mkdir(parents=True, exist_ok=True)
        self.tritons = [
            TritonServer(
                venv=triton_venv,
                repository=self.repository,
                run_dir=work_dir / f"triton-{k}",
                http_port=procs.free_port(),
                grpc_port=procs.free_port(),
                metrics_port=procs.free_port(),
                startup_timeout_s=90.0,
                load_timeout_s=90.0,
            )
            for k in range(n_tritons)
        ]
        self.status_file = work_dir / "sync" / "status.json"
        self.env = {
            **env,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "TREESERVE_MLFLOW__TRACKING_URI": tracking_uri,
            "TREESERVE_EXPORTER__REPOSITORY": str(self.repository),
            "TREESERVE_GATEWAY__MODEL": model,
        }
        self.sync_env = {
            **self.env,
            "TREESERVE_SYNC__MODELS": json.dumps([model]),
            "TREESERVE_SYNC__TRITON_URLS": json.dumps([s.admin_url for s in self.tritons]),
            "TREESERVE_SYNC__WEBHOOK_PORT": str(procs.free_port()),
            "TREESERVE_SYNC__STATUS_FILE": str(self.status_file),
            "TREESERVE_SYNC__LOCK_FILE": str(work_dir / "sync" / "sync.lock"),
            **sync_env,
        }
        self.gateway_env = {
            **self.env,
            "TREESERVE_GATEWAY__TRITON__HTTP_URLS": json.dumps([s.http_url for s in self.tritons]),
            **gateway_env,
        }
        self.sync: subprocess.Popen[bytes] | None = None
        self.gateways: list[GatewayProcess] = []

    @property
    def sync_log(self) -> Path:
        return self.work_dir / "sync.log"

    @property
    def exe(self) -> str:
        """The ``treeserve`` command of this interpreter's environment."""
        return str(Path(sys.executable).with_name("treeserve"))

    def start_sync(self) -> None:
        """``treeserve sync --watch`` over every Triton of the cluster."""
        self.sync = procs.start_background(
            [self.exe, "sync", "--watch"], log_file=self.sync_log, env=self.sync_env
        )

    def sync_alive(self) -> bool:
        return self.sync is not None and self.sync.poll() is None

    def wait_routed(self, version: str, *, timeout_s: float = 120) -> bool:
        """Wait until the repository routes ``champion`` to ``version`` (False: sync died or timed out)."""
        return procs.wait_until(
            lambda: routing(self.repository, self.model) == {"champion": version},
            timeout_s=timeout_s,
            alive=self.sync_alive,
        )

    def start_gateways(self, n: int, *, timeout_s: float = 120) -> list[GatewayProcess]:
        """``n`` gateways over every Triton, started side by side; each keeps its own prediction log."""
        new = []
        for k in range(len(self.gateways), len(self.gateways) + n):
            folder = self.work_dir / f"gateway-{k}"
            env = {**self.gateway_env, "TREESERVE_GATEWAY__PREDLOG_DIR": str(folder / "predlog")}
            new.append(
                GatewayProcess(env=env, port=procs.free_port(), grpc_port=0, log_file=folder / "gateway.log")
            )
        self.gateways += new
        errors: list[BaseException] = []

        def start(g: GatewayProcess) -> None:
            try:
                g.start(timeout_s=timeout_s)
            except BaseException as e:  # re-raised below, in the caller's thread
                errors.append(e)

        starters = [threading.Thread(target=start, args=(g,)) for g in new]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        if errors:
            raise errors[0]
        return new

    def load(self, ids: Sequence[str], **kwargs: Any) -> Load:
        """Load over every gateway of the cluster (start it with ``with``)."""
        return Load([g.url for g in self.gateways], ids, self.model, **kwargs)

    def close(self) -> None:
        """Stop the gateways, the sync and every Triton, by PID."""
        for g in self.gateways:
            g.stop()
        if self.sync is not None:
            procs.stop_pid(self.sync.pid, timeout_s=15)
        for s in self.tritons:
            pid = s.pid()
            s.stop(timeout_s=10.0)
            if pid:
                procs.stop_pid(pid, timeout_s=5.0)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
