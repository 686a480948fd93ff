"""What the durable prediction log costs: gateway req/s with it / the same gateway without a log.

Two gateways against the world's Triton and online store, one with the default durable log
(``gateway.predlog_fsync=interval``), one with ``gateway.predlog_enabled=false`` (and, for the
table, one with ``predlog_fsync=always``); ``wrk`` at 64 connections, one entity per request,
runs interleaved so drift of the machine hits every variant alike. Only one gateway is loaded
at a time; the others sit idle. Beside req/s, the gateway process's CPU per answered request:
on a shared machine req/s swings by ±15 % between runs, CPU per request much less, so the
difference of the CPU figures is what the log costs.
"""

from __future__ import annotations

import functools
import logging
import shutil
import statistics
from pathlib import Path
from typing import Any

from loadtest.bench_gateway import _entity_ids, run_wrk, wrk_script
from loadtest.bench_report import median_min_max
from loadtest.bench_triton import tree_cpu_s
from treeserve import procs

log = logging.getLogger(__name__)

CONNECTIONS = 64
VARIANTS: dict[str, dict[str, str]] = {
    "durable": {"TREESERVE_GATEWAY__PREDLOG_FSYNC": "interval"},
    "durable_always": {"TREESERVE_GATEWAY__PREDLOG_FSYNC": "always"},
    "disabled": {"TREESERVE_GATEWAY__PREDLOG_ENABLED": "false"},
}


def run_predlog_bench(
    world: Any,
    *,
    out_dir: Path,
    repeats: int = 3,
    quick: bool = False,
    duration_s: float = 8.0,
    warmup_s: float = 2.0,
) -> dict[str, Any]:
    """Interleaved wrk runs at c=64 per variant; the ratio of the medians."""
    from gateway.server import GatewayProcess

    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    if quick:
        repeats, duration_s, warmup_s = 1, 3.0, 1.0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world.start_triton()
    script = wrk_script(
        out_dir / "gateway.lua",
        url_path=f"/v1/models/{world.model}/predict",
        body_template='{"entities":[{"customer_id":"%s"}]}',
        ids=_entity_ids(world.settings),
    )
    gateways: dict[str, GatewayProcess] = {}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    try:
        for name, extra in VARIANTS.items():
            env = {
                **world.env_for_children(),
                "TREESERVE_GATEWAY__PREDLOG_DIR": str(out_dir / name / "predlog"),
                **extra,
            }
            gateways[name] = GatewayProcess(
                env=env, port=procs.free_port(), grpc_port=0, log_file=out_dir / name / "gateway.log"
            ).start(timeout_s=90)
        for _ in range(repeats):
            for name, gw in gateways.items():
                pid = gw.proc.pid if gw.proc is not None else None
                res = run_wrk(
                    gw.url,
                    script,
                    connections=CONNECTIONS,
                    duration_s=duration_s,
                    warmup_s=warmup_s,
                    cpu_of=functools.partial(tree_cpu_s, pid),
                )
                if res["non_2xx"] or res["socket_errors"] or not res["rps"]:
                    raise RuntimeError(f"gateway ({name}) answered errors under load: {res}")
                runs[name].append(res)
                log.info("predlog bench %s: %s", name, res)
    finally:
        for gw in gateways.values():
            gw.stop()
    rps = {name: statistics.median(r["rps"] for r in rs) for name, rs in runs.items()}
    cpu = {name: statistics.median(_cpu_us_per_request(r) for r in rs) for name, rs in runs.items()}
    rows = [
        {
            "gateway": name,
            "req/s": median_min_max(r["rps"] for r in runs[name]),
            "p99 ms": median_min_max(r.get("p99_ms", 0.0) for r in runs[name]),
            "vs log disabled": round(rps[name] / rps["disabled"], 3),
            "gateway CPU µs/request": median_min_max(_cpu_us_per_request(r) for r in runs[name]),
            "CPU µs/request vs log disabled": round(cpu[name] - cpu["disabled"], 1),
        }
        for name in VARIANTS
    ]
    return {
        "title": "Durable prediction log cost",
        "command": "python -m loadtest.bench --only predlog",
        "description": (
            f"wrk, {CONNECTIONS} connections, 1 entity per request, {repeats} interleaved run(s) of "
            f"{duration_s:.0f} s per gateway: durable log (fsync interval), durable log (fsync always), "
            "log disabled."
        ),
        "rows": rows,
        "predlog_durable_rps_ratio_c64": round(rps["durable"] / rps["disabled"], 3),
        "predlog_always_rps_ratio_c64": round(rps["durable_always"] / rps["disabled"], 3),
        "predlog_durable_extra_cpu_us_per_request_c64": round(cpu["durable"] - cpu["disabled"], 1),
    }


def _cpu_us_per_request(res: dict[str, Any]) -> float:
    """Gateway CPU (its process tree, after the warm-up) per answered request, in µs."""
    return float(res.get("cpu_s") or 0.0) / max(1, int(res.get("requests") or 0)) * 1e6
