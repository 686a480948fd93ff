"""Explanations at serving speed: explain latency, and what an installed explainer costs predict.

* ``explain_p99_ms_c8``: ``wrk`` at 8 connections on ``POST /v1/models/<m>/explain`` (one entity
  per request, random ids), p99 of the measured run after a warm-up. Triton's statistics of the
  companion ``<m>__explain`` over that run give the rows per execution (its dynamic batching).
* ``predict_rps_ratio_with_explain_installed``: ``wrk`` at 64 connections on predict against the
  same gateway and Triton with the explainer companion loaded, and with it unloaded, runs
  interleaved in ABBA order (``repeats`` each, a settle pause after each load/unload) so drift of
  the shared machine and the order hit both alike; the ratio of the medians (goal ≥ 0.95). The
  companion is loaded again at the end. Beside req/s, Triton's CPU (tritonserver and its
  Python-backend stubs, the idle companion's included) per answered predict request: on a shared
  machine req/s swings between runs far more than CPU per request.
"""

from __future__ import annotations

import functools
import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from loadtest.bench_gateway import _entity_ids, run_wrk, wrk_script
from loadtest.bench_report import median_min_max
from loadtest.bench_triton import tree_cpu_s
from treeserve.repository import explainer_name

log = logging.getLogger(__name__)

EXPLAIN_CONNECTIONS = 8
PREDICT_CONNECTIONS = 64


def _executions(stats: dict[str, Any]) -> tuple[int, int]:
    """(inferences, executions) summed over the versions in Triton's statistics of one model."""
    inferences = executions = 0
    for m in stats.get("model_stats", []):
        inferences += int(m.get("inference_count") or 0)
        executions += int(m.get("execution_count") or 0)
    return inferences, executions


def run_explain_bench(
    world: Any,
    *,
    out_dir: Path,
    repeats: int = 3,
    quick: bool = False,
    duration_s: float = 8.0,
    warmup_s: float = 2.0,
    settle_s: float = 1.0,
) -> dict[str, Any]:
    """The explain section: explain p99 at c=8 and the predict req/s ratio with/without the explainer."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    if quick:
        repeats, duration_s, warmup_s = 1, 3.0, 1.0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    triton = world.start_triton()
    gateway = world.start_gateway()
    admin = triton.admin
    companion = explainer_name(world.model)
    if str(world.version) not in admin.ready_versions(companion):
        raise RuntimeError(f"{companion} version {world.version} is not ready in Triton: nothing to measure")
    ids = _entity_ids(world.settings)
    body = '{"entities":[{"customer_id":"%s"}]}'
    explain_script = wrk_script(
        out_dir / "explain.lua", url_path=f"/v1/models/{world.model}/explain", body_template=body, ids=ids
    )
    predict_script = wrk_script(
        out_dir / "predict.lua", url_path=f"/v1/models/{world.model}/predict", body_template=body, ids=ids
    )
    pid = gateway.proc.pid if gateway.proc is not None else None
    cpu_of = functools.partial(tree_cpu_s, pid)
    triton_cpu_of = functools.partial(tree_cpu_s, triton.pid())

    explain_runs: list[dict[str, Any]] = []
    batching: list[float] = []
    for _ in range(repeats):
        before = _executions(admin.model_stats(companion))
        res = run_wrk(
            gateway.url,
            explain_script,
            connections=EXPLAIN_CONNECTIONS,
            duration_s=duration_s,
            warmup_s=warmup_s,
            cpu_of=cpu_of,
        )
        after = _executions(admin.model_stats(companion))
        if res["non_2xx"] or res["socket_errors"] or not res["rps"] or "p99_ms" not in res:
            raise RuntimeError(f"the explain endpoint answered errors under load: {res}")
        inferred, execs = after[0] - before[0], after[1] - before[1]
        batching.append(inferred / execs if execs else 0.0)
        explain_runs.append(res)
        log.info(
            "explain bench c=%d: %s (%.2f rows per companion execution)",
            EXPLAIN_CONNECTIONS,
            res,
            batching[-1],
        )

    predict: dict[str, list[dict[str, Any]]] = {"installed": [], "not installed": []}
    order = list(predict)
    try:
        for i in range(repeats):
            for variant in order if i % 2 == 0 else order[::-1]:
                if variant == "installed":
                    admin.load_explainer(world.model)
                    admin.wait_version_ready(companion, world.version)
                else:
                    admin.unload_explainer(world.model)
                    if str(world.version) in admin.ready_versions(companion):
                        raise RuntimeError(f"{companion} did not unload")
                time.sleep(settle_s)  # the stub's start or exit is not part of the measurement
                res = run_wrk(
                    gateway.url,
                    predict_script,
                    connections=PREDICT_CONNECTIONS,
                    duration_s=duration_s,
                    warmup_s=warmup_s,
                    cpu_of=triton_cpu_of,
                )
                if res["non_2xx"] or res["socket_errors"] or not res["rps"]:
                    raise RuntimeError(f"predict answered errors under load ({variant}): {res}")
                predict[variant].append(res)
                log.info("explain bench predict c=%d explainer %s: %s", PREDICT_CONNECTIONS, variant, res)
    finally:
        admin.load_explainer(world.model)
    rps = {v: statistics.median(r["rps"] for r in runs) for v, runs in predict.items()}
    cpu = {v: statistics.median(_cpu_us_per_request(r) for r in runs) for v, runs in predict.items()}
    rows = [
        {
            "request": f"explain, c={EXPLAIN_CONNECTIONS}",
            "req/s": median_min_max(r["rps"] for r in explain_runs),
            "p50 ms": median_min_max(r["p50_ms"] for r in explain_runs),
            "p99 ms": median_min_max(r["p99_ms"] for r in explain_runs),
            "rows per explainer execution": median_min_max(batching),
            "Triton CPU µs/request": "",
        },
        *(
            {
                "request": f"predict, c={PREDICT_CONNECTIONS}, explainer {variant}",
                "req/s": median_min_max(r["rps"] for r in runs),
                "p50 ms": median_min_max(r["p50_ms"] for r in runs),
                "p99 ms": median_min_max(r["p99_ms"] for r in runs),
                "rows per explainer execution": "",
                "Triton CPU µs/request": median_min_max(_cpu_us_per_request(r) for r in runs),
            }
            for variant, runs in predict.items()
        ),
    ]
    return {
        "title": "Explanations: explain latency and the predict path with the explainer installed",
        "command": "python -m loadtest.bench --only explain",
        "description": (
            f"wrk, 1 entity per request, {repeats} run(s) of {duration_s:.0f} s after {warmup_s:.0f} s warm-up: "
            f"explain at {EXPLAIN_CONNECTIONS} connections; predict at {PREDICT_CONNECTIONS} connections with "
            f"the explainer companion {companion} loaded in Triton and unloaded, interleaved (ABBA). One gateway, "
            "one Triton, load generator on the same 2 cores."
        ),
        "rows": rows,
        "explain_p99_ms_c8": statistics.median(r["p99_ms"] for r in explain_runs),
        "explain_rps_c8": statistics.median(r["rps"] for r in explain_runs),
        "explain_rows_per_execution_c8": statistics.median(batching),
        "predict_rps_ratio_with_explain_installed": round(rps["installed"] / rps["not installed"], 3),
        "predict_triton_cpu_us_per_request_with_explain_installed": round(cpu["installed"], 1),
        "predict_triton_cpu_us_per_request_without_explain": round(cpu["not installed"], 1),
    }


def _cpu_us_per_request(res: dict[str, Any]) -> float:
    """Triton CPU (process tree, after the warm-up) per answered request, in µs."""
    return float(res.get("cpu_s") or 0.0) / max(1, int(res.get("requests") or 0)) * 1e6
