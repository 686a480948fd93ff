"""The score recording rules in a real Prometheus scraping a real gateway.

Prometheus (the Debian package's binary) runs on a free loopback port with its own data folder,
scrapes one ``treeserve gateway`` every second and evaluates ``deploy/prometheus/rules/`` every
second. The test sends the same 200 entities twice and reads the recording rules back through
``/api/v1/query``.

Why the same entities twice: ``rate()`` counts what a counter gained between the first and last
sample of the window, so the first batch (it creates the labelled series) only sets the baseline
and the rules describe the second batch. Identical batches also make every counter of the
histogram grow in the same proportion, so Prometheus' extrapolation scales them all alike and the
ratios are exact:

* ``ml:churn_prediction:score_mean_1h`` = the mean of the returned scores (float rounding only);
* ``…_p50/p90/p99_1h`` = Prometheus' linear interpolation inside the gateway's 0.05-wide score
  buckets, recomputed here from the returned scores, and so within 0.05 of the true quantiles.

Every rule of the repository is then loaded and evaluates without error on the live series.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from gateway.server import GatewayProcess
from tests.integration.test_gateway import predict
from treeserve.procs import free_port, http_ok, start_background, stop_pid, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
INTERVAL_S = 1
ENTITIES = 200


@pytest.fixture(scope="module")
def scored_gateway(gateway_stack: Any, demo_world: Any) -> Iterator[GatewayProcess]:
    proc = gateway_stack.start_gateway(demo_world, name="prometheus-rules")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def prometheus(scored_gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus loading the repository's rules and scraping ``scored_gateway``; its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (apt-get install -y prometheus)")
    home = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": f"{INTERVAL_S}s", "evaluation_interval": f"{INTERVAL_S}s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / pattern) for pattern in config["rule_files"]]
    config["scrape_configs"] = [
        {
            "job_name": "gateway",
            "static_configs": [{"targets": [f"{scored_gateway.host}:{scored_gateway.port}"]}],
        }
    ]
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = start_background(
        [
            binary,
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log_file=home / "prometheus.log",
        cwd=home,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        ready = wait_until(
            lambda: http_ok(base + "/-/ready"), timeout_s=30, alive=lambda: proc.poll() is None
        )
        assert ready, (home / "prometheus.log").read_text()[-2000:]
        yield base
    finally:
        stop_pid(proc.pid, timeout_s=10)


def query(base: str, promql: str) -> list[tuple[dict[str, str], float, float]]:
    """(labels, sample timestamp, value) of an instant query."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return [(s["metric"], float(s["value"][0]), float(s["value"][1])) for s in body["data"]["result"]]


def scalar(base: str, promql: str) -> float | None:
    result = query(base, promql)
    assert len(result) <= 1, result
    return result[0][2] if result else None


def wait_for(base: str, promql: str, check: Any, what: str) -> float:
    """Poll an instant query until ``check(value)``; its value (fails naming ``what`` otherwise)."""
    seen: list[float | None] = [None]

    def ok() -> bool:
        seen[0] = scalar(base, promql)
        return seen[0] is not None and bool(check(seen[0]))

    assert wait_until(ok, timeout_s=30, interval_s=0.2), f"{what}: {promql} = {seen[0]}"
    assert seen[0] is not None
    return seen[0]


def histogram_quantile(q: float, scores: np.ndarray, upper_bounds: tuple[float, ...]) -> float:
    """Prometheus' ``histogram_quantile`` over cumulative buckets built from ``scores``."""
    counts = [float(np.sum(scores <= le)) for le in upper_bounds] + [float(len(scores))]
    bounds = [*upper_bounds, float("inf")]
    rank = q * counts[-1]
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(bounds) - 1:
        return bounds[-2]
    start, count = 0.0, counts[b]
    if b > 0:
        start, count, rank = bounds[b - 1], counts[b] - counts[b - 1], rank - counts[b - 1]
    return start + (bounds[b] - start) * (rank / count)


def predict_scores(url: str, ids: list[str]) -> np.ndarray:
    r = predict(url, ids)
    assert r.status_code == 200, r.text
    return np.array([p["score"] for p in r.json()["predictions"]])


def test_score_recording_rules_match_the_scores_the_gateway_returned(
    prometheus: str, scored_gateway: GatewayProcess, gateway_stack: Any, demo_world: Any
) -> None:
    model, version = gateway_stack.model, gateway_stack.version
    series = f'model="{model}",version="{version}"'
    ids = demo_world.customer_ids(ENTITIES)

    first = predict_scores(scored_gateway.url, ids)
    wait_for(
        prometheus,
        f"sum(treeserve_gateway_score_count{{{series}}})",
        lambda v: v == ENTITIES,
        "Prometheus scraped the first batch",
    )
    scores = predict_scores(scored_gateway.url, ids)
    np.testing.assert_array_equal(scores, first)  # same features, same model: the premise above
    wait_for(
        prometheus,
        f"sum(treeserve_gateway_score_count{{{series}}})",
        lambda v: v == 2 * ENTITIES,
        "Prometheus scraped the second batch",
    )
    scraped_at = scalar(prometheus, f"max(timestamp(treeserve_gateway_score_count{{{series}}}))")
    assert scraped_at is not None
    # Two evaluations after that scrape, the rules have certainly read it.
    wait_for(
        prometheus,
        f"timestamp(ml:churn_prediction:score_mean_1h{{{series}}})",
        lambda t: t >= scraped_at + 2 * INTERVAL_S,
        "the rules evaluated after the last scrape",
    )

    mean = scalar(prometheus, f"ml:churn_prediction:score_mean_1h{{{series}}}")
    assert mean == pytest.approx(float(np.mean(scores)), rel=1e-9, abs=1e-12)
    assert scalar(prometheus, f'ml:model:score_mean_1h{{model="{model}"}}') == pytest.approx(mean, rel=1e-9)
    assert scalar(prometheus, f"ml:model_version:score_mean_1h{{{series}}}") == pytest.approx(mean, rel=1e-12)

    # The bucket bounds as the gateway exposes them.
    les = {s[0]["le"] for s in query(prometheus, f"treeserve_gateway_score_bucket{{{series}}}")}
    buckets = tuple(sorted(float(le) for le in les if le != "+Inf"))
    assert len(buckets) >= 10, les
    for q, name in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
        recorded = scalar(prometheus, f"ml:churn_prediction:score_{name}_1h{{{series}}}")
        assert recorded is not None, name
        assert recorded == pytest.approx(histogram_quantile(q, scores, buckets), abs=1e-9), name
        assert abs(recorded - float(np.quantile(scores, q))) <= 0.05 + 1e-9, name

    # Every recording and alerting rule evaluated against the live series without an error
    # (vector-matching conflicts only show up on real label sets).
    with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=10) as r:
        groups = json.loads(r.read())["data"]["groups"]
    rules = [rule for g in groups for rule in g["rules"]]
    expected = [
        rule.get("record") or rule.get("alert")
        for f in sorted(PROMETHEUS_DIR.glob("rules/*.yml"))
        for g in yaml.safe_load(f.read_text())["groups"]
        for rule in g["rules"]
    ]
    assert sorted(rule["name"] for rule in rules) == sorted(expected)
    broken = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert broken == {}
