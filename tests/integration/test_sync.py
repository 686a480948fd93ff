"""Promotion-driven sync against a real ``mlflow server`` on PostgreSQL and a real Triton.

Each test registers its own small XGBoost model (unique name) in the session's MLflow server and
syncs it into the session's Triton repository, so tests share the two servers but no state.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter.sync.reconcile import reconcile_once
from exporter.triton_admin import TritonAdminClient
from tests.fixtures.triton import private_triton
from treeserve.procs import free_port, wait_until
from treeserve.repository import read_model_config, read_version_metadata, version_dir
from treeserve_app.settings import load_settings

pytestmark = pytest.mark.integration

FEATURES = ["recency_days", "orders_90d", "spend_usd", "tickets_30d"]


# ---- helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedModel:
    """A model logged once per module; tests register versions of it under their own names."""

    source: str
    run_id: str
    model_id: str


def log_small_model(tracking_uri: str, *, seed: int) -> LoggedModel:
    """Train a small binary XGBoost model and log it as user code would (signature, example)."""
    import mlflow
    import pandas as pd
    import xgboost as xgb
    from mlflow.models import infer_signature

    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(400, len(FEATURES))), columns=FEATURES)
    X.loc[rng.random(len(X)) < 0.1, "spend_usd"] = np.nan
    y = (X["recency_days"] - 0.5 * X["orders_90d"] + rng.normal(0, 0.7, len(X)) > 0).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "seed": seed},
        xgb.DMatrix(X, label=y),
        num_boost_round=8 + seed,
    )
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with mlflow.start_run() as run:
        info = mlflow.xgboost.log_model(
            booster,
            name="model",
            signature=infer_signature(X, booster.predict(xgb.DMatrix(X))),
            input_example=X.head(5),
            pip_requirements=["xgboost"],  # skip requirement inference: slow and irrelevant here
        )
    return LoggedModel(source=info.model_uri, run_id=run.info.run_id, model_id=info.model_id)


@pytest.fixture(scope="module")
def logged(mlflow_server: Any) -> list[LoggedModel]:
    """Two different logged models, trained once for the module (versions alternate between them)."""
    return [log_small_model(mlflow_server.url, seed=seed) for seed in (1, 2)]


def register(client: Any, model: str, logged_model: LoggedModel) -> str:
    """Register ``logged_model`` as the next version of ``model``; the version string."""
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):
        client.create_registered_model(model)
    mv = client.create_model_version(
        model, logged_model.source, run_id=logged_model.run_id, model_id=logged_model.model_id
    )
    return str(mv.version)


def sync_settings(home: Path, mlflow_url: str, triton: Any, model: str, **sync: Any) -> Any:
    """Settings for one test: its own home (status, lock), the shared servers, one model."""
    return load_settings(
        home=home,
        mlflow={"tracking_uri": mlflow_url},
        exporter={"repository": str(triton.repository)},
        sync={"models": [model], "triton_url": triton.http_url, "unload_grace_s": 0.2, **sync},
    )


def mlflow_client(url: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def routing(settings: Any, model: str) -> dict[str, str]:
    return read_model_config(settings.path(settings.exporter.repository), model).routing


def ready(triton: Any, model: str) -> set[str]:
    with TritonAdminClient(triton.http_url) as admin:
        return admin.ready_versions(model)


def score(triton: Any, model: str, version: str, x: np.ndarray) -> np.ndarray:
    with TritonAdminClient(triton.http_url) as admin:
        return admin.infer(model, version, x, ["probabilities"])["probabilities"]


def env_for(settings: Any, model: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TREESERVE_", "MLFLOW_"))}
    env.update(
        {
            "TREESERVE_HOME": str(settings.home),
            "TREESERVE_MLFLOW__TRACKING_URI": settings.mlflow.tracking_uri,
            "TREESERVE_EXPORTER__REPOSITORY": str(settings.exporter.repository),
            "TREESERVE_SYNC__MODELS": json.dumps([model]),
            "TREESERVE_SYNC__TRITON_URL": settings.sync.triton_url,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "OMP_NUM_THREADS": "1",
        }
    )
    return env


def cli(monkeypatch: pytest.MonkeyPatch, settings: Any, model: str, *args: str, exit_code: int = 0) -> str:
    """Run ``treeserve ARGS`` in-process with settings from the environment; its stdout (``exit_code``)."""
    from typer.testing import CliRunner

    from treeserve_app import clikit
    from treeserve_app.cli import app

    for key, value in env_for(settings, model).items():
        if key.startswith(("TREESERVE_", "MLFLOW_")):
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(clikit, "_settings", None)
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == exit_code, result.output
    return result.stdout


@pytest.fixture
def model_name() -> str:
    return f"sync-{uuid.uuid4().hex[:8]}"


# ---- tests -----------------------------------------------------------------------------------


def test_promote_keep_rollback_and_challenger(
    tmp_path, mlflow_server, logged, triton_server, model_name
) -> None:
    """Promote -> served; second version -> served, first kept; rollback without re-export; challenger."""
    url = mlflow_server.url
    client = mlflow_client(url)
    settings = sync_settings(tmp_path, url, triton_server, model_name)
    v1 = register(client, model_name, logged[0])
    v2 = register(client, model_name, logged[1])

    client.set_registered_model_alias(model_name, "champion", v1)
    first = reconcile_once(settings, client=client)
    assert first.ok, first.models[model_name].message
    assert routing(settings, model_name) == {"champion": v1}
    # v2, newer than the champion, is staged ahead of its promotion: loaded and canaried, not routed.
    assert ready(triton_server, model_name) == {v1, v2}
    assert first.models[model_name].prestaged == [v2]
    v2_export = read_version_metadata(triton_server.repository, model_name, v2).exported_at
    # Triton's answer for v1 is the registered model's answer.
    ref = np.load(version_dir(triton_server.repository, model_name, v1) / "reference.npz")
    np.testing.assert_allclose(
        score(triton_server, model_name, v1, ref["inputs"][:16]), ref["probabilities"][:16], atol=1e-5
    )

    client.set_registered_model_alias(model_name, "champion", v2)
    second = reconcile_once(settings, client=client)
    assert second.ok
    assert routing(settings, model_name) == {"champion": v2}
    assert ready(triton_server, model_name) == {v1, v2}, "the previous champion stays loaded for rollback"
    assert read_version_metadata(triton_server.repository, model_name, v2).exported_at == v2_export, (
        "promoting a staged version is a routing switch: no second export"
    )
    # One champion history: the registry's, which `treeserve rollback` reads, names what is kept.
    history = json.loads(client.get_registered_model(model_name).tags["treeserve.champion_history"])
    assert history == [v1, v2] and second.models[model_name].retained == [v1]
    v1_export = read_version_metadata(triton_server.repository, model_name, v1).exported_at
    v1_inode = (version_dir(triton_server.repository, model_name, v1) / "model.onnx").stat().st_ino

    client.set_registered_model_alias(model_name, "champion", v1)
    rollback = reconcile_once(settings, client=client)
    assert rollback.ok
    assert routing(settings, model_name) == {"champion": v1}
    assert read_version_metadata(triton_server.repository, model_name, v1).exported_at == v1_export
    assert (version_dir(triton_server.repository, model_name, v1) / "model.onnx").stat().st_ino == v1_inode

    client.set_registered_model_alias(model_name, "challenger", v2)
    both = reconcile_once(settings, client=client)
    assert both.ok
    assert routing(settings, model_name) == {"champion": v1, "challenger": v2}
    assert {v1, v2} <= ready(triton_server, model_name)

    # Idempotent: another pass changes nothing.
    again = reconcile_once(settings, client=client)
    assert again.ok and routing(settings, model_name) == {"champion": v1, "challenger": v2}
    status = json.loads(settings.path(settings.sync.status_file).read_text())
    assert status["models"][model_name]["in_sync"] is True


def test_failed_parity_never_replaces_the_champion(
    tmp_path, mlflow_server, logged, triton_server, model_name, monkeypatch
) -> None:
    """A version failing parity: the alias points at it, Triton keeps the old champion, status says why.

    Planted: the second pass runs with a parity tolerance below float32 rounding, so the real
    ONNX-vs-XGBoost check rejects the new version (its outputs differ by ~1e-7).
    """
    url = mlflow_server.url
    client = mlflow_client(url)
    # Nothing staged ahead: v2's parity check runs when it is promoted, under the strict tolerance.
    settings = sync_settings(tmp_path, url, triton_server, model_name, prestage_max=0)
    v1 = register(client, model_name, logged[0])
    v2 = register(client, model_name, logged[1])
    client.set_registered_model_alias(model_name, "champion", v1)
    assert reconcile_once(settings, client=client).ok

    client.set_registered_model_alias(model_name, "champion", v2)
    strict = settings.model_copy(
        update={"exporter": settings.exporter.model_copy(update={"proba_atol": 0.0})}
    )
    result = reconcile_once(strict, client=client)
    assert result.result == "degraded"
    assert routing(settings, model_name) == {"champion": v1}
    assert ready(triton_server, model_name) == {v1}
    assert not version_dir(triton_server.repository, model_name, v2).exists()
    failure = result.models[model_name].failures[v2]
    assert failure.reason == "validation" and "differ from XGBoost" in failure.message

    # degraded: status reports it and exits 1
    text = " ".join(cli(monkeypatch, settings, model_name, "sync", "status", exit_code=1).split())
    assert f"champion -> {v2} is not served (validation" in text
    assert f"still serving {v1}" in text

    as_json = json.loads(cli(monkeypatch, settings, model_name, "sync", "status", "--json", exit_code=1))
    entry = as_json["models"][model_name]
    assert entry["live"]["registry_aliases"]["champion"] == v2
    assert entry["live"]["repository_routing"]["champion"] == v1
    assert entry["live"]["triton_ready_versions"] == [v1]


def test_triton_down_during_a_pass_then_converges(tmp_path, mlflow_server, logged, model_name) -> None:
    """Triton stopped during a pass: the pass fails without partial state; after restart it converges."""
    triton = private_triton(tmp_path / "repo", tmp_path / "triton")
    triton.start()
    try:
        url = mlflow_server.url
        client = mlflow_client(url)
        settings = sync_settings(tmp_path, url, triton, model_name)
        v1 = register(client, model_name, logged[1])
        v2 = register(client, model_name, logged[0])
        client.set_registered_model_alias(model_name, "champion", v1)
        assert reconcile_once(settings, client=client).ok

        client.set_registered_model_alias(model_name, "champion", v2)
        triton.stop()
        down = reconcile_once(settings, client=client)
        assert down.result == "failed" and "unreachable" in down.error
        assert routing(settings, model_name) == {"champion": v1}, "routing untouched while Triton is down"
        assert not any((triton.repository / ".staging").glob(f"{model_name}-*"))
        status = json.loads(settings.path(settings.sync.status_file).read_text())
        assert status["result"] == "failed" and "Triton" in status["models"][model_name]["message"]

        triton.start()
        up = reconcile_once(settings, client=client)
        assert up.ok, up.models[model_name].message
        assert routing(settings, model_name) == {"champion": v2}
        assert ready(triton, model_name) == {v1, v2}
    finally:
        triton.stop()


def test_kill_9_mid_export_then_next_pass_converges(
    tmp_path, mlflow_server, logged, triton_server, model_name
) -> None:
    """``treeserve sync --once`` killed with SIGKILL while exporting: the next pass converges."""
    url = mlflow_server.url
    client = mlflow_client(url)
    settings = sync_settings(tmp_path, url, triton_server, model_name)
    v1 = register(client, model_name, logged[0])
    client.set_registered_model_alias(model_name, "champion", v1)
    env = env_for(settings, model_name)

    exe = str(Path(sys.executable).parent / "treeserve")
    proc = subprocess.Popen([exe, "-v", "sync", "--once"], env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "decision=install" in line:
            time.sleep(0.5)  # inside the export (download/convert/parity/staging)
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the sync finished before it could be killed"
    # A crash leftover from a dead exporter, as a kill during the staging step leaves it.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = triton_server.repository / ".staging" / f"{model_name}-{v1}-{dead.pid}-deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "model.onnx").write_bytes(b"half written")

    result = reconcile_once(settings, client=client)
    assert result.ok, result.models[model_name].message
    assert routing(settings, model_name) == {"champion": v1}
    assert ready(triton_server, model_name) == {v1}
    assert not leftover.exists()


def test_zero_failed_inferences_across_promotion_and_rollback(
    tmp_path, mlflow_server, logged, triton_server, model_name
) -> None:
    """Clients that read the routing and call Triton keep getting answers through promote and rollback."""
    import tritonclient.grpc as grpcclient

    url = mlflow_server.url
    client = mlflow_client(url)
    settings = sync_settings(tmp_path, url, triton_server, model_name, keep_champions=1)
    v1 = register(client, model_name, logged[1])
    v2 = register(client, model_name, logged[0])
    client.set_registered_model_alias(model_name, "champion", v1)
    assert reconcile_once(settings, client=client).ok

    stop = threading.Event()
    served: Counter[str] = Counter()
    errors: list[str] = []

    def loop() -> None:
        grpc = grpcclient.InferenceServerClient(triton_server.grpc_url)
        x = np.zeros((1, len(FEATURES)), dtype=np.float32)
        deadline = time.monotonic() + 180  # bounded even if the test body fails
        while not stop.is_set() and time.monotonic() < deadline:
            version = routing(settings, model_name)["champion"]
            inp = grpcclient.InferInput("features", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            try:
                grpc.infer(model_name, [inp], model_version=version, client_timeout=10)
                served[version] += 1
            except Exception as e:  # every failure counts
                errors.append(f"v{version}: {e}")
        grpc.close()

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        assert wait_until(lambda: served[v1] > 20, timeout_s=30)
        client.set_registered_model_alias(model_name, "champion", v2)
        assert reconcile_once(settings, client=client).ok
        assert wait_until(lambda: served[v2] > 20, timeout_s=30)
        client.set_registered_model_alias(model_name, "champion", v1)
        assert reconcile_once(settings, client=client).ok
        before = served[v1]
        assert wait_until(lambda: served[v1] > before + 20, timeout_s=30)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert errors == [], errors[:5]
    assert served[v1] > 0 and served[v2] > 0


def test_webhook_wakes_the_service_and_bad_signatures_do_nothing(
    tmp_path, mlflow_server, logged, triton_server, model_name
) -> None:
    """MLflow's own webhook wakes ``sync --watch`` (poll interval far away); a forged one gets 401."""
    import httpx

    from exporter.sync.registration import register_webhook
    from exporter.sync.service import WEBHOOK_PATH, serve
    from exporter.sync.webhook import sign

    url = mlflow_server.url
    client = mlflow_client(url)
    port = free_port()
    secret = uuid.uuid4().hex
    settings = sync_settings(
        tmp_path,
        url,
        triton_server,
        model_name,
        webhook_port=port,
        webhook_secret=secret,
        poll_interval_s=600,
    )
    v1 = register(client, model_name, logged[0])
    status_file = settings.path(settings.sync.status_file)
    stop = threading.Event()
    service = threading.Thread(target=serve, args=(settings,), kwargs={"stop": stop}, daemon=True)
    service.start()
    try:
        assert wait_until(status_file.exists, timeout_s=60), "the start-up pass did not run"
        hook = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
        hook_id = register_webhook(client, hook, secret=secret, name=f"sync-test-{model_name}")
        time.sleep(1.5)  # the server caches webhook lists for MLFLOW_WEBHOOK_CACHE_TTL (1 s here)

        body = json.dumps(
            {
                "entity": "model_version_alias",
                "action": "created",
                "timestamp": "2026-01-01T00:00:00+00:00",
                "data": {"name": model_name, "alias": "champion", "version": v1},
            }
        ).encode()
        stamp = str(int(time.time()))
        before = status_file.stat().st_mtime_ns
        forged = httpx.post(
            hook,
            content=body,
            headers={
                "X-MLflow-Delivery-Id": "x",
                "X-MLflow-Timestamp": stamp,
                "X-MLflow-Signature": sign("wrong-secret", "x", stamp, body),
            },
        )
        unsigned = httpx.post(hook, content=body)
        assert (forged.status_code, unsigned.status_code) == (401, 401)
        time.sleep(1.0)
        assert status_file.stat().st_mtime_ns == before, "a rejected delivery must not trigger a pass"

        client.set_registered_model_alias(model_name, "champion", v1)
        assert wait_until(
            lambda: _routing_or_none(settings, model_name) == {"champion": v1}, timeout_s=90, interval_s=0.2
        ), "the webhook did not make the service serve the new champion"
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'treeserve_sync_webhook_deliveries_total{outcome="accepted"}' in metrics
        assert 'treeserve_sync_webhook_deliveries_total{outcome="rejected"} 2.0' in metrics
        assert "treeserve_sync_promotion_latency_seconds_count" in metrics
        assert wait_until(lambda: json.loads(status_file.read_text())["trigger"] == "webhook", timeout_s=60)
        client.delete_webhook(hook_id)
    finally:
        stop.set()
        service.join(timeout=60)


def _routing_or_none(settings: Any, model: str) -> dict[str, str] | None:
    try:
        return routing(settings, model)
    except Exception:
        return None


def test_registry_unreachable_mid_sync_keeps_serving_reports_and_heals(
    tmp_path, model_name, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mlflow server`` (PostgreSQL) killed while a promotion is being exported: Triton keeps
    serving the champion, the pass and the status file name the registry, a pass while it is down
    fails fast the same way, and the first pass after it is back serves the new champion."""
    from exporter.sync import adapters
    from tests.fixtures.mlflow_server import (
        kill_mlflow_server,
        restart_mlflow_server,
        start_mlflow_server,
        stop_mlflow_server,
    )
    from treeserve.registry import FAIL_FAST_HTTP

    for key, value in FAIL_FAST_HTTP.items():  # what `sync --watch` runs with
        monkeypatch.setenv(key, value)
    server = start_mlflow_server(tmp_path / "mlflow")
    triton = private_triton(tmp_path / "repo", tmp_path / "triton")
    triton.start()
    try:
        model = log_small_model(server.url, seed=3)
        client = mlflow_client(server.url)
        settings = sync_settings(tmp_path, server.url, triton, model_name, prestage_max=0)
        v1, v2 = register(client, model_name, model), register(client, model_name, model)
        client.set_registered_model_alias(model_name, "champion", v1)
        assert reconcile_once(settings, client=client).ok
        x = np.random.default_rng(0).normal(size=(8, len(FEATURES))).astype(np.float32)
        before = score(triton, model_name, v1, x)

        client.set_registered_model_alias(model_name, "champion", v2)

        def registry_dies_during_export(*args: Any) -> None:
            kill_mlflow_server(server)
            adapters.install(*args)

        mid = reconcile_once(settings, client=client, installer=registry_dies_during_export)
        assert mid.result == "failed" and "MLflow" in mid.error
        assert routing(settings, model_name) == {"champion": v1}
        assert v1 in ready(triton, model_name)
        np.testing.assert_allclose(score(triton, model_name, v1, x), before, atol=1e-6)
        assert not any((triton.repository / ".staging").glob(f"{model_name}-*"))
        status = json.loads(settings.path(settings.sync.status_file).read_text())
        assert status["result"] == "failed" and "MLflow" in status["models"][model_name]["message"]

        down = reconcile_once(settings, client=client)  # unreachable from the pass's first call
        assert down.result == "failed" and "MLflow registry read" in down.error
        assert routing(settings, model_name) == {"champion": v1} and v1 in ready(triton, model_name)

        server = restart_mlflow_server(server)
        healed = reconcile_once(settings, client=client)
        assert healed.ok, healed.models[model_name].message
        assert routing(settings, model_name) == {"champion": v2}
        assert ready(triton, model_name) == {v1, v2}
    finally:
        triton.stop()
        stop_mlflow_server(server)  # stops it if it runs, and drops its database
