"""The Triton autoscaling queries compute what the docs say: mean queue time per request.

The prometheus-adapter rule's ``metricsQuery`` (templated the way the adapter fills it for the
HPA's pods) and the KEDA ScaledObject's query are evaluated by the real ``promtool test rules``
against synthetic Triton counters with known answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.unit.deploy.test_k8s import NAMESPACE, adapter_rules, one, produced_metric, rendered
from tests.unit.deploy.test_prometheus_rules import run_promtool

# Per 15 s scrape: queue microseconds and successful requests, per pod and model. The queue time
# per request of a pod is sum(queue rate) / sum(success rate) over its models.
SERIES = {
    # pod a: model 1 waits 1000 us/request, model 2 3000 us/request, 1 req/s each -> 2000 us
    ("triton-a", "churn-prediction"): (15_000, 15),
    ("triton-a", "other-model"): (45_000, 15),
    # pod b: busy, no queueing -> 0
    ("triton-b", "churn-prediction"): (0, 30),
    # pod c: idle -> 0, not NaN (the HPA would drop the pod)
    ("triton-c", "churn-prediction"): (0, 0),
}
EXPECTED_PER_POD_US = {"triton-a": 2000, "triton-b": 0, "triton-c": 0}
# Over the namespace: 60000 us / 15 s over (15 + 15 + 30) requests / 15 s -> 1000 us
EXPECTED_KEDA_US = 1000


def _input_series() -> list[dict[str, str]]:
    out = []
    for (pod, model), (queue_us, requests) in SERIES.items():
        labels = f'namespace="{NAMESPACE}",service="triton",pod="{pod}",model="{model}",version="1"'
        out.append({"series": f"nv_inference_queue_duration_us{{{labels}}}", "values": f"0+{queue_us}x40"})
        out.append({"series": f"nv_inference_request_success{{{labels}}}", "values": f"0+{requests}x40"})
    return out


def adapter_query_for_hpa(rule: dict[str, Any], pods: list[str]) -> str:
    """The query prometheus-adapter sends for the HPA: pods of one namespace, grouped by pod."""
    matchers = f'namespace="{NAMESPACE}",pod=~"{"|".join(pods)}"'
    query: str = rule["metricsQuery"]
    return query.replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod")


def run_promql_test(tmp_path: Path, tests: list[dict[str, Any]]) -> None:
    """``promtool test rules`` on PromQL expectations over the synthetic series."""
    rules = tmp_path / "none.yml"
    rules.write_text(yaml.safe_dump({"groups": []}))
    spec = {
        "rule_files": [rules.name],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": _input_series(), "promql_expr_test": tests}],
    }
    test_file = tmp_path / "autoscaling_test.yml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = run_promtool("test", "rules", str(test_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_adapter_rule_gives_each_pod_its_mean_queue_time_per_request(tmp_path: Path) -> None:
    docs = rendered("cpu")
    hpa = one(docs, "HorizontalPodAutoscaler", "triton")
    name = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    (rule,) = [r for r in adapter_rules(docs) if produced_metric(r) == name]
    expr = adapter_query_for_hpa(rule, sorted(EXPECTED_PER_POD_US))
    samples = [{"labels": f'{{pod="{pod}"}}', "value": value} for pod, value in EXPECTED_PER_POD_US.items()]
    run_promql_test(tmp_path, [{"expr": expr, "eval_time": "5m", "exp_samples": samples}])


def test_keda_query_gives_the_namespace_mean_queue_time_per_request(tmp_path: Path) -> None:
    so = one(rendered("cpu-keda"), "ScaledObject", "triton")
    expr = so["spec"]["triggers"][0]["metadata"]["query"]
    run_promql_test(
        tmp_path,
        [{"expr": expr, "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": EXPECTED_KEDA_US}]}],
    )
