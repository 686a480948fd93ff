"""Prometheus scrapes what compose runs; the Grafana dashboard queries only metrics that exist."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.deploy.conftest import DEPLOY, command_of

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "treeserve.json"

TRITON_METRICS = frozenset(
    {
        # Triton's per-model inference metrics (checked against a live /metrics scrape in
        # tests/integration/test_deploy_metrics.py).
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
    }
)

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created", ""),
    "gauge": ("",),
}


def series_names(families: Any) -> set[str]:
    """Every series name a set of metric families exposes (counter ``_total``, histogram ``_bucket`` ...)."""
    names: set[str] = set()
    for fam in families:
        for suffix in _SUFFIXES.get(fam.type, ("",)):
            names.add(fam.name + suffix)
    return names


def gateway_series() -> set[str]:
    import prometheus_client

    from gateway import metrics

    prefix = metrics.PREFIX
    return {n for n in series_names(prometheus_client.REGISTRY.collect()) if n.startswith(prefix)}


def sync_series() -> set[str]:
    from exporter.sync.metrics import SyncMetrics

    return series_names(SyncMetrics(CollectorRegistry()).registry.collect())


def drift_series(tmp_path: Path) -> set[str]:
    from drift.outputs import write_textfile

    column = types.SimpleNamespace(column="tenure_days", method="wasserstein", score=0.2)
    summary = types.SimpleNamespace(
        model="churn-prediction",
        version="3",
        drift_share=0.25,
        verdict="no_drift",
        current_rows=1000,
        columns=[column],
        score_drift=types.SimpleNamespace(score=0.05),
        attribution=[types.SimpleNamespace(feature="tenure_days", current_share=0.3, shift=0.05)],
        attribution_drifted=[],
    )
    path = tmp_path / "drift.prom"
    write_textfile(path, summary)  # type: ignore[arg-type]
    return series_names(text_string_to_metric_families(path.read_text()))


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dashboard["panels"])
    for var in dashboard.get("templating", {}).get("list", []):
        q = var.get("query")
        exprs.append(q["query"] if isinstance(q, dict) else str(q))
    return exprs


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (treeserve's and Triton's share these prefixes)."""
    return set(re.findall(r"\b((?:treeserve|nv)_[A-Za-z0-9_:]+)", expr))


# ---- Prometheus ---------------------------------------------------------------------------


def _listen_port(name: str, service: dict[str, Any]) -> int:
    """The port a compose service serves /metrics on, read from its own configuration."""
    cmd = command_of(service)
    env = service.get("environment", {})
    if cmd[:2] == ["treeserve", "gateway"]:
        return int(env["TREESERVE_GATEWAY__PORT"])
    if cmd[:2] == ["treeserve", "sync"]:
        return int(env["TREESERVE_SYNC__WEBHOOK_PORT"])
    if cmd and cmd[0] == "tritonserver":
        return int(next(a for a in cmd if a.startswith("--metrics-port=")).split("=", 1)[1])
    if name == "drift-metrics":
        return int(next(a for a in cmd if a.startswith("--web.listen-address=")).rsplit(":", 1)[1])
    raise AssertionError(f"no metrics port known for service {name}")


def _targets(prometheus_config: dict[str, Any]) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for job in prometheus_config["scrape_configs"]:
        targets = []
        for sc in job.get("static_configs", []):
            for t in sc["targets"]:
                host, port = t.rsplit(":", 1)
                targets.append((host, int(port)))
        for sd in job.get("dns_sd_configs", []):
            assert sd.get("type", "SRV") == "A", "A records need an explicit port"
            targets += [(n, int(sd["port"])) for n in sd["names"]]
        out[job["job_name"]] = targets
    return out


def test_scrape_targets_are_compose_services_on_their_ports(
    compose: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    services = compose["services"]
    for job, targets in _targets(prometheus_config).items():
        for host, port in targets:
            if job == "prometheus":
                assert (host, port) == ("localhost", 9090)
                continue
            assert host in services, f"job {job}: {host} is not a compose service"
            assert port == _listen_port(host, services[host]), f"job {job}: {host}:{port}"
            assert str(port) in {str(p) for p in services[host].get("expose", [])}, (
                f"{host} does not expose {port}"
            )


def test_everything_that_exports_metrics_is_scraped(
    compose: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    scraped = {h for targets in _targets(prometheus_config).values() for h, _ in targets}
    assert {"gateway", "sync", "triton", "drift-metrics"} <= scraped
    # Replicated services are discovered per container, not through one load-balanced name.
    jobs = {j["job_name"]: j for j in prometheus_config["scrape_configs"]}
    assert "dns_sd_configs" in jobs["gateway"] and "dns_sd_configs" in jobs["triton"]
    # The drift exporter reads the same volume the drift/pipeline jobs write their textfile to.
    services = compose["services"]
    textfile_dir = next(
        a for a in command_of(services["drift-metrics"]) if a.startswith("--collector.textfile.directory=")
    )
    textfile_dir = textfile_dir.split("=", 1)[1]
    volume = next(
        v.split(":")[0] for v in services["drift-metrics"]["volumes"] if v.split(":")[1] == textfile_dir
    )
    for job in ("drift", "pipeline"):
        env = services[job]["environment"]
        mount = next(v.split(":")[1] for v in services[job]["volumes"] if v.split(":")[0] == volume)
        assert Path(env["TREESERVE_DRIFT__TEXTFILE_PATH"]).parent == Path(mount), job


def test_prometheus_config_is_served_to_prometheus(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["prometheus"]["volumes"]
    assert any(
        v.startswith(str(DEPLOY / "prometheus" / "prometheus.yml") + ":/etc/prometheus/prometheus.yml")
        for v in volumes
    )
    assert "--config.file=/etc/prometheus/prometheus.yml" in command_of(compose["services"]["prometheus"])


# ---- Grafana ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_is_provisioned(compose: dict[str, Any], dashboard: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "treeserve.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert Path(mounts[path]) == DASHBOARD.parent
    assert Path(mounts["/etc/grafana/provisioning"]) == DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    ds = datasources["datasources"][0]
    assert ds["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {ds["uid"]}


def test_dashboard_queries_only_exported_metrics(dashboard: dict[str, Any], tmp_path: Path) -> None:
    known = gateway_series() | sync_series() | drift_series(tmp_path) | TRITON_METRICS
    exprs = dashboard_exprs(dashboard)
    assert exprs
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        used |= names
    assert used <= known, f"not exported by the gateway, sync, drift job or Triton: {sorted(used - known)}"


def test_dashboard_covers_what_operators_watch(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(e) for e in dashboard_exprs(dashboard)))
    wanted = {
        "treeserve_gateway_requests_total",  # request rate
        "treeserve_gateway_request_duration_seconds_bucket",  # latency
        "nv_inference_queue_duration_us",  # Triton queue time
        "nv_inference_compute_infer_duration_us",  # Triton compute time
        "nv_inference_exec_count",  # Triton batch size (with nv_inference_count)
        "treeserve_gateway_coalesced_batch_size_bucket",  # gateway batch size
        "treeserve_gateway_fallbacks_total",  # fallback rate
        "treeserve_gateway_missing_features_total",  # missing-feature rate
        "treeserve_drift_share",  # drift share
    }
    assert wanted <= used, sorted(wanted - used)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
