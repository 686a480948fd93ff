"""Gateway benchmark: the gateway against the common FastAPI pattern and against Triton alone.

One run on this machine, the same load generator for every server of a comparison:

* HTTP, ``wrk`` (C, keep-alive, random entity per request): the gateway
  (``POST /v1/models/<m>/predict`` with one entity) and the baseline (``loadtest.baseline_app``:
  per-request Feast SDK + one-row DataFrame + in-process XGBoost ``predict_proba``; one uvicorn
  worker per core, ``OMP_NUM_THREADS=1``), each with a warm-up run first.
* gRPC, ``h2load`` (nghttp2, C) replaying one KServe v2 ``ModelInfer`` request: Triton alone
  (the features tensor of one entity) and the gateway's gRPC port (the entity id as a BYTES
  tensor). h2load reports throughput only (no percentiles).
* Gateway vs Triton alone (the ratios at the top concurrency, the added p50 at concurrency 1):
  interleaved rounds (``loadtest.bench_rounds``), each figure the median of its per-round values.
* Feature reads in process: 64 concurrent single-entity requests through the gateway's
  coalescer vs one Feast SDK ``get_online_features`` call per request.

Needs ``wrk`` and ``h2load`` (Debian: ``apt-get install -y wrk nghttp2-client``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loadtest.bench_latency import CpuMeter, cpu_us_per_request, grpc_latency
from loadtest.bench_rounds import difference, merged, ratio, run_rounds, spread
from loadtest.bench_triton import tree_cpu_s
from loadtest.settings import LoadtestConfig
from treeserve import procs
from treeserve.local_triton import triton_grpc_url

log = logging.getLogger(__name__)

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


# ---- wrk ----------------------------------------------------------------------------------
def wrk_script(path: Path, *, url_path: str, body_template: str, ids: Sequence[str]) -> Path:
    """A wrk Lua script posting ``body_template`` with a random id from ``ids`` per request."""
    quoted = ",".join(json.dumps(i) for i in ids)
    path.write_text(
        f"""local ids = {{{quoted}}}
math.randomseed(os.time())
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local id = ids[math.random(#ids)]
  return wrk.format(nil, "{url_path}", nil, string.format('{body_template}', id))
end
"""
    )
    return path


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms), errors and non-2xx from wrk's --latency output."""
    out: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else 0.0
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)(?:\.\d+)?%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M):
        out[f"p{pct}_ms"] = round(float(value) * _UNITS[unit], 3)
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return out


def require_answers(what: str, res: dict[str, Any], log_file: Path, *, max_error_share: float = 0.01) -> None:
    """A run whose requests mostly failed measures nothing: raise, naming the share and the log."""
    errors = (res.get("non_2xx") or 0) + (res.get("socket_errors") or 0)
    total = res.get("requests") or 0
    if not total or errors > max_error_share * total:
        raise RuntimeError(f"{what}: {errors} of {total} requests failed; see {log_file}")


def run_wrk(
    url: str,
    script: Path,
    *,
    connections: int,
    duration_s: float,
    warmup_s: float,
    cpu_of: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Warm up, then measure one wrk run at ``connections`` (and ``cpu_of()``'s CPU seconds in it)."""
    threads = max(1, min(2, connections))
    base = ["wrk", f"-t{threads}", f"-c{connections}", "--latency", "-s", str(script), "--timeout", "5s"]
    if warmup_s > 0:
        subprocess.run([*base, f"-d{max(1, round(warmup_s))}s", url], capture_output=True, check=False)
    meter = CpuMeter(cpu_of).start() if cpu_of else None
    res = subprocess.run(
        [*base, f"-d{max(1, round(duration_s))}s", url], capture_output=True, text=True, check=False
    )
    parsed = parse_wrk(res.stdout)
    parsed["connections"] = connections
    if meter is not None:
        parsed["cpu_s"] = meter.stop()
    return parsed


# ---- h2load (gRPC) --------------------------------------------------------------------------
def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def parse_h2load(text: str) -> dict[str, Any]:
    """Requests/s and status counts from h2load's summary."""
    out: dict[str, Any] = {}
    m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", text)
    out["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
        text,
    )
    if m:
        out["requests"] = int(m.group(4))
        out["failed"] = int(m.group(5)) + int(m.group(6))
    m = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", text)
    if m:
        out["max_ms"] = round(float(m.group(3)) * _UNITS[m.group(4)], 3)
        out["mean_ms"] = round(float(m.group(5)) * _UNITS[m.group(6)], 3)
    return out


def run_h2load(
    url: str,
    body: Path,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    cpu_of: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """gRPC load: ``concurrency`` connections with one stream each, replaying ``body``.

    With ``cpu_of`` (CPU seconds of a process tree so far), ``cpu_s`` is what it spent after the
    warm-up, i.e. while the counted requests were answered.
    """
    clients = max(1, concurrency)
    cmd = [
        "h2load",
        f"-c{clients}",
        "-m1",
        f"-t{min(2, clients)}",
        "-D",
        str(max(1, round(duration_s))),
        "--warm-up-time",
        str(max(0, round(warmup_s))),
        "-d",
        str(body),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        url,
    ]
    meter = CpuMeter(cpu_of).start(after_s=max(0, round(warmup_s))) if cpu_of else None
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    parsed = parse_h2load(res.stdout)
    parsed["concurrency"] = concurrency
    if meter is not None:
        parsed["cpu_s"] = meter.stop()
    return parsed


def check_grpc_body(target: str, body: bytes) -> bytes:
    """Send the framed request once over a real gRPC channel (h2load cannot see grpc-status)."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        return call(body[5:], timeout=10)  # type: ignore[no-any-return]


def triton_request_body(model: str, version: str, features: Sequence[float]) -> bytes:
    """A serialized KServe v2 ModelInferRequest with one row of features."""
    import numpy as np
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    inp = req.inputs.add()
    inp.name = "features"
    inp.datatype = "FP32"
    inp.shape.extend([1, len(features)])
    req.raw_input_contents.append(np.asarray([features], dtype=np.float32).tobytes())
    out = req.outputs.add()
    out.name = "probabilities"
    return grpc_frame(req.SerializeToString())


def gateway_request_body(model: str, key: str, entity_id: str) -> bytes:
    """A serialized KServe v2 ModelInferRequest carrying one entity id (BYTES)."""
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=model)
    inp = req.inputs.add()
    inp.name = key
    inp.datatype = "BYTES"
    inp.shape.extend([1])
    raw = entity_id.encode()
    req.raw_input_contents.append(struct.pack("<I", len(raw)) + raw)
    out = req.outputs.add()
    out.name = "score"
    return grpc_frame(req.SerializeToString())


# ---- servers --------------------------------------------------------------------------------
def start_baseline(
    env: dict[str, str], *, port: int, workers: int, log_file: Path
) -> subprocess.Popen[bytes]:
    """The baseline app under uvicorn (uvloop, httptools), ``workers`` processes."""
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "loadtest.baseline_app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    proc = procs.start_background(cmd, log_file=log_file, env={**env, "OMP_NUM_THREADS": "1"})
    ok = procs.wait_until(
        lambda: procs.http_ok(f"http://127.0.0.1:{port}/healthz"),
        timeout_s=120,
        interval_s=0.25,
        alive=lambda: proc.poll() is None,
    )
    if not ok:
        procs.stop_pid(proc.pid)
        raise RuntimeError(f"baseline did not start; see {log_file}")
    return proc


# ---- feature coalescing -----------------------------------------------------------------------
def _sdk_read(store: Any, service: Any, customer_id: str) -> Any:
    return store.get_online_features(features=service, entity_rows=[{"customer_id": customer_id}]).to_dict()


def _fetcher(source: Any, service: str) -> Any:
    async def call(keys: list[tuple[str, ...]]) -> Any:
        return await source.fetch(service, keys)

    return call


async def _feature_rates(
    store: Any, service: str, ids: Sequence[str], *, concurrency: int, total: int
) -> dict[str, float]:
    """Entities/s for ``concurrency`` concurrent single-entity requests, three ways."""
    from gateway.coalesce import Coalescer
    from treeserve.features import DirectFeatureSource, FeastFeatureSource

    fs = store.get_feature_service(service)
    loop = asyncio.get_running_loop()
    sources = {
        "coalesced_sdk": FeastFeatureSource(store, store_name="bench"),
        "coalesced_direct": DirectFeatureSource(store, store_name=store.config.online_store.type),
    }
    coalescers: dict[str, Coalescer[Any]] = {}
    for name, src in sources.items():
        src.describe(service)
        coalescers[name] = Coalescer(_fetcher(src, service), window_us=500, max_batch=512, stage="bench")

    async def per_request(k: int) -> None:
        for i in range(k):
            await loop.run_in_executor(None, _sdk_read, store, fs, ids[i % len(ids)])

    def coalesced(name: str) -> Any:
        async def worker(k: int) -> None:
            for i in range(k):
                await coalescers[name].submit([(ids[i % len(ids)],)])

        return worker

    per = max(1, total // concurrency)
    rates: dict[str, float] = {}
    workers = {"per_request_sdk": per_request, **{n: coalesced(n) for n in sources}}
    for name, worker in workers.items():
        await asyncio.gather(*(worker(3) for _ in range(concurrency)))  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(per) for _ in range(concurrency)))
        rates[name] = per * concurrency / (time.perf_counter() - t0)
    for src in sources.values():
        await src.aclose()
    return rates


HOP = "gateway_triton_over_grpc"
"""The bench's second gateway: the same build with ``gateway.triton.protocol=grpc``."""


def start_triton_over_grpc_gateway(world: Any, triton: Any, out_dir: Path) -> Any:
    """A second gateway of ``world`` that calls ``triton`` over gRPC (free ports, own log)."""
    from gateway.server import GatewayProcess

    env = world.env_for_children() | {
        "TREESERVE_GATEWAY__TRITON__PROTOCOL": "grpc",
        "TREESERVE_GATEWAY__TRITON__GRPC_URL": triton.grpc_url,
        "TREESERVE_GATEWAY__PREDLOG_DIR": str(out_dir / "predlog-triton-over-grpc"),
    }
    proc = GatewayProcess(
        env=env, port=procs.free_port(), grpc_port=procs.free_port(), log_file=out_dir / f"{HOP}.log"
    )
    return proc.start(timeout_s=90)


def overhead_figures(results: dict[str, Any], top: str) -> dict[str, float | None]:
    """What the gateway adds to Triton alone: p50 at concurrency 1, CPU per request at ``top``.

    With interleaved rounds (``grpc_latency_c1_rounds``) the added p50 is the median of the
    per-round differences, with its min and max; otherwise the difference of the two p50s.
    """
    lat = results.get("grpc_latency_c1") or {}
    tp50, gp50 = (lat.get("triton") or {}).get("p50_ms"), (lat.get("gateway") or {}).get("p50_ms")
    grpc_top = {k: (results.get("grpc") or {}).get(k, {}).get(top) or {} for k in ("triton", "gateway")}
    http_top = (results.get("http") or {}).get("gateway", {}).get(top) or {}
    added: dict[str, float | None] = {"median": None, "min": None, "max": None}
    if results.get("grpc_latency_c1_rounds"):
        added = spread(difference(results["grpc_latency_c1_rounds"], "gateway", "triton", "p50_ms"))
    elif tp50 is not None and gp50 is not None:
        added = {"median": round(gp50 - tp50, 3), "min": None, "max": None}
    return {
        "gateway_added_latency_p50_ms_c1": added["median"],
        "gateway_added_latency_p50_ms_c1_min": added["min"],
        "gateway_added_latency_p50_ms_c1_max": added["max"],
        f"gateway_cpu_us_per_request_c{top}": cpu_us_per_request(
            grpc_top["gateway"].get("cpu_s"), grpc_top["gateway"].get("requests")
        ),
        f"gateway_http_cpu_us_per_request_c{top}": cpu_us_per_request(
            http_top.get("cpu_s"), http_top.get("requests")
        ),
        f"triton_cpu_us_per_request_c{top}": cpu_us_per_request(
            grpc_top["triton"].get("cpu_s"), grpc_top["triton"].get("requests")
        ),
    }


# ---- the benchmark ----------------------------------------------------------------------------
def _entity_ids(settings: LoadtestConfig, n: int = 1000) -> list[str]:
    import pandas as pd

    frame = pd.read_parquet(
        settings.path(settings.data.data_dir) / "customer_stats.parquet", columns=["customer_id"]
    )
    ids = sorted(frame["customer_id"].astype(str).unique())
    step = max(1, len(ids) // n)
    return ids[::step][:n]


def run_gateway_bench(
    settings: LoadtestConfig | None = None,
    *,
    out_dir: Path,
    concurrencies: Sequence[int] = (1, 8, 32, 64),
    duration_s: float = 8.0,
    warmup_s: float = 3.0,
    gateway_workers: int = 1,
    baseline_workers: int | None = None,
    world: Any = None,
    quick: bool = False,
    rounds: int = 4,
) -> dict[str, Any]:
    """Measure gateway vs baseline (wrk) and gateway vs Triton (h2load); returns the figures.

    ``world`` is a ``loadtest.bench_world.BenchWorld``; without one a small world (2000
    customers, Redis online store when reachable) is built under ``out_dir`` and closed after.
    The gateway/Triton comparisons at the top concurrency and at concurrency 1 run as ``rounds``
    interleaved rounds of ``duration_s / rounds`` (at least 1 s) per server.
    """
    from loadtest.bench_world import build_world

    if quick:
        concurrencies = sorted({min(concurrencies), max(concurrencies)})
        duration_s, warmup_s = min(duration_s, 3.0), min(warmup_s, 1.0)
    for tool in ("wrk", "h2load"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (apt-get install -y wrk nghttp2-client)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    own_world = world is None
    if world is None:
        world = build_world(out_dir / "world", n_customers=2000, online_store="redis")
    settings = world.settings
    cores = os.cpu_count() or 1
    baseline_workers = baseline_workers or cores
    results: dict[str, Any] = {
        "machine_cores": cores,
        "gateway_workers": gateway_workers,
        "baseline_workers": baseline_workers,
        "online_store": settings.feast.online_store,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "rounds": rounds,
        "load_generators": {"http": "wrk 4.1", "grpc": "h2load (nghttp2)"},
        "gateway_triton_protocol": settings.gateway.triton.transport(),
    }
    baseline = None
    hop: Any = None
    try:
        world.start_triton()
        gw = world.start_gateway(workers=gateway_workers)
        ids = _entity_ids(settings)
        model = world.model
        triton = world.start_triton()

        def gw_cpu() -> float:
            return tree_cpu_s(gw.proc.pid if gw.proc else None)

        def triton_cpu() -> float:
            return tree_cpu_s(triton.pid())

        env = world.env_for_children()
        bport = procs.free_port()
        baseline = start_baseline(
            env, port=bport, workers=baseline_workers, log_file=out_dir / "baseline.log"
        )

        gw_script = wrk_script(
            out_dir / "gateway.lua",
            url_path=f"/v1/models/{model}/predict",
            body_template='{"entities":[{"customer_id":"%s"}]}',
            ids=ids,
        )
        bl_script = wrk_script(
            out_dir / "baseline.lua", url_path="/predict", body_template='{"customer_id":"%s"}', ids=ids
        )

        http: dict[str, dict[str, Any]] = {"gateway": {}, "baseline": {}}
        for c in concurrencies:
            http["gateway"][str(c)] = run_wrk(
                gw.url, gw_script, connections=c, duration_s=duration_s, warmup_s=warmup_s, cpu_of=gw_cpu
            )
            http["baseline"][str(c)] = run_wrk(
                f"http://127.0.0.1:{bport}",
                bl_script,
                connections=c,
                duration_s=duration_s,
                warmup_s=warmup_s,
            )
            log.info("c=%d gateway %s baseline %s", c, http["gateway"][str(c)], http["baseline"][str(c)])
            for name, log_file in (("gateway", gw.log_file), ("baseline", out_dir / "baseline.log")):
                require_answers(f"{name} at c={c}", http[name][str(c)], log_file)
        results["http"] = http
        procs.stop_pid(baseline.pid)
        baseline = None

        # gRPC: Triton alone vs the gateway's KServe v2 port, same h2load.
        from treeserve.features.store import feature_service_features, open_feature_store

        store = open_feature_store(settings)
        features = feature_service_features(store, settings.feast.feature_service)
        online = store.get_online_features(
            features=store.get_feature_service(settings.feast.feature_service),
            entity_rows=[{"customer_id": ids[0]}],
        ).to_dict()
        row = [float("nan") if online[f][0] is None else float(online[f][0]) for f in features]
        tbody = out_dir / "triton_request.bin"
        tbody.write_bytes(triton_request_body(model, world.version, row))
        gbody = out_dir / "gateway_request.bin"
        gbody.write_bytes(gateway_request_body(model, "customer_id", ids[0]))
        check_grpc_body(triton_grpc_url(settings), tbody.read_bytes())
        check_grpc_body(gw.grpc_url, gbody.read_bytes())
        triton_url = f"http://{triton_grpc_url(settings)}/inference.GRPCInferenceService/ModelInfer"
        gateway_grpc_url = f"http://{gw.grpc_url}/inference.GRPCInferenceService/ModelInfer"
        grpc_res: dict[str, dict[str, Any]] = {"triton": {}, "gateway": {}}
        top_c = max(concurrencies)
        for c in concurrencies:
            if c == top_c:
                continue  # measured in interleaved rounds below
            grpc_res["triton"][str(c)] = run_h2load(
                triton_url, tbody, concurrency=c, duration_s=duration_s, warmup_s=warmup_s, cpu_of=triton_cpu
            )
            grpc_res["gateway"][str(c)] = run_h2load(
                gateway_grpc_url,
                gbody,
                concurrency=c,
                duration_s=duration_s,
                warmup_s=warmup_s,
                cpu_of=gw_cpu,
            )
            log.info(
                "c=%d grpc triton %s gateway %s", c, grpc_res["triton"][str(c)], grpc_res["gateway"][str(c)]
            )
        # Gateway vs Triton alone at the top concurrency: rounds of Triton (gRPC), the gateway's
        # gRPC port and its HTTP port in turn, so that each round's ratios compare the same moment.
        round_s = max(1.0, duration_s / rounds)

        def first_warm(r: int) -> float:
            return warmup_s if r == 0 else 0.0

        # The same gateway calling Triton over gRPC (gateway.triton.protocol=grpc), in the same
        # rounds: what the default HTTP/1.1 hop changes, measured beside the alternative.
        hop = start_triton_over_grpc_gateway(world, triton, out_dir)
        hop_url = f"http://{hop.grpc_url}/inference.GRPCInferenceService/ModelInfer"

        def hop_cpu() -> float:
            return tree_cpu_s(hop.proc.pid if hop.proc else None)

        def h2load_round(
            url: str, body: Path, cpu_of: Callable[[], float]
        ) -> Callable[[int], dict[str, Any]]:
            return lambda r: run_h2load(
                url, body, concurrency=top_c, duration_s=round_s, warmup_s=first_warm(r), cpu_of=cpu_of
            )

        def wrk_round(url: str, cpu_of: Callable[[], float]) -> Callable[[int], dict[str, Any]]:
            return lambda r: run_wrk(
                url, gw_script, connections=top_c, duration_s=round_s, warmup_s=first_warm(r), cpu_of=cpu_of
            )

        top_rounds = run_rounds(
            {
                "triton": h2load_round(triton_url, tbody, triton_cpu),
                "gateway": h2load_round(gateway_grpc_url, gbody, gw_cpu),
                "gateway_http": wrk_round(gw.url, gw_cpu),
                HOP: h2load_round(hop_url, gbody, hop_cpu),
                f"{HOP}_http": wrk_round(hop.url, hop_cpu),
            },
            rounds=rounds,
        )
        for i, rnd in enumerate(top_rounds):
            require_answers(f"gateway HTTP at c={top_c}, round {i + 1}", rnd["gateway_http"], gw.log_file)
        grpc_res["triton"][str(top_c)] = merged([rnd["triton"] for rnd in top_rounds])
        grpc_res["gateway"][str(top_c)] = merged([rnd["gateway"] for rnd in top_rounds])
        results["grpc"] = grpc_res
        results[f"rounds_c{top_c}"] = top_rounds
        log.info("c=%d rounds %s", top_c, top_rounds)

        # Percentiles at concurrency 1, same client and transport for both (h2load has none),
        # in interleaved rounds too: the added p50 is the median of the per-round differences.
        def c1_run(target: str, body: Path) -> Callable[[int], dict[str, Any]]:
            def run(r: int) -> dict[str, Any]:
                warm = warmup_s if r == 0 else min(warmup_s, 0.5)  # a fresh channel each round
                return grpc_latency(
                    target, body.read_bytes(), concurrency=1, duration_s=round_s, warmup_s=warm
                )

            return run

        c1_rounds = run_rounds(
            {
                "triton": c1_run(triton_grpc_url(settings), tbody),
                "gateway": c1_run(gw.grpc_url, gbody),
                HOP: c1_run(hop.grpc_url, gbody),
            },
            rounds=rounds,
        )
        hop.stop()
        results["grpc_latency_c1_rounds"] = c1_rounds
        results["grpc_latency_c1"] = {
            name: merged([rnd[name] for rnd in c1_rounds]) | {"load_generator": "grpc.aio client"}
            for name in ("triton", "gateway", HOP)
        }
        log.info("grpc latency c=1 %s", results["grpc_latency_c1"])

        rates = asyncio.run(
            _feature_rates(store, settings.feast.feature_service, ids, concurrency=64, total=6400)
        )
        results["feature_reads_entities_per_s"] = {k: round(v, 1) for k, v in rates.items()}
        base = rates["per_request_sdk"]
        # The gateway's own path (coalesced + direct reader) vs the common per-request SDK call;
        # the SDK-only coalescing gain is reported beside it.
        results["feature_coalesced_vs_per_request_ratio"] = round(rates["coalesced_direct"] / base, 2)
        results["feature_coalesced_sdk_vs_per_request_ratio"] = round(rates["coalesced_sdk"] / base, 2)
    finally:
        if hop is not None:
            hop.stop()
        if baseline is not None:
            procs.stop_pid(baseline.pid)
        if own_world:
            world.close()

    top = str(max(concurrencies))
    g, b = results["http"]["gateway"][top], results["http"]["baseline"][top]
    tg, gg = results["grpc"]["triton"][top], results["grpc"]["gateway"][top]
    results[f"gateway_rps_c{top}"] = g["rps"]
    results[f"baseline_rps_c{top}"] = b["rps"]
    results[f"gateway_p99_ms_c{top}"] = g.get("p99_ms")
    results[f"baseline_p99_ms_c{top}"] = b.get("p99_ms")
    results[f"gateway_vs_baseline_rps_ratio_c{top}"] = round(g["rps"] / b["rps"], 2) if b["rps"] else None
    results[f"gateway_vs_baseline_p99_ratio_c{top}"] = (
        round(g["p99_ms"] / b["p99_ms"], 3) if g.get("p99_ms") and b.get("p99_ms") else None
    )
    results[f"triton_grpc_rps_c{top}"] = tg["rps"]
    results[f"gateway_grpc_rps_c{top}"] = gg["rps"]
    # Ratios to Triton alone: the median of the per-round ratios (each round one moment).
    top_rounds = results.get(f"rounds_c{top}") or []
    for key, server in (
        ("gateway_vs_triton", "gateway"),
        ("gateway_http_vs_triton", "gateway_http"),
        (f"{HOP}_vs_triton", HOP),
        (f"{HOP}_http_vs_triton", f"{HOP}_http"),
    ):
        s = spread(ratio(top_rounds, server, "triton"))
        results[f"{key}_rps_ratio_c{top}"] = s["median"]
        results[f"{key}_rps_ratio_c{top}_min"] = s["min"]
        results[f"{key}_rps_ratio_c{top}_max"] = s["max"]
    results.update(overhead_figures(results, top))
    hop_added = spread(difference(results.get("grpc_latency_c1_rounds") or [], HOP, "triton", "p50_ms"))
    results[f"{HOP}_added_latency_p50_ms_c1"] = hop_added["median"]
    (out_dir / "bench_gateway.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":  # python -m loadtest.bench_gateway [out_dir]
    from treeserve.logs import setup_logging

    setup_logging("INFO")
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("reports/bench/gateway")
    print(json.dumps(run_gateway_bench(out_dir=target), indent=2))
