"""``treeserve demo``: the main job on embedded defaults, end to end.

data → Feast apply/materialize → train → gate + ``champion`` → Triton → one sync pass →
a sample inference in Triton → the gateway and one real prediction through it → a session event
pushed for that customer (``POST /v1/features/push``) and the score it changes → a short Locust
load test → a drifted population through the gateway → the drift job catches it.

Every step calls the same Python API the CLI commands call; nothing here is demo-only logic
except sending the drifted traffic.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from treeserve.errors import ConfigError, ServiceUnavailableError, TreeserveError, ValidationFailedError
from treeserve_app.clikit import command, settings

if TYPE_CHECKING:
    from treeserve_app.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class DemoSummary:
    """What the demo did, for the closing table."""

    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, what: str, value: Any) -> None:
        """Record one line of the summary."""
        self.rows.append((what, str(value)))


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=False)


@contextmanager
def _step(console: Any, title: str) -> Iterator[None]:
    t0 = time.perf_counter()
    console.rule(f"[bold]{title}")
    yield
    console.print(f"[dim]{title}: {time.perf_counter() - t0:.1f} s[/dim]")


def _post_json(url: str, body: Any, *, timeout_s: float = 10.0) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return json.loads(r.read())


def run_demo(
    s: Settings,
    *,
    customers: int | None = None,
    loadtest_s: float = 8.0,
    keep_running: bool = False,
) -> DemoSummary:
    """Run the whole demo on ``s`` (Settings); returns the summary rows."""
    from exporter.triton_server import TritonServer

    triton = TritonServer.from_settings(s)
    preflight(s, triton)
    # Feast first: treeserve.features.store disables typeguard's import-time instrumentation,
    # which would otherwise cost seconds of CPU when Feast is imported.
    import treeserve.features.store  # noqa: F401
    from training import api as training

    console = _console()
    summary = DemoSummary()
    model = s.mlflow.model_name

    with _step(console, "1/8 generate the demo world"):
        data = training.generate_data(s, n_customers=customers)
        console.print(
            f"wrote {data.data_dir}: {data.n_customers} customers, {data.n_snapshots} daily snapshots "
            f"({data.start:%Y-%m-%d} .. {data.end:%Y-%m-%d}), {data.n_labels} labels, "
            f"churn rate {data.churn_rate:.3f}"
        )
    with _step(console, "2/8 Feast apply + materialize"):
        applied = training.apply_features(s)
        mat = training.materialize(s)
        console.print(f"applied {len(applied.objects)} Feast objects to project {applied.project!r}")
        console.print(
            f"materialized {mat.start:%Y-%m-%d %H:%M} .. {mat.end:%Y-%m-%d %H:%M} into the "
            f"{mat.online_store} online store"
        )
    with _step(console, "3/8 train from point-in-time Feast features"):
        trained = training.train(s)
        m = trained.metrics
        console.print(
            f"{trained.model_name} version {trained.version}: "
            + ", ".join(
                f"{k}={m[k]:.4f}"
                for k in ("val_roc_auc", "val_avg_precision", "val_log_loss", "val_f1")
                if k in m
            )
        )
        summary.add("model", f"{trained.model_name} v{trained.version} (run {trained.run_id[:8]})")
        summary.add("val_roc_auc", f"{m.get('val_roc_auc', float('nan')):.4f}")
        summary.add("best_iteration", int(m.get("best_iteration", -1)))
    with _step(console, "4/8 promotion gate → alias champion"):
        gate = training.promote(s, model, trained.version, alias="champion")
        console.print(f"gate: {'passed' if gate.passed else 'FAILED'} ({gate.reason})")
        if not gate.alias_moved:
            raise ValidationFailedError(
                f"{model} version {trained.version} failed the promotion gate: {gate.reason}"
            )
        summary.add("alias", f"champion → v{trained.version}")

    started_triton = False
    gateway = None
    try:
        with _step(console, "5/8 Triton + one sync pass (export → validate → load → canary → route)"):
            if not triton.is_ready():
                triton.start()
                started_triton = True
            from exporter.sync.reconcile import reconcile_once

            result = reconcile_once(s, trigger="demo")
            st = result.models.get(model)
            routing = ", ".join(f"{a} → v{v}" for a, v in sorted(st.routing.items())) if st else ""
            console.print(
                f"sync: {result.result}" + (f" — {routing or 'nothing routed'}, {st.message}" if st else "")
            )
            if not result.ok:
                raise ServiceUnavailableError(
                    f"the sync pass did not converge: {result.error or result.result}"
                )
            sample = _triton_sample(s, triton, model, trained.version)
            console.print(f"Triton sample inference (v{trained.version}): {sample}")
            summary.add("triton", f"{triton.grpc_url} serving v{trained.version}")

        with _step(console, "6/8 gateway: entity id → Feast → Triton → score; push → new score"):
            gateway = _start_gateway(s)
            customer = _known_customer(s)
            predict_url = f"{gateway.url}/v1/models/{model}/predict"
            body = _post_json(predict_url, {"entities": [{"customer_id": customer}]})
            p = body["predictions"][0] if "predictions" in body else body
            prediction = f"{customer} → score {_score(p.get('score'))} ({p.get('risk_tier')})"
            console.print(
                f"POST {predict_url}: {prediction}, "
                f"v{p.get('model_version')} via {p.get('route')}, {body.get('latency_ms')} ms"
            )
            summary.add("gateway prediction", prediction)
            event = _push_session(s, gateway.url, customer)
            console.print(
                f"POST {gateway.url}/v1/features/push: {customer} viewed {event['last_page_viewed']} "
                f"({event['session_count_last_1h']} session in the last hour, cart {event['cart_value_usd']:.2f} USD)"
            )
            after = _post_json(predict_url, {"entities": [{"customer_id": customer}]})["predictions"][0]
            console.print(
                f"score before the push {_score(p.get('score'))} (real-time features imputed: "
                f"{', '.join(p['imputed_features']) or 'none'}) → after {_score(after.get('score'))} "
                f"(imputed: {', '.join(after['imputed_features']) or 'none'})"
            )
            summary.add(
                "push → score",
                f"{customer}: {_score(p.get('score'))} → {_score(after.get('score'))} after a "
                f"{event['last_page_viewed']} session",
            )

        with _step(console, "7/8 short Locust load test against the gateway"):
            from loadtest.runner import run_loadtest

            lt = run_loadtest(
                s, target="gateway", users=16, spawn_rate=16, duration=loadtest_s, host=gateway.url
            )
            console.print(lt.summary.headline())
            console.print(f"reports: {lt.report_dir}")
            summary.add("load test", lt.summary.headline())

        with _step(console, "8/8 drifted population through the gateway → drift job"):
            n_sent = _send_drifted_traffic(s, gateway.url, model)
            gateway.stop()  # graceful: the prediction log is flushed
            gateway = None
            from drift.job import run_drift

            drift = run_drift(s, last=n_sent, post_alert=False)
            cols = ", ".join(c.column for c in drift.drifted_columns) or "none"
            console.print(
                f"drift verdict: [bold]{drift.verdict}[/bold], share {drift.drift_share:.2f}, "
                f"drifted: {cols}; report {drift.report_dir}"
            )
            summary.add("drift", f"{drift.verdict} (share {drift.drift_share:.2f}; {cols})")
    finally:
        if gateway is not None:
            gateway.stop()
        if started_triton and not keep_running:
            triton.stop()

    from rich.table import Table

    table = Table(title="treeserve demo")
    table.add_column("what")
    table.add_column("result")
    for what, value in summary.rows:
        table.add_row(what, value)
    console.print(table)
    return summary


def _score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


MIN_FREE_DISK_MB = 500
"""Free space the demo wants under its home (data, MLflow, repository, logs take ~50 MB)."""


def preflight(s: Settings, triton: Any) -> None:
    """Everything the demo needs, checked before it changes any state: one error naming the first gap."""
    import shutil

    from treeserve.procs import port_in_use

    if not triton.is_ready():
        if not triton.venv.is_dir():
            raise ConfigError(f"Triton venv {triton.venv} is missing; run `make venv-triton`")
        for setting, port in (
            ("TREESERVE_TRITON__HTTP_PORT", triton.http_port),
            ("TREESERVE_TRITON__GRPC_PORT", triton.grpc_port),
            ("TREESERVE_TRITON__METRICS_PORT", triton.metrics_port),
        ):
            if port_in_use(port, triton.host):
                raise ConfigError(f"port {port} is taken: stop what runs there or set {setting}")
    for setting, port in (
        ("TREESERVE_GATEWAY__PORT", s.gateway.port),
        ("TREESERVE_GATEWAY__GRPC_PORT", s.gateway.grpc_port),
    ):
        if port_in_use(port, s.gateway.host):
            raise ConfigError(f"port {port} is taken: stop what runs there or set {setting}")
    existing = next(p for p in (s.home, *s.home.parents) if p.exists())
    free_mb = shutil.disk_usage(existing).free / 2**20
    if free_mb < MIN_FREE_DISK_MB:
        raise ConfigError(
            f"only {free_mb:.0f} MB free under {s.home}; the demo needs {MIN_FREE_DISK_MB} MB "
            "(free some space or set TREESERVE_HOME)"
        )


def _triton_sample(s: Settings, triton: Any, model: str, version: str) -> str:
    """One row of the version's reference inputs through Triton (the admin client), as one line."""
    import numpy as np

    from treeserve.repository import read_reference

    ref = read_reference(s.path(s.exporter.repository), model, version)
    x = ref.inputs[:1].astype(np.float32)
    out = triton.admin.infer(model, version, x, sorted(ref.outputs))
    return ", ".join(
        f"{name} " + " ".join(_score(v.item()) for v in np.ravel(value))
        for name, value in sorted(out.items())
    )


def _start_gateway(s: Settings) -> Any:
    from gateway.server import GatewayProcess

    env = dict(os.environ)
    env["TREESERVE_HOME"] = str(s.home)
    env["TREESERVE_GATEWAY__TRITON__HTTP_URL"] = f"{s.triton.host}:{s.triton.http_port}"
    proc = GatewayProcess(
        env=env,
        port=s.gateway.port,
        grpc_port=s.gateway.grpc_port,
        host=s.gateway.host,
        log_file=s.var_dir / "gateway" / "gateway.log",
    )
    return proc.start(timeout_s=90.0)


def _push_session(s: Settings, url: str, customer: str) -> dict[str, Any]:
    """Push one fresh session event for ``customer`` (a visit to the cancellation page)."""
    from datetime import UTC, datetime

    from treeserve.features.push_client import PushClient

    event = {
        "customer_id": customer,
        "event_timestamp": datetime.now(UTC).isoformat(),
        "session_count_last_1h": 1,
        "cart_value_usd": 0.0,
        "last_page_viewed": "cancel_subscription",
    }
    client = PushClient(url, api_key=s.gateway.api_keys[0] if s.gateway.api_keys else None)
    try:
        client.push([event])
    finally:
        client.close()
    return event


def _known_customer(s: Settings) -> str:
    import pandas as pd

    customers = pd.read_parquet(s.path(s.data.data_dir) / "customers.parquet", columns=["customer_id"])
    return str(customers["customer_id"].iloc[len(customers) // 2])


def _send_drifted_traffic(s: Settings, url: str, model: str, *, n_rows: int = 2000, batch: int = 100) -> int:
    """Score a drifted population (the generator's drift mode) through the gateway as raw features."""
    import numpy as np
    import pandas as pd

    from training import api as training

    out = s.var_dir / "data-drifted"
    training.generate_data(
        s, n_customers=max(n_rows, 500), n_days=37, seed=s.data.seed + 1, drift=True, out=out
    )
    stats = pd.read_parquet(out / "customer_stats.parquet")
    latest = stats.sort_values("event_timestamp").groupby("customer_id").tail(1).head(n_rows)
    # real-time features as a live stream would have them: the last hour's latest session event
    from training.data import live_activity

    activity = pd.read_parquet(out / "customer_activity.parquet")
    latest = latest.merge(
        live_activity(activity, stats["event_timestamp"].max()), on="customer_id", how="left"
    )
    body = json.loads(urllib.request.urlopen(f"{url}/v1/models/{model}", timeout=10).read())
    features: list[str] = body["features"]
    sent = 0
    for start in range(0, len(latest), batch):
        chunk = latest.iloc[start : start + batch][features]
        instances = [
            {
                k: (
                    None
                    if (v is None or (isinstance(v, float) and np.isnan(v)))
                    else v
                    if isinstance(v, str)
                    else float(v)
                )
                for k, v in row.items()
            }
            for row in chunk.to_dict(orient="records")
        ]
        _post_json(f"{url}/v1/models/{model}/predict", {"instances": instances})
        sent += len(instances)
    return sent


def register(app: typer.Typer) -> None:
    """Add ``treeserve demo``."""

    @app.command("demo")
    @command
    def demo(
        customers: Annotated[
            int | None, typer.Option(help="Customers to generate (default: settings).")
        ] = None,
        loadtest_s: Annotated[float, typer.Option("--loadtest-s", help="Length of the load test.")] = 8.0,
        keep_running: Annotated[
            bool, typer.Option(help="Leave Triton running afterwards (the gateway is always stopped).")
        ] = False,
    ) -> None:
        """Run the whole job on embedded defaults: train, promote, serve, load-test, drift-check."""
        try:
            run_demo(settings(), customers=customers, loadtest_s=loadtest_s, keep_running=keep_running)
        except TreeserveError:
            raise
        except OSError as e:
            raise ServiceUnavailableError(f"demo step failed: {e}") from e


__all__ = ["DemoSummary", "register", "run_demo"]
