"""Beyond one Triton: failover, the mixed-version window and recovery after a Triton restart.

Two Triton servers on one shared repository, one ``treeserve sync --watch`` over both and two
gateways balancing over both (``loadtest.cluster``, the building blocks of the loopback
integration test), all on free ports under ``out_dir``, with the demo world's data and a copy of
its registry (a second version of the champion registered there), under steady load from
``CLIENTS`` async HTTP clients spread over the gateways. Three phases, one cluster:

1. **failover** — ``kill -9`` of one Triton, ``FAILOVER_DOWN_S`` of load with one server, start
   it again, wait until the sync has loaded the routed version there, ``FAILOVER_AFTER_S`` more:
   every non-200 answer in that window is a failed request (``multi_triton_failover_errors``).
2. **promotion** — ``champion`` moved to the second version, then back: the mixed-version window
   is the time from the first answer with the new version to the last answer with the old one,
   over both gateways (``routing_mixed_window_s``: the larger of the two moves).
3. **restart** — the second Triton stopped, so the gateways have one server; ``kill -9`` of it
   and start again (``repeats`` times): the time from launching the new process to the first
   gateway answer with the routed version (``triton_restart_recovery_s``: the median), the sync
   running as deployed (it notices the restart within ``sync.health_interval_s``).

Settings are the shipped defaults (health check every 1 s, routing re-read every 1 s, breaker
reset 2 s) except: the sync polls the registry every second (no webhook here; a promotion is
noticed sooner, the figures do not depend on it), keeps one previous champion, and the gateways'
Triton deadline is 2 s (a 2-core machine loading models on two servers).
"""

from __future__ import annotations

import functools
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.bench_gateway import _entity_ids
from loadtest.bench_report import median_min_max
from loadtest.cluster import (
    Cluster,
    Load,
    failed,
    first_answer_s,
    kill_triton,
    mixed_window_s,
    private_registry,
    ready_on,
)
from treeserve import procs

log = logging.getLogger(__name__)

CLIENTS = 8
FAILOVER_DOWN_S = 3.0
FAILOVER_AFTER_S = 2.0
RECOVERY_TIMEOUT_S = 60.0
SYNC_ENV = {
    "TREESERVE_SYNC__POLL_INTERVAL_S": "1",
    "TREESERVE_SYNC__KEEP_CHAMPIONS": "1",
}
GATEWAY_ENV = {"TREESERVE_GATEWAY__TRITON__TIMEOUT_S": "2"}


def run_multi_triton_bench(
    world: Any, *, out_dir: Path, repeats: int = 3, quick: bool = False
) -> dict[str, Any]:
    """The three phases above on one cluster; a section with the three headline figures."""
    from mlflow import MlflowClient

    from exporter.triton_server import resolve_venv

    settings = world.settings
    restarts = 1 if quick else max(1, repeats)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request of the load
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, v1 = world.model, world.version
    uri, v2 = private_registry(settings.mlflow_tracking_uri, model, v1, out_dir / "mlflow")
    registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
    t = settings.triton
    started = time.monotonic()
    with Cluster(
        out_dir / "cluster",
        env=world.env_for_children(),
        model=model,
        tracking_uri=uri,
        triton_venv=resolve_venv(settings.path(t.venv), t.venv),
        n_tritons=2,
        sync_env=SYNC_ENV,
        gateway_env=GATEWAY_ENV,
    ) as cluster:
        a, b = cluster.tritons
        for server in (a, b):
            server.start()
        cluster.start_sync()
        if not cluster.wait_routed(v1):
            raise RuntimeError(f"the sync did not route {model} v{v1}: {cluster.sync_log.read_text()[-500:]}")
        _wait_ready(cluster, [a, b], v1)
        cluster.start_gateways(2)
        setup_s = time.monotonic() - started
        with cluster.load(_entity_ids(settings, n=300), clients=CLIENTS, max_s=600) as load:
            if not load.more(200):
                raise RuntimeError("the gateways answer nothing under load")

            # 1. failover: one of two Triton servers killed under load, then back.
            f0 = time.monotonic()
            kill_triton(a)
            time.sleep(FAILOVER_DOWN_S)
            a.start()
            _wait_ready(cluster, [a], v1)
            back_s = time.monotonic() - f0
            time.sleep(FAILOVER_AFTER_S)
            f1 = time.monotonic()
            window = [x for x in load.snapshot() if f0 <= x[0] <= f1]
            failover_failed = failed(window)

            # 2. promotion and rollback: the window in which the gateways answer with both versions.
            windows: dict[str, float] = {}
            p0 = time.monotonic()
            for old, new in ((v1, v2), (v2, v1)):
                since = time.monotonic()
                registry.set_registered_model_alias(model, "champion", new)
                if not _wait(functools.partial(_switched, load, new, since), timeout_s=90):
                    raise RuntimeError(f"not every gateway answers with version {new} after the promotion")
                load.more(100, timeout_s=30)  # late answers with the old version would widen the window
                windows[f"v{old} → v{new}"] = mixed_window_s(load.snapshot(), old, new, since)
            promotion_failed = failed(load.snapshot(), since=p0)

            # 3. restart: the only serving Triton killed and started again.
            b.stop()
            load.more(100, timeout_s=30)
            recoveries: list[float] = []
            boots: list[float] = []
            loaded: list[float] = []
            for _ in range(restarts):
                kill_triton(a)
                load.more(20, timeout_s=10)  # the gateways notice the outage
                t0 = time.monotonic()
                a.start()
                boots.append(time.monotonic() - t0)
                ready_at = _RecordFirst(functools.partial(_ready, a.http_url, model, v1))
                if not _wait(lambda: ready_at() and _served(load, v1, t0)):  # noqa: B023 - called here only
                    raise RuntimeError(
                        f"no gateway answered with v{v1} within {RECOVERY_TIMEOUT_S:g} s of the Triton restart"
                    )
                recovery = first_answer_s(load.snapshot(), v1, t0)
                assert recovery is not None
                recoveries.append(recovery)
                loaded.append(min(ready_at.first - t0, recovery))
                log.info(
                    "Triton restart: server up %.2f s, routed version READY %.2f s, served %.2f s",
                    boots[-1],
                    loaded[-1],
                    recovery,
                )
                load.more(100, timeout_s=30)
        total = load.count()
    mixed = max(windows.values())
    rows = [
        {
            "phase": "failover: 1 of 2 Triton killed, restarted",
            "requests": len(window),
            "failed": len(failover_failed),
            "seconds": round(back_s, 2),
            "what the seconds are": "kill -9 → restarted server has the routed version READY",
        },
        *(
            {
                "phase": f"promotion {k}",
                "requests": "",
                "failed": "",
                "seconds": round(w, 3),
                "what the seconds are": "first answer with the new version → last with the old",
            }
            for k, w in windows.items()
        ),
        {
            "phase": "promotion + rollback (whole phase)",
            "requests": "",
            "failed": len(promotion_failed),
            "seconds": "",
            "what the seconds are": "",
        },
        {
            "phase": "restart: only Triton kill -9 + start",
            "requests": "",
            "failed": "",
            "seconds": median_min_max(recoveries),
            "what the seconds are": "new process launched → first gateway answer with the routed version",
        },
        {
            "phase": "restart: of which server start-up",
            "requests": "",
            "failed": "",
            "seconds": median_min_max(boots),
            "what the seconds are": "new process launched → Triton reports ready (nothing loaded yet)",
        },
        {
            "phase": "restart: of which routed version READY",
            "requests": "",
            "failed": "",
            "seconds": median_min_max(loaded),
            "what the seconds are": "new process launched → the sync has the routed version READY there",
        },
    ]
    notes = [f"{total} requests in all; set-up (2 Triton, sync first pass, 2 gateways) {setup_s:.0f} s."]
    if failover_failed:
        notes.append(f"failover errors (first 3): {[x[2:] for x in failover_failed[:3]]}")
    return {
        "title": "Several Triton servers: failover, mixed-version window, restart recovery",
        "command": "python -m loadtest.bench --only multi_triton",
        "description": (
            f"2 Triton servers, 1 `sync --watch`, 2 gateways (each over both servers) on loopback; "
            f"{CLIENTS} async HTTP clients, 1 entity per request, spread over the gateways. Failover: "
            f"`kill -9` of one server, {FAILOVER_DOWN_S:g} s down, restarted, {FAILOVER_AFTER_S:g} s after "
            "the sync loaded it again. Promotion: champion moved to a new version and back. Restart: the "
            f"other server stopped, `kill -9` + start of the only one, {restarts} time(s). Shipped "
            "defaults except sync poll 1 s, one previous champion kept, gateway Triton deadline 2 s."
        ),
        "rows": rows,
        "notes": notes,
        "multi_triton_failover_errors": len(failover_failed),
        "routing_mixed_window_s": round(mixed, 3),
        "triton_restart_recovery_s": round(statistics.median(recoveries), 3),
        "triton_restart_server_start_s": round(statistics.median(boots), 3),
    }


def _wait(check: Callable[[], bool], *, timeout_s: float = RECOVERY_TIMEOUT_S) -> bool:
    return procs.wait_until(check, timeout_s=timeout_s, interval_s=0.02)


def _wait_ready(cluster: Cluster, servers: list[Any], version: str) -> None:
    for s in servers:
        url = s.http_url
        if not _wait(functools.partial(_ready, url, cluster.model, version)):
            raise RuntimeError(
                f"{url} did not get version {version} READY: {cluster.sync_log.read_text()[-500:]}"
            )


class _RecordFirst:
    """A check that, once true, stays true and remembers when it first was."""

    def __init__(self, check: Callable[[], bool]) -> None:
        self.check, self.first = check, float("inf")

    def __call__(self) -> bool:
        if self.first == float("inf") and self.check():
            self.first = time.monotonic()
        return self.first < float("inf")


def _ready(url: str, model: str, version: str) -> bool:
    return version in ready_on(url, model)


def _switched(load: Load, version: str, since: float) -> bool:
    return load.every_gateway_answers(version, since)


def _served(load: Load, version: str, since: float) -> bool:
    return first_answer_s(load.snapshot(), version, since) is not None
