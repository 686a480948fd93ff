"""Promotion latency: alias moved in the registry -> Triton serves the new version.

Measured end to end from outside, like a user sees it: the clock starts right before
``set_registered_model_alias`` (through ``mlflow server``) and stops when ``config.pbtxt`` routes
``champion`` to that version and Triton reports it READY. Two wake-up paths, each with the same
``treeserve sync --watch`` service (in-process thread):

- **webhook**: MLflow's ``model_version_alias.created`` webhook wakes the sync (poll far away);
- **poll**: no webhook, the sync polls every ``poll_interval_s``.

- **webhook**: each version is registered, staged by the sync ahead of its promotion (MLflow's
  ``model_version.created`` webhook starts it; ``sync.prestage_max``), then promoted: the
  promotion is a routing switch. The Triton memory the staged version costs is measured too.
- **poll**: each version is registered right before its promotion, so the pass that finds the
  alias moved does the whole work (export + validation + Triton load + canary + switch).

Each path then rolls back to an already loaded version (routing switch only). Runs its own
``mlflow server`` (SQLite backend, webhook variables set) and Triton on free ports under ``out_dir``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.machine import process_tree_sum
from loadtest.settings import LoadtestConfig
from treeserve.procs import free_port, http_ok, pid_alive, start_background, stop_pid, wait_until
from treeserve.registry import ensure_registered_model, mlflow_client

log = logging.getLogger(__name__)

MODEL = "promotion-bench"
FEATURES = ("recency_days", "orders_90d", "spend_usd", "tickets_30d", "tenure_days", "open_rate")
BENCH_POLL_INTERVAL_S = 10.0
"""Poll interval for the poll-only path (the default, 30 s, would only make the bench slower)."""
PRESTAGE_TIMEOUT_S = 120.0
"""How long a registered version may take to be staged before its promotion (normally seconds)."""


def run_promotion_bench(
    settings: LoadtestConfig, *, out_dir: Path, repeats: int = 3, quick: bool = False
) -> dict[str, Any]:
    """Promotion latency via webhook and via polling; medians with min/max in seconds."""
    from cryptography.fernet import Fernet

    from exporter.sync.registration import register_webhook
    from exporter.sync.service import WEBHOOK_PATH

    repeats = 1 if quick else max(1, repeats)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fernet_key = Fernet.generate_key().decode()
    with _mlflow_server(out_dir / "mlflow", fernet_key) as url, _triton(settings, out_dir) as triton:
        client = mlflow_client(url)
        # Versions: 1 warm-up, then `repeats` fresh ones per path, each registered when its turn
        # comes (two trained models, registered alternately: every version is still exported,
        # validated and loaded on its own).
        logged = [_log_model(url, seed) for seed in (1, 2)]
        warm_version = _register(client, logged[0])
        port = free_port()
        secret = uuid.uuid4().hex
        bench_settings = _settings(settings, out_dir, url, triton, port=port, secret=secret)
        # Served = routed and READY on the bench's Triton (its HTTP per-version ready endpoint).
        promote = functools.partial(_promote, client, http_url=triton.http_url)

        with _service(
            bench_settings.model_copy(
                update={"sync": bench_settings.sync.model_copy(update={"poll_interval_s": 3600.0})}
            )
        ):
            hook_id = register_webhook(
                client, f"http://127.0.0.1:{port}{WEBHOOK_PATH}", secret=secret, name="bench"
            )
            time.sleep(1.5)  # server-side webhook list cache (MLFLOW_WEBHOOK_CACHE_TTL=1)
            warm = promote(bench_settings, warm_version, timeout_s=120)
            promoted = [warm_version]
            webhook_new, staged_s, staged_mib = [], [], []
            for i in range(repeats):
                rss_before = _triton_rss_mib(triton)
                t0 = time.perf_counter()
                v = _register(client, logged[(i + 1) % 2])
                _wait_staged(bench_settings, v, timeout_s=PRESTAGE_TIMEOUT_S)
                staged_s.append(time.perf_counter() - t0)
                staged_mib.append(_triton_rss_mib(triton) - rss_before)
                webhook_new.append(promote(bench_settings, v, timeout_s=120))
                promoted.append(v)
            # Back to the previous champion, still loaded for rollback.
            webhook_rollback = [promote(bench_settings, promoted[-2], timeout_s=60)]
            client.delete_webhook(hook_id)

        poll_settings = bench_settings.model_copy(
            update={
                "sync": bench_settings.sync.model_copy(
                    update={"poll_interval_s": BENCH_POLL_INTERVAL_S, "webhook_port": free_port()}
                )
            }
        )
        with _service(poll_settings):
            time.sleep(2.0)
            # A promotion lands at a random point of the poll cycle (not right after a pass).
            rng = random.Random(0)
            poll_new, poll_rollback = [], []
            for i in range(repeats):
                time.sleep(rng.uniform(0, BENCH_POLL_INTERVAL_S))
                v = _register(client, logged[i % 2])  # right before its promotion: not staged
                poll_new.append(promote(poll_settings, v, timeout_s=180))
                promoted.append(v)
            time.sleep(rng.uniform(0, BENCH_POLL_INTERVAL_S))
            poll_rollback.append(promote(poll_settings, promoted[-2], timeout_s=120))

    result = {
        "title": "Promotion latency (alias set → new version served)",
        "command": "python -m loadtest.bench --only promotion",
        "promotion_latency_webhook_s": _summary(webhook_new),
        "promotion_latency_poll_s": _summary(poll_new),
        "promotion_latency_webhook_rollback_s": _summary(webhook_rollback),
        "promotion_latency_poll_rollback_s": _summary(poll_rollback),
        "warmup_first_promotion_s": round(warm, 3),
        "prestage_after_registration_s": _summary(staged_s),
        "prestage_triton_memory_mib": _summary(staged_mib),
        "poll_interval_s": BENCH_POLL_INTERVAL_S,
        "rows": [
            {
                "path": "webhook",
                "promotion": "new version, staged ahead (routing switch)",
                **_summary(webhook_new),
            },
            {"path": "webhook", "promotion": "rollback to a loaded version", **_summary(webhook_rollback)},
            {
                "path": f"poll every {BENCH_POLL_INTERVAL_S:g} s",
                "promotion": "new version",
                **_summary(poll_new),
            },
            {
                "path": f"poll every {BENCH_POLL_INTERVAL_S:g} s",
                "promotion": "rollback",
                **_summary(poll_rollback),
            },
        ],
        "notes": [
            "Clock: right before set_registered_model_alias (via mlflow server) until config.pbtxt routes "
            "champion to the version and Triton reports it READY.",
            "Webhook: each new version is registered, and the sync stages it (export, parity, load on "
            "Triton beside the serving versions, canary; sync.prestage_max=1) on MLflow's "
            "model_version.created webhook; once it is staged (prestage_after_registration_s) it is "
            "promoted, which only switches the routing. prestage_triton_memory_mib: Triton's resident "
            "memory (process tree) after staging minus before.",
            "Poll: each new version is registered right before its promotion, so the pass does the "
            "whole work: export (ONNX + parity), load beside the serving ones (only the new version "
            "loads), canary, then the switch. Each promotion starts with an idle sync: the pass "
            "that switched the routing ends with a config reload of a few seconds, and a promotion "
            "arriving during it waits for it.",
            "Poll: each promotion lands at a random point of the poll cycle, so latency ≈ U(0, interval) "
            "of waiting + the same work; the default interval is 30 s.",
        ],
    }
    log.info("promotion bench: %s", {k: v for k, v in result.items() if k.startswith("promotion_")})
    return result


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def _promote(
    client: Any, settings: LoadtestConfig, version: str, *, http_url: str, timeout_s: float
) -> float:
    """Move champion to ``version``; seconds until it is routed and READY."""
    from treeserve.repository import read_model_config

    repo = settings.path(settings.exporter.repository)
    # The per-version ready endpoint answers at once; the repository index waits while Triton loads.
    ready_url = f"{http_url}/v2/models/{MODEL}/versions/{version}/ready"

    def served() -> bool:
        try:
            if read_model_config(repo, MODEL).routing.get("champion") != version:
                return False
        except Exception:
            return False
        return http_ok(ready_url, timeout_s=1.0)

    t0 = time.perf_counter()
    client.set_registered_model_alias(MODEL, "champion", version)
    if not wait_until(served, timeout_s=timeout_s, interval_s=0.05):
        raise TimeoutError(f"version {version} was not served within {timeout_s:g} s")
    latency_s = time.perf_counter() - t0
    log.info("promoted %s in %.2f s", version, latency_s)
    _settle(settings, since=time.time())
    return latency_s


def _wait_staged(settings: LoadtestConfig, version: str, *, timeout_s: float) -> None:
    """Wait until the sync reports ``version`` staged (loaded and canaried, not routed) and is idle."""
    from exporter.sync.status import read_status

    path = settings.path(settings.sync.status_file)

    def staged() -> bool:
        st = read_status(path).models.get(MODEL)
        return st is not None and version in st.prestaged

    if not wait_until(staged, timeout_s=timeout_s, interval_s=0.1):
        raise TimeoutError(f"version {version} was not staged within {timeout_s:g} s (see the sync log)")


def _triton_rss_mib(triton: Any) -> float:
    """Resident memory of the Triton process and its children (Python-backend stubs), MiB."""
    return process_tree_sum(triton.pid(), lambda p: p.memory_info().rss) / 2**20


def _settle(settings: LoadtestConfig, *, since: float, timeout_s: float = 120.0) -> None:
    """Wait until the pass that switched the routing has finished (status file written after it).

    A pass ends with a config reload after the switch (a few seconds); a promotion arriving
    meanwhile waits for it. Promotions here are spaced like real ones, each one to an idle sync.
    """
    from exporter.sync.status import read_status

    path = settings.path(settings.sync.status_file)
    wait_until(lambda: read_status(path).updated_at >= since, timeout_s=timeout_s, interval_s=0.1)


def _log_model(tracking_uri: str, seed: int) -> Any:
    """A binary XGBoost model (50 trees, 6 features) logged the way user code does it."""
    import mlflow
    import pandas as pd
    import xgboost as xgb
    from mlflow.models import infer_signature

    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(1000, len(FEATURES))), columns=list(FEATURES))
    y = (X.iloc[:, 0] - 0.5 * X.iloc[:, 1] + rng.normal(0, 0.7, len(X)) > 0).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "eta": 0.2, "seed": seed},
        xgb.DMatrix(X, label=y),
        num_boost_round=50,
    )
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        with mlflow.start_run():
            return mlflow.xgboost.log_model(
                booster,
                name="model",
                signature=infer_signature(X, booster.predict(xgb.DMatrix(X))),
                input_example=X.head(5),
                pip_requirements=["xgboost"],
            )
    finally:  # the process's default registry is not this bench's server (later benches use theirs)
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def _register(client: Any, info: Any) -> str:
    """Register a logged model as the next version of the bench model."""
    ensure_registered_model(client, MODEL)
    mv = client.create_model_version(MODEL, info.model_uri, run_id=info.run_id, model_id=info.model_id)
    return str(mv.version)


def _settings(
    settings: LoadtestConfig, out_dir: Path, url: str, triton: Any, *, port: int, secret: str
) -> Any:
    return settings.model_copy(
        update={
            "home": out_dir,
            "mlflow": settings.mlflow.model_copy(update={"tracking_uri": url}),
            "exporter": settings.exporter.model_copy(update={"repository": triton.repository}),
            "sync": settings.sync.model_copy(
                update={
                    "models": [MODEL],
                    "triton_url": triton.admin_url,
                    "webhook_host": "127.0.0.1",
                    "webhook_port": port,
                    "webhook_secret": secret,
                    "status_file": out_dir / "sync" / "status.json",
                    "lock_file": out_dir / "sync" / "sync.lock",
                }
            ),
        }
    )


@contextlib.contextmanager
def _service(settings: LoadtestConfig) -> Iterator[None]:
    from exporter.sync.service import serve

    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(settings,), kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=120)


@contextlib.contextmanager
def _mlflow_server(workdir: Path, fernet_key: str) -> Iterator[str]:
    """``mlflow server`` on a SQLite backend (webhooks fire from server handlers) on a free port."""
    import os

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        {
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": fernet_key,
            "MLFLOW_WEBHOOK_CACHE_TTL": "1",
            "OMP_NUM_THREADS": "1",
        }
    )
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination",
        str(workdir / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = start_background(cmd, log_file=workdir / "mlflow-server.log", env=env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        ok: Callable[[], bool] = lambda: http_ok(f"{url}/health")  # noqa: E731
        if not wait_until(ok, timeout_s=120, interval_s=0.25, alive=lambda: pid_alive(proc.pid)):
            raise RuntimeError(f"mlflow server did not start; see {workdir / 'mlflow-server.log'}")
        yield url
    finally:
        stop_pid(proc.pid)


@contextlib.contextmanager
def _triton(settings: LoadtestConfig, out_dir: Path) -> Iterator[Any]:
    from exporter.triton_server import TritonServer, resolve_venv

    t = settings.triton
    server = TritonServer(
        venv=resolve_venv(settings.path(t.venv), t.venv),
        repository=out_dir / "model_repository",
        run_dir=out_dir / "triton",
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        startup_timeout_s=t.startup_timeout_s,
        load_timeout_s=t.load_timeout_s,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
