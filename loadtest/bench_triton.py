"""Triton dynamic batching on vs off: gRPC, one row per request, concurrency 1, 8 and 32.

Two Triton models share one exported version directory and differ only in ``dynamic_batching``
(``bench-batching-on`` / ``bench-batching-off``); one local Triton (python-ort flavour, one
instance, ORT 1 thread) serves both. The load generator is ``h2load`` (nghttp2, C) replaying one
KServe v2 ``ModelInferRequest`` with a single row: ``-c C -m 1`` = C clients with one request in
flight each (closed loop). Latency percentiles come from h2load's per-request log; Triton's
``/v2/models/<m>/stats`` give the real execution count (rows per execution) and the success
count (h2load counts a gRPC error inside HTTP 200 as a success, Triton does not).

The model is the champion of the settings' repository when there is one (the demo world), else
a demo-size XGBoost classifier (7 features, 200 trees of depth 5) trained and exported here.

    python -m loadtest.bench --only triton              # through the suite (writes BENCHMARKS.md)
    python -m loadtest.bench_triton --out-dir /tmp/tb   # this section alone, JSON on stdout
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.machine import process_tree_sum
from loadtest.settings import LoadtestConfig
from treeserve.repository import VersionMetadata

log = logging.getLogger(__name__)

CONCURRENCY = (1, 8, 32)
MODES = {"on": "bench-batching-on", "off": "bench-batching-off"}


def run_triton_batching_bench(
    settings: LoadtestConfig,
    *,
    out_dir: Path,
    repeats: int = 3,
    quick: bool = False,
    duration_s: float | None = None,
) -> dict[str, Any]:
    """Measure req/s, p50 and p99 with dynamic batching on and off; return the report section."""
    from exporter.triton_server import TritonServer
    from treeserve.procs import free_port

    if shutil.which("h2load") is None:
        return {"status": "not measured", "reason": "h2load not installed (apt-get install nghttp2-client)"}
    out_dir = Path(out_dir)
    work = out_dir / "triton-bench"
    if work.exists():
        shutil.rmtree(work)
    repo = work / "model_repository"
    duration = duration_s or (3.0 if quick else 5.0)
    repeats = max(1, repeats)

    source, row, output, origin = _prepare_models(settings, repo)
    server = TritonServer(
        venv=_venv(settings),
        repository=repo,
        run_dir=work / "run",
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        startup_timeout_s=90,
        load_timeout_s=90,
    )
    server.start()
    load_before = os.getloadavg()[0]
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        bodies = {}
        for mode, model in MODES.items():
            server.load_model(model)
            body = work / f"{model}.bin"
            body.write_bytes(_request_body(model, row, output))
            bodies[mode] = body
        url = f"http://{server.host}:{server.grpc_port}/inference.GRPCInferenceService/ModelInfer"
        for rep in range(repeats):
            for c in CONCURRENCY:
                # Interleave on/off so machine noise hits both alike.
                for mode in ("on", "off") if rep % 2 == 0 else ("off", "on"):
                    _h2load(url, bodies[mode], concurrency=c, duration_s=1.0, log_file=None)  # warm-up
                    before = _stats(server, MODES[mode])
                    cpu_before = tree_cpu_s(server.pid())
                    run = _h2load(
                        url, bodies[mode], concurrency=c, duration_s=duration, log_file=work / "lat.tsv"
                    )
                    run["triton_cpu_s"] = tree_cpu_s(server.pid()) - cpu_before
                    after = _stats(server, MODES[mode])
                    run["executions"] = after["executions"] - before["executions"]
                    run["inferences"] = after["inferences"] - before["inferences"]
                    run["failed_in_triton"] = after["failures"] - before["failures"]
                    results.setdefault((mode, c), []).append(run)
                    log.info(
                        "triton bench %s c=%d: %.0f req/s p99 %.2f ms", mode, c, run["rps"], run["p99_ms"]
                    )
    finally:
        server.stop()
    section = _section(results, repeats=repeats, duration_s=duration, source=source, origin=origin)
    load = (load_before, os.getloadavg()[0])
    section["load_average"] = {"start": round(load[0], 2), "end": round(load[1], 2)}
    section["notes"].append(
        f"1-minute load average {load[0]:.1f} at the start and {load[1]:.1f} at the end on "
        f"{os.cpu_count()} cores: anything above ~2 means other work shared the CPUs with Triton and h2load."
    )
    return section


# ---- set-up ---------------------------------------------------------------------------------


def _venv(settings: LoadtestConfig) -> Path:
    from exporter.triton_server import resolve_venv

    return resolve_venv(settings.path(settings.triton.venv), settings.triton.venv)


def _prepare_models(settings: LoadtestConfig, repo: Path) -> tuple[str, np.ndarray, str, str]:
    """Install one version directory under both bench models; return (source, a row, output, origin)."""
    from exporter.flavors import get_flavor
    from treeserve import contract
    from treeserve import repository as repo_mod
    from treeserve.repository import TritonModelSpec

    version_src, meta, origin = _champion_version(settings)
    if version_src is None:
        version_src, meta = _synthetic_version(repo.parent / "synthetic")
        origin = "synthetic demo-size classifier (7 features, 200 trees, depth 5)"
    inputs = repo_mod.load_reference(version_src).inputs
    finite = inputs[np.isfinite(inputs).all(axis=1)]
    row = (finite[0] if len(finite) else inputs[0]).astype(np.float32)
    task = meta.task
    output = contract.OUTPUT_PREDICTION if task == "regression" else contract.OUTPUT_PROBABILITIES
    for batching, model in ((True, MODES["on"]), (False, MODES["off"])):
        shutil.copytree(version_src, repo / model / "1")
        spec = TritonModelSpec(
            name=model,
            task=task,  # type: ignore[arg-type]
            features=meta.features,
            n_classes=meta.n_classes,
            versions=(1,),
            routing={"champion": "1"},
            max_batch_size=settings.exporter.max_batch_size,
            dynamic_batching=batching,
            queue_delay_us=settings.exporter.max_queue_delay_us,
            instance_count=settings.exporter.instance_count,
            ort_intra_op_threads=1,
            ort_inter_op_threads=1,
        )
        if not (repo / model / "1" / "model.py").exists():  # champion exported in another flavour
            from exporter.flavors import _TEMPLATE, PYTHON_MODEL_FILE

            (repo / model / "1" / PYTHON_MODEL_FILE).write_text(_TEMPLATE.read_text())
        repo_mod.write_config(repo, spec, get_flavor("python-ort"))
    return f"{meta.model} v{meta.version}", row, output, origin


def _champion_version(settings: LoadtestConfig) -> tuple[Path | None, VersionMetadata, str]:
    from treeserve import repository as repo_mod

    repo = settings.path(settings.exporter.repository)
    name = settings.mlflow.model_name
    try:
        cfg = repo_mod.read_model_config(repo, name)
        version = cfg.version_for("champion")
        if version is None:
            return None, VersionMetadata(), ""
        meta = repo_mod.read_version_metadata(repo, name, version)
    except Exception as e:  # no world: fall back to the synthetic model
        log.info("no champion in %s (%s); using a synthetic model", repo, e)
        return None, VersionMetadata(), ""
    return repo_mod.version_dir(repo, name, version), meta, f"the demo champion ({name} v{version})"


def _synthetic_version(work: Path) -> tuple[Path, VersionMetadata]:
    """Train and export a demo-size classifier without MLflow (same conversion + parity path)."""
    import xgboost as xgb

    from exporter.convert import convert_to_onnx
    from exporter.flavors import VersionArtifacts, get_flavor
    from exporter.source import SourceModel
    from exporter.validate import check_parity, parity_inputs
    from treeserve import repository as repo_mod

    features = [f"f{i}" for i in range(7)]
    rng = np.random.default_rng(7)
    X = rng.normal(size=(5000, 7))
    X[rng.random(X.shape) < 0.05] = np.nan
    y = (np.nansum(X[:, :3], axis=1) + rng.normal(0, 1, 5000) > 0).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 5, "eta": 0.1, "nthread": 1},
        xgb.DMatrix(X, label=y, feature_names=features),
        200,
    )
    src = SourceModel(
        name="bench-synthetic",
        version="1",
        run_id="",
        booster=booster,
        features=features,
        task="binary",
        n_classes=2,
        objective="binary:logistic",
        best_iteration=None,
        source_sha256="",
        reference=X[:256],
        reference_origin="reference_sample",
    )
    onnx_bytes = convert_to_onnx(src).SerializeToString()
    inputs = parity_inputs(src, rows=256)
    report = check_parity(src, onnx_bytes, inputs, proba_atol=1e-5, regression_rtol=1e-5)
    folder = work / "1"
    folder.mkdir(parents=True)
    from treeserve.repository import TritonModelSpec

    spec = TritonModelSpec(name=src.name, task="binary", features=tuple(features))
    get_flavor("python-ort").write_version_files(VersionArtifacts(spec=spec, onnx_model=onnx_bytes), folder)
    repo_mod.write_reference(folder, inputs, report.outputs)
    meta = VersionMetadata(model=src.name, version="1", task="binary", n_classes=2, features=tuple(features))
    repo_mod.write_version_metadata(folder, meta)
    return folder, meta


def _request_body(model: str, row: np.ndarray, output: str) -> bytes:
    """One gRPC-framed ModelInferRequest carrying ``row`` as a [1, n] FP32 tensor."""
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=model, model_version="1")
    inp = req.inputs.add()
    inp.name = "features"
    inp.datatype = "FP32"
    inp.shape.extend([1, len(row)])
    req.raw_input_contents.append(np.ascontiguousarray(row.reshape(1, -1), dtype=np.float32).tobytes())
    req.outputs.add().name = output
    msg = req.SerializeToString()
    return b"\x00" + struct.pack(">I", len(msg)) + msg


# ---- measuring ------------------------------------------------------------------------------


def _h2load(
    url: str, body: Path, *, concurrency: int, duration_s: float, log_file: Path | None
) -> dict[str, float]:
    cmd = [
        "h2load",
        f"-c{concurrency}",
        "-m1",
        "-t1",
        "-D",
        f"{max(1, round(duration_s))}",
        "-d",
        str(body),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
    ]
    if log_file is not None:
        log_file.unlink(missing_ok=True)
        cmd += ["--log-file", str(log_file)]
    started = time.perf_counter()
    res = subprocess.run([*cmd, url], capture_output=True, text=True, check=False, timeout=duration_s + 60)
    wall = time.perf_counter() - started
    out: dict[str, float] = {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "requests": 0}
    for line in res.stdout.splitlines():
        if line.startswith("finished in"):
            out["rps"] = float(line.split(",")[1].split()[0])
        if line.startswith("requests:"):
            parts = dict(p.strip().split(" ", 1)[::-1] for p in line.removeprefix("requests:").split(","))
            out["requests"] = float(parts.get("succeeded", 0))
            out["failed"] = float(parts.get("failed", 0)) + float(parts.get("errored", 0))
    if log_file is not None and log_file.exists():
        lat_us = [
            int(cols[2])
            for cols in (ln.split("\t") for ln in log_file.read_text().splitlines())
            if len(cols) >= 3
        ]
        if lat_us:
            ms = np.asarray(lat_us, dtype=np.float64) / 1000.0
            out["p50_ms"] = float(np.percentile(ms, 50))
            out["p99_ms"] = float(np.percentile(ms, 99))
    if out["rps"] == 0.0 and out["requests"]:
        out["rps"] = out["requests"] / wall
    if res.returncode != 0 or not out["requests"]:
        raise RuntimeError(f"h2load failed ({res.returncode}): {(res.stderr or res.stdout).strip()[-300:]}")
    return out


def tree_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of tritonserver and its Python-backend stubs so far."""
    return process_tree_sum(pid, lambda p: sum(p.cpu_times()[:2]))


def _stats(server: Any, model: str) -> dict[str, int]:
    s = server.admin.model_stats(model)["model_stats"][0]
    inf = s.get("inference_stats", {})
    return {
        "inferences": int(s.get("inference_count", 0)),
        "executions": int(s.get("execution_count", 0)),
        "failures": int(inf.get("fail", {}).get("count", 0)),
    }


def _mmm(values: list[float]) -> dict[str, float | int]:
    xs = [float(v) for v in values if v == v]  # drop NaN
    if not xs:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def _section(
    results: dict[tuple[str, int], list[dict[str, float]]],
    *,
    repeats: int,
    duration_s: float,
    source: str,
    origin: str,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, Any]]] = {
        "Triton, dynamic batching on": [],
        "Triton, dynamic batching off": [],
    }
    speedup: dict[str, dict[str, float | int]] = {}
    cpu_saving: dict[str, float | None] = {}
    for c in CONCURRENCY:
        for mode in ("on", "off"):
            runs = results[(mode, c)]
            rps = _mmm([r["rps"] for r in runs])
            p50 = _mmm([r["p50_ms"] for r in runs])
            p99 = _mmm([r["p99_ms"] for r in runs])
            execs = sum(r["executions"] for r in runs)
            infs = sum(r["inferences"] for r in runs)
            rows.append(
                {
                    "concurrency": c,
                    "dynamic batching": mode,
                    "req/s": rps,
                    "p50 ms": p50,
                    "p99 ms": p99,
                    "rows per execution": round(infs / execs, 2) if execs else None,
                    "Triton CPU µs/request": _mmm(_cpu_us(runs)),
                    "failed in Triton": int(sum(r["failed_in_triton"] for r in runs)),
                    "h2load errors": int(sum(r.get("failed", 0) for r in runs)),
                }
            )
            curves[f"Triton, dynamic batching {mode}"].append({"concurrency": c, "rps": rps, "p99_ms": p99})
        # Paired ratios (on/off measured back to back) cancel the slow load drift of a shared machine.
        pairs = [
            a["rps"] / b["rps"]
            for a, b in zip(results[("on", c)], results[("off", c)], strict=True)
            if b["rps"]
        ]
        speedup[str(c)] = _mmm(pairs)
        rows[-2]["speedup on/off (paired)"] = speedup[str(c)]
        cpu_on = _mmm(_cpu_us(results[("on", c)]))["median"]
        cpu_off = _mmm(_cpu_us(results[("off", c)]))["median"]
        cpu_saving[str(c)] = float(cpu_off) / float(cpu_on) if cpu_on and cpu_on == cpu_on else None
    return {
        "title": "Triton dynamic batching (gRPC, one row per request)",
        "command": "python -m loadtest.bench --only triton",
        "description": (
            f"Model: {origin}, python-ort flavour (Python backend running ONNX Runtime once per batch, "
            "1 instance, ORT 1 thread), max_queue_delay 200 µs when batching is on. Load: h2load, "
            f"C clients × 1 request in flight, one row per request; {repeats} run(s) of {duration_s:g} s per "
            "point after a 1 s warm-up, on/off interleaved. Cells: median (min–max). Load generator and "
            "Triton share the machine."
        ),
        "rows": rows,
        "curves": curves,
        "metrics": {
            "triton_dynamic_batching_speedup_c32": speedup["32"]["median"],
            "triton_dynamic_batching_cpu_per_request_ratio_c32": cpu_saving.get("32"),
        },
        "runs": {f"{mode}-c{c}": runs for (mode, c), runs in sorted(results.items())},
        "speedup_by_concurrency": speedup,
        "cpu_per_request_off_over_on": cpu_saving,
        "source": source,
        "notes": [
            "speedup = median of the on/off req/s ratios of back-to-back runs. rows per execution = inferences / executions from /v2/models/<m>/stats: how many requests the "
            "dynamic batcher merged into one model execution.",
            "At concurrency 1 batching costs the queue delay and buys nothing; its value appears once "
            "requests overlap.",
            "Triton CPU µs/request = CPU time of tritonserver and its Python-backend stubs (psutil) per "
            "inference: unlike req/s it hardly depends on what else runs on the machine. Off/on ratio at "
            f"concurrency 32: {_fmt_ratio(cpu_saving.get('32'))} (the CPU batching saves per request, i.e. the "
            "throughput gain to expect on a dedicated CPU).",
            "A handful of 'failed in Triton' are requests still in flight when h2load closes its connections "
            "at the end of a timed run (cancelled streams).",
        ],
    }


def _cpu_us(runs: list[dict[str, float]]) -> list[float]:
    return [1e6 * r["triton_cpu_s"] / r["inferences"] for r in runs if r.get("inferences")]


def _fmt_ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}×"


def main() -> None:
    """``python -m loadtest.bench_triton [--out-dir D] [--repeats N] [--quick]``: print the section as JSON."""
    import argparse

    from treeserve_app.settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from treeserve.logs import setup_logging

    setup_logging("INFO")
    out = args.out_dir or Path(tempfile.mkdtemp(prefix="treeserve-bench-triton-"))
    section = run_triton_batching_bench(load_settings(), out_dir=out, repeats=args.repeats, quick=args.quick)
    print(json.dumps(section, indent=2, default=str))


if __name__ == "__main__":
    main()
