"""``make bench``: every benchmark of the project in one session, written to BENCHMARKS.md/.json.

    python -m loadtest.bench                     # the whole suite (~10-15 min on 2 cores)
    python -m loadtest.bench --only export,gateway --out-dir /tmp/bench

Benchmarks (each returns a section dict, see ``loadtest.bench_report``):

- ``export``    export time + parity per model type (``loadtest.bench_export``)
- ``triton``    Triton dynamic batching on/off at concurrency 1/8/32
                (``loadtest.bench_triton.run_triton_batching_bench``)
- ``gateway``   gateway vs the per-request FastAPI baseline vs Triton alone at concurrency 64,
                feature resolution per request vs coalesced (``loadtest.bench_gateway.run_gateway_bench``)
- ``promotion`` alias moved → new version served, webhook vs poll
                (``loadtest.bench_promotion.run_promotion_bench``)
- ``locust``    ``treeserve loadtest`` against the gateway with the realistic request mix
- ``predlog``   gateway req/s with the durable prediction log / with the log disabled, c=64
                (``loadtest.bench_predlog.run_predlog_bench``)
- ``multi_triton`` 2 Triton servers x 2 gateways x 1 sync under load: failed requests when one
                Triton is killed, the mixed-version window of a promotion, recovery after a
                restart of the only Triton (``loadtest.bench_multi_triton.run_multi_triton_bench``)
- ``explain``   explain p99 at c=8 and predict req/s with the explainer companion loaded / unloaded
                (``loadtest.bench_explain.run_explain_bench``)

Calling convention for the bench functions written in other modules: they are called with the
keyword arguments they name, out of ``settings`` (the world's settings), ``world``
(``loadtest.bench_world.BenchWorld``: a generated, trained, exported demo world;
``world.start_triton()`` / ``world.start_gateway()`` start its servers on demand),
``work_dir``/``out_dir`` (a scratch folder of their own), ``repeats`` and ``quick``. A missing
module, function or failure becomes "not measured: <reason>" in the report — never a number —
and the run exits 1 naming every headline figure it could not measure. Missing load generators
(wrk, h2load) stop the run before anything starts.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest.bench_adapters import adapt
from loadtest.bench_report import (
    KEY_OWNER,
    STABLE_KEYS,
    build_json,
    dumps,
    median_min_max,
    normalise_section,
    not_measured,
    render_markdown,
)
from loadtest.machine import describe_machine
from loadtest.settings import LoadtestConfig
from treeserve.logs import setup_logging

log = logging.getLogger("loadtest.bench")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BENCHES = ("export", "triton", "gateway", "promotion", "locust", "predlog", "multi_triton", "explain")
EXTERNAL: dict[str, tuple[str, str]] = {
    "triton": ("loadtest.bench_triton", "run_triton_batching_bench"),
    "gateway": ("loadtest.bench_gateway", "run_gateway_bench"),
    "promotion": ("loadtest.bench_promotion", "run_promotion_bench"),
    "predlog": ("loadtest.bench_predlog", "run_predlog_bench"),
    "multi_triton": ("loadtest.bench_multi_triton", "run_multi_triton_bench"),
    "explain": ("loadtest.bench_explain", "run_explain_bench"),
}
NEEDS_WORLD = {"triton", "gateway", "promotion", "locust", "predlog", "multi_triton", "explain"}
LOAD_GENERATORS: dict[str, tuple[str, str]] = {
    "wrk": ("gateway", "wrk"),
    "h2load": ("gateway", "nghttp2-client"),
}
"""Command -> (the bench that needs it, the Debian package that ships it)."""
LOCUST_USERS = 32
LOCUST_DURATION_S = 20


# ---- calling one bench ---------------------------------------------------------------------


def resolve_bench(module_name: str, fn_name: str) -> Callable[..., Any] | str:
    """The bench function, or the reason it cannot be called."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            return f"{module_name.replace('.', '/')}.py does not exist yet"
        return f"{module_name} cannot be imported: {e}"
    except Exception as e:
        return f"{module_name} cannot be imported: {type(e).__name__}: {e}"
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        return f"{module_name} has no {fn_name}()"
    return fn


def call_with_available(fn: Callable[..., Any], available: Mapping[str, Any]) -> Any:
    """Call ``fn`` with the keyword arguments it names out of ``available``.

    Positional parameters are filled by name too; a required parameter nobody provides is an error
    that names it.
    """
    sig = inspect.signature(fn)
    kwargs: dict[str, Any] = {}
    for name, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in available:
            kwargs[name] = available[name]
        elif p.default is p.empty:
            raise TypeError(f"{fn.__module__}.{fn.__name__} needs {name!r}, which the suite does not provide")
    return fn(**kwargs)


def run_section(name: str, fn: Callable[..., Any] | str, available: Mapping[str, Any]) -> dict[str, Any]:
    """Run one bench; any failure becomes a 'not measured' section with the reason."""
    if isinstance(fn, str):
        log.warning("bench %s not measured: %s", name, fn)
        return not_measured(fn)
    _reset_mlflow_fluent_state()
    t0 = time.perf_counter()
    try:
        raw = call_with_available(fn, available)
    except Exception as e:
        log.exception("bench %s failed", name)
        return not_measured(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
    section = normalise_section(name, adapt(name, raw))
    section["wall_time_s"] = round(time.perf_counter() - t0, 1)
    derive_curve_metrics(section)
    log.info("bench %s done in %.0f s", name, section["wall_time_s"])
    return section


def _reset_mlflow_fluent_state() -> None:
    """Benches share this process: no active run or experiment may leak from one into the next."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return
    try:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        fluent = sys.modules.get("mlflow.tracking.fluent")
        if fluent is not None and hasattr(fluent, "_active_experiment_id"):
            fluent._active_experiment_id = None  # type: ignore[attr-defined]
    except Exception as e:  # private state moved in a newer MLflow: only a safety net
        log.debug("mlflow state reset skipped: %s", e)


def _median(v: Any) -> float | None:
    if isinstance(v, Mapping):
        v = v.get("median")
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _at(points: Any, concurrency: int, field: str) -> float | None:
    for p in points or []:
        if isinstance(p, Mapping) and p.get("concurrency") == concurrency:
            return _median(p.get(field))
    return None


def derive_curve_metrics(section: dict[str, Any]) -> None:
    """Fill stable gateway keys a bench did not report from its curves at concurrency 64."""
    curves = section.get("curves")
    if not isinstance(curves, Mapping):
        return
    metrics = section.setdefault("metrics", {})
    gw_rps, gw_p99 = _at(curves.get("gateway"), 64, "rps"), _at(curves.get("gateway"), 64, "p99_ms")
    base_rps, base_p99 = _at(curves.get("baseline"), 64, "rps"), _at(curves.get("baseline"), 64, "p99_ms")
    tr_rps = _at(curves.get("triton"), 64, "rps")
    derived = {
        "gateway_p99_ms_c64": gw_p99,
        "baseline_p99_ms_c64": base_p99,
        "gateway_vs_baseline_rps_ratio_c64": gw_rps / base_rps if gw_rps and base_rps else None,
        "gateway_vs_triton_rps_ratio_c64": gw_rps / tr_rps if gw_rps and tr_rps else None,
    }
    for k, v in derived.items():
        if metrics.get(k) is None and v is not None:
            metrics[k] = v


# ---- the locust section (ours) -------------------------------------------------------------


def run_locust_bench(world: Any, *, repeats: int, quick: bool) -> dict[str, Any]:
    """``treeserve loadtest`` against the world's gateway, realistic mix, repeated."""
    from loadtest.runner import run_loadtest

    world.start_gateway()
    duration = 8 if quick else LOCUST_DURATION_S
    # Warm-up (discarded): connection pools, the coalescer, Triton's first batches.
    run_loadtest(world.settings, target="gateway", users=LOCUST_USERS, spawn_rate=LOCUST_USERS, duration=3)
    runs = []
    for _ in range(max(1, repeats)):
        runs.append(
            run_loadtest(
                world.settings,
                target="gateway",
                users=LOCUST_USERS,
                spawn_rate=LOCUST_USERS,
                duration=duration,
            )
        )
    rows: list[dict[str, Any]] = []
    names = sorted({e.name for r in runs for e in r.summary.endpoints})
    for name in [*names, "Aggregated"]:
        per = [
            next((e for e in [*r.summary.endpoints, r.summary.total] if e.name == name), None) for r in runs
        ]
        got = [e for e in per if e is not None]
        rows.append(
            {
                "request": name,
                "requests (all runs)": sum(e.requests for e in got),
                "failures": sum(e.failures for e in got),
                "req/s": median_min_max(e.rps for e in got),
                "p50 ms": median_min_max(e.p50_ms for e in got),
                "p95 ms": median_min_max(e.p95_ms for e in got),
                "p99 ms": median_min_max(e.p99_ms for e in got),
            }
        )
    mix = world.settings.loadtest.mix
    return {
        "title": "Locust against the gateway (realistic mix)",
        "command": (
            f"treeserve loadtest --target gateway --users {LOCUST_USERS} --spawn-rate {LOCUST_USERS} --duration {duration}s"
        ),
        "description": (
            f"Mix: {mix.single:g}% single known entity, {mix.batch:g}% batches of {mix.batch_min}-{mix.batch_max}, "
            f"{mix.unknown:g}% unknown (cold-start) ids, {mix.raw:g}% raw-feature requests; closed loop, "
            f"{LOCUST_USERS} users, {len(runs)} run(s) of {duration} s; Locust (gevent, 1 process) shares the 2 cores."
        ),
        "rows": rows,
        "metrics": {
            "locust_gateway_mix_rps_c32": median_min_max(r.summary.rps for r in runs)["median"],
            "locust_gateway_mix_p99_ms_c32": median_min_max(r.summary.p99_ms for r in runs)["median"],
        },
        "notes": [
            "Locust's own JSON totals; p50/p95/p99 from the locustfile's 10 µs histogram. Locust (Python, "
            "gevent) saturates long before the gateway does: read this as the realistic-mix latency at this "
            "load, and the wrk/h2load section above for capacity."
        ],
    }


def run_export(settings: LoadtestConfig, repeats: int) -> dict[str, Any]:
    """The export section (separate throw-away MLflow)."""
    from loadtest.bench_export import run_export_bench

    return run_export_bench(settings, repeats=repeats)


# ---- the verdict ---------------------------------------------------------------------------


def missing_load_generators(only: list[str], which: Callable[[str], str | None] | None = None) -> str:
    """Why the selected benches cannot measure their headline figures ('' when every tool is there)."""
    which = which or shutil.which
    missing = {cmd: pkg for cmd, (bench, pkg) in LOAD_GENERATORS.items() if bench in only and not which(cmd)}
    if not missing:
        return ""
    return (
        f"{', '.join(missing)} not found on PATH; install with "
        f"`apt-get install -y {' '.join(sorted(set(missing.values())))}` (make bench does when run as root)"
    )


def unmeasured_headlines(doc: Mapping[str, Any], only: list[str]) -> list[str]:
    """'key: reason' for every headline figure a selected bench should have produced but did not."""
    reasons = doc.get("not_measured") or {}
    return [
        f"{key}: {reasons.get(key) or 'not reported'}"
        for key in STABLE_KEYS
        if KEY_OWNER.get(key) in only and doc.get(key) is None
    ]


# ---- the suite -----------------------------------------------------------------------------


def write_outputs(
    sections: dict[str, dict[str, Any]], *, out_dir: Path, command: str, wall_time_s: float
) -> dict[str, Any]:
    """Charts under ``docs/bench/``, BENCHMARKS.json and BENCHMARKS.md in ``out_dir``."""
    from loadtest.charts import render_section_charts

    out_dir.mkdir(parents=True, exist_ok=True)
    chart_dir = out_dir / "docs" / "bench"
    charts = render_section_charts(sections, chart_dir)
    links = {n: [str(p.relative_to(out_dir)) for p in ps] for n, ps in charts.items()}
    doc = build_json(
        sections,
        machine=describe_machine(PROJECT_ROOT),
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=command,
        wall_time_s=wall_time_s,
        charts=[link for ls in links.values() for link in ls],
    )
    (out_dir / "BENCHMARKS.json").write_text(dumps(doc))
    (out_dir / "BENCHMARKS.md").write_text(render_markdown(doc, chart_links=links))
    return doc


def run_suite(
    *,
    only: list[str],
    out_dir: Path,
    repeats: int,
    quick: bool,
    n_customers: int,
    keep_world: bool,
    command: str,
) -> dict[str, Any]:
    """Run the selected benchmarks in order and write the reports."""
    started = time.perf_counter()
    sections: dict[str, dict[str, Any]] = {}
    work = Path(tempfile.mkdtemp(prefix="treeserve-bench-"))
    world = None
    world_error = ""
    try:
        if NEEDS_WORLD & set(only):
            from loadtest.bench_world import build_world

            try:
                world = build_world(
                    work / "world", n_customers=n_customers, step=lambda m: log.info("world: %s", m)
                )
                log.info("world ready in %s", world.timings_s)
            except Exception as e:
                log.exception("the bench world could not be built")
                world_error = f"the demo world could not be built: {type(e).__name__}: {e}"[:300]
        for name in [b for b in BENCHES if b in only]:
            available: dict[str, Any] = {
                "repeats": repeats,
                "quick": quick,
                "work_dir": work / name,
                "out_dir": work / name,
            }
            (work / name).mkdir(parents=True, exist_ok=True)
            if name in NEEDS_WORLD:
                if world is None:
                    sections[name] = not_measured(world_error or "no demo world")
                    continue
                available |= {"settings": world.settings, "world": world}
            log.info("bench %s …", name)
            if name == "export":
                fn: Callable[..., Any] | str = run_export
                available["settings"] = world.settings if world else None
            elif name == "locust":
                fn = run_locust_bench
            else:
                fn = resolve_bench(*EXTERNAL[name])
            sections[name] = run_section(name, fn, available)
    finally:
        if world is not None:
            world_timings = dict(world.timings_s)
            world.close()
            sections["setup"] = {
                "title": "Suite set-up (demo world)",
                "status": "ok",
                "description": f"{n_customers} customers, Feast online store {world.settings.feast.online_store}.",
                "rows": [{"step": k, "seconds": v} for k, v in world_timings.items()],
                "metrics": {},
            }
        if not keep_world:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log.info("bench work folder kept: %s", work)
    return write_outputs(
        sections, out_dir=out_dir, command=command, wall_time_s=time.perf_counter() - started
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m loadtest.bench``."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma list out of {','.join(BENCHES)}")
    parser.add_argument("--out-dir", type=Path, default=PROJECT_ROOT, help="where BENCHMARKS.md/.json go")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per figure (median, min–max)")
    parser.add_argument("--quick", action="store_true", help="shorter runs (smoke test of the suite)")
    parser.add_argument("--n-customers", type=int, default=2000)
    parser.add_argument("--keep-world", action="store_true", help="keep the scratch folder for inspection")
    args = parser.parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in only if b not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    if reason := missing_load_generators(only):
        print(f"error: make bench cannot measure its headline figures: {reason}", file=sys.stderr)
        return 1
    setup_logging("INFO")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in the log
    command = (
        "make bench"
        if argv is None and len(sys.argv) <= 1
        else "python -m loadtest.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    )
    doc = run_suite(
        only=only,
        out_dir=args.out_dir,
        repeats=args.repeats,
        quick=args.quick,
        n_customers=args.n_customers,
        keep_world=args.keep_world,
        command=command,
    )
    width = max(len(k) for k in STABLE_KEYS)
    for key in STABLE_KEYS:
        print(f"{key:<{width}}  {doc.get(key) if doc.get(key) is not None else 'not measured'}")
    print(f"wrote {args.out_dir / 'BENCHMARKS.md'} and BENCHMARKS.json")
    if failed := unmeasured_headlines(doc, only):
        print(f"error: {len(failed)} headline figure(s) not measured:", file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
