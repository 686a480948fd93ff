"""Prometheus metrics of the sync service (one registry per service instance)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS_S = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300)


class SyncMetrics:
    """Pass results, desired vs served, promotion latency, failures by reason, webhook outcomes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.passes = Counter(
            "treeserve_sync_passes", "Reconcile passes by result.", ["result", "trigger"], registry=r
        )
        self.last_result = Gauge(
            "treeserve_sync_last_pass_result",
            "1 for the result of the last pass, 0 for the others.",
            ["result"],
            registry=r,
        )
        self.last_pass_time = Gauge(
            "treeserve_sync_last_pass_timestamp_seconds", "Unix time the last pass ended.", registry=r
        )
        self.pass_duration = Histogram(
            "treeserve_sync_pass_duration_seconds",
            "Duration of a pass.",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.versions_desired = Gauge(
            "treeserve_sync_versions_desired", "Versions the registry wants served.", ["model"], registry=r
        )
        self.versions_served = Gauge(
            "treeserve_sync_versions_served", "Versions ready in Triton.", ["model"], registry=r
        )
        self.in_sync = Gauge(
            "treeserve_sync_in_sync",
            "1 when every alias is routed to its desired version.",
            ["model"],
            registry=r,
        )
        self.promotion_latency = Histogram(
            "treeserve_sync_promotion_latency_seconds",
            "Alias set in the registry -> routing switched in the repository.",
            ["model", "alias"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.failures = Counter(
            "treeserve_sync_failures", "Failures by reason.", ["model", "reason"], registry=r
        )
        self.server_up = Gauge(
            "treeserve_sync_server_up",
            "1 when the Triton server answered the last pass (0: down, left out of the routing switch).",
            ["server"],
            registry=r,
        )
        self.server_versions_ready = Gauge(
            "treeserve_sync_server_versions_ready",
            "Versions READY on each Triton server after the last pass.",
            ["server", "model"],
            registry=r,
        )
        self.health_wakeups = Counter(
            "treeserve_sync_health_wakeups",
            "Passes started because a Triton server came back or lost a routed version.",
            ["server"],
            registry=r,
        )
        self.webhooks = Counter(
            "treeserve_sync_webhook_deliveries", "Webhook deliveries by outcome.", ["outcome"], registry=r
        )

    def record_servers(self, servers: Mapping[str, Mapping[str, Any]]) -> None:
        """Per-server verdicts of the last pass: up, and READY versions per model."""
        for url, st in servers.items():
            self.server_up.labels(server=url).set(1.0 if st.get("up") else 0.0)
            for model, versions in (st.get("ready") or {}).items():
                self.server_versions_ready.labels(server=url, model=model).set(len(versions))

    def record_pass(self, result: str, trigger: str, duration_s: float, ended_at: float) -> None:
        """Record the outcome of one pass."""
        self.passes.labels(result=result, trigger=trigger).inc()
        for name in ("ok", "degraded", "failed"):
            self.last_result.labels(result=name).set(1.0 if name == result else 0.0)
        self.last_pass_time.set(ended_at)
        self.pass_duration.observe(duration_s)
