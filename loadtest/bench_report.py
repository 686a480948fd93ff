"""``BENCHMARKS.md`` and ``BENCHMARKS.json`` from the suite's results (pure: dict in, text out).

Each benchmark section is a dict (what the bench functions return, normalised by
:func:`normalise_section`)::

    {"title": str, "command": str,            # exact command that reproduces it
     "metrics": {stable_key: float, ...},     # copied to the top level of BENCHMARKS.json
     "rows": [{column: value, ...}, ...],     # one markdown table; a value may be
                                              # {"median": m, "min": a, "max": b, "n": k}
     "notes": [str, ...],
     "curves": {"gateway": [{"concurrency": 64, "rps": ..., "p99_ms": ...}, ...], ...}}

A section that could not run is ``{"status": "not measured", "reason": "..."}``: the report
says so; no number is ever made up.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from loadtest.machine import machine_line

STABLE_KEYS: tuple[str, ...] = (
    "triton_dynamic_batching_speedup_c32",
    "gateway_vs_baseline_rps_ratio_c64",
    "gateway_vs_triton_rps_ratio_c64",
    "gateway_http_vs_triton_rps_ratio_c64",
    "gateway_added_latency_p50_ms_c1",
    "gateway_cpu_us_per_request_c64",
    "gateway_triton_over_grpc_added_latency_p50_ms_c1",
    "gateway_triton_over_grpc_vs_triton_rps_ratio_c64",
    "gateway_triton_over_grpc_http_vs_triton_rps_ratio_c64",
    "gateway_p99_ms_c64",
    "baseline_p99_ms_c64",
    "feature_coalesced_vs_per_request_ratio",
    "promotion_latency_webhook_s",
    "promotion_latency_poll_s",
    "predlog_durable_rps_ratio_c64",
    "triton_restart_recovery_s",
    "multi_triton_failover_errors",
    "routing_mixed_window_s",
    "explain_p99_ms_c8",
    "predict_rps_ratio_with_explain_installed",
)
KEY_MEANING: dict[str, str] = {
    "triton_dynamic_batching_speedup_c32": "Triton req/s with dynamic batching on / off, concurrency 32",
    "gateway_vs_baseline_rps_ratio_c64": "gateway req/s / tuned FastAPI baseline req/s, concurrency 64 (goal ≥ 4)",
    "gateway_vs_triton_rps_ratio_c64": "gateway gRPC req/s / Triton-alone gRPC req/s, concurrency 64, median of per-round ratios of interleaved rounds (goal ≥ 0.5)",
    "gateway_http_vs_triton_rps_ratio_c64": "gateway HTTP req/s / Triton-alone gRPC req/s, concurrency 64, median of per-round ratios of interleaved rounds (goal ≥ 0.6)",
    "gateway_added_latency_p50_ms_c1": "gateway gRPC p50 − Triton-alone gRPC p50 (ms), concurrency 1, same client, median of per-round differences of interleaved rounds (goal ≤ 1.0)",
    "gateway_cpu_us_per_request_c64": "gateway process CPU µs per answered gRPC request, concurrency 64 (Triton's beside it)",
    "gateway_triton_over_grpc_added_latency_p50_ms_c1": "as gateway_added_latency_p50_ms_c1, a second gateway calling Triton over gRPC (gateway.triton.protocol=grpc), same rounds",
    "gateway_triton_over_grpc_vs_triton_rps_ratio_c64": "as gateway_vs_triton_rps_ratio_c64 (gRPC port), the gateway calling Triton over gRPC, same rounds",
    "gateway_triton_over_grpc_http_vs_triton_rps_ratio_c64": "as gateway_http_vs_triton_rps_ratio_c64 (HTTP port), the gateway calling Triton over gRPC, same rounds",
    "gateway_p99_ms_c64": "gateway p99 latency (ms), concurrency 64 (goal ≤ baseline p99 / 10)",
    "baseline_p99_ms_c64": "baseline p99 latency (ms), concurrency 64",
    "feature_coalesced_vs_per_request_ratio": "feature resolution throughput, coalesced / per request",
    "promotion_latency_webhook_s": "alias moved → new version served, webhook wake-up, version staged ahead (s, goal ≤ 1)",
    "promotion_latency_poll_s": "alias moved → new version served, poll only (s)",
    "predlog_durable_rps_ratio_c64": "gateway req/s with the durable prediction log / log disabled, concurrency 64 (goal ≥ 0.9)",
    "triton_restart_recovery_s": "Triton kill -9 + start → the gateway answers with the routed version again, sync running (s, goal ≤ 5)",
    "multi_triton_failover_errors": "failed requests when 1 of 2 Triton servers is killed under load and restarted, 2 gateways (goal 0)",
    "explain_p99_ms_c8": "explain endpoint p99 latency (ms), 1 entity per request, concurrency 8",
    "predict_rps_ratio_with_explain_installed": "predict req/s with the explainer companion loaded / unloaded, concurrency 64 (goal ≥ 0.95)",
    "routing_mixed_window_s": "promotion under load: first answer with the new version → last with the old one, 2 gateways (s, goal ≤ routing_poll_interval_s = 1)",
}
KEY_OWNER: dict[str, str] = {
    "triton_dynamic_batching_speedup_c32": "triton",
    "gateway_vs_baseline_rps_ratio_c64": "gateway",
    "gateway_vs_triton_rps_ratio_c64": "gateway",
    "gateway_http_vs_triton_rps_ratio_c64": "gateway",
    "gateway_added_latency_p50_ms_c1": "gateway",
    "gateway_cpu_us_per_request_c64": "gateway",
    "gateway_triton_over_grpc_added_latency_p50_ms_c1": "gateway",
    "gateway_triton_over_grpc_vs_triton_rps_ratio_c64": "gateway",
    "gateway_triton_over_grpc_http_vs_triton_rps_ratio_c64": "gateway",
    "gateway_p99_ms_c64": "gateway",
    "baseline_p99_ms_c64": "gateway",
    "feature_coalesced_vs_per_request_ratio": "gateway",
    "promotion_latency_webhook_s": "promotion",
    "promotion_latency_poll_s": "promotion",
    "predlog_durable_rps_ratio_c64": "predlog",
    "triton_restart_recovery_s": "multi_triton",
    "multi_triton_failover_errors": "multi_triton",
    "routing_mixed_window_s": "multi_triton",
    "explain_p99_ms_c8": "explain",
    "predict_rps_ratio_with_explain_installed": "explain",
}
"""The section expected to report each stable key (its reason is quoted when it is missing)."""
SECTION_TITLES: dict[str, str] = {
    "export": "Export time and parity per model type",
    "triton": "Triton dynamic batching on/off",
    "gateway": "Gateway vs the per-request FastAPI baseline vs Triton alone",
    "promotion": "Promotion latency (webhook vs poll)",
    "locust": "Locust against the gateway (realistic mix)",
    "predlog": "Durable prediction log cost",
    "multi_triton": "Several Triton servers: failover, mixed-version window, restart recovery",
    "explain": "Explanations: explain latency and the predict path with the explainer installed",
}
NOT_MEASURED = "not measured"


def median_min_max(values: Iterable[float]) -> dict[str, float | int]:
    """``{"median", "min", "max", "n"}`` of repeated measurements."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("no measurements")
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def not_measured(reason: str) -> dict[str, Any]:
    """A section for a benchmark that did not run."""
    return {"status": NOT_MEASURED, "reason": reason}


def normalise_section(name: str, raw: Any) -> dict[str, Any]:
    """Bring a bench function's result into the section shape (tolerant of extra or missing keys)."""
    if not isinstance(raw, Mapping):
        return not_measured(f"{name} returned {type(raw).__name__}, not a dict")
    section = dict(raw)
    if section.get("status") == NOT_MEASURED:
        return {"status": NOT_MEASURED, "reason": str(section.get("reason") or "no reason given")}
    metrics = dict(section.get("metrics") or {})
    for key in STABLE_KEYS:  # stable keys at the top level count as metrics too
        if key in section and key not in metrics:
            metrics[key] = section[key]
    section["metrics"] = {k: _plain(v) for k, v in metrics.items()}
    section.setdefault("title", name.replace("_", " "))
    section.setdefault("status", "ok")
    return section


def _plain(v: Any) -> Any:
    """A metric as a JSON number (medians of {"median": ...} dicts), None when missing."""
    if isinstance(v, Mapping) and "median" in v:
        v = v["median"]
    if isinstance(v, int | float) and not isinstance(v, bool):
        return None if (isinstance(v, float) and math.isnan(v)) else float(v)
    return v


def stable_metrics(sections: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The stable keys (None when no bench measured one) and, for the missing ones, why."""
    values: dict[str, Any] = dict.fromkeys(STABLE_KEYS)
    for section in sections.values():
        for k, v in (section.get("metrics") or {}).items():
            if v is not None:
                values[k] = v
    reasons: dict[str, str] = {}
    for key in STABLE_KEYS:
        if values[key] is None:
            owner = sections.get(KEY_OWNER[key])
            if owner is None:
                reasons[key] = f"the {KEY_OWNER[key]} benchmark was not run"
            elif owner.get("status") == NOT_MEASURED:
                reasons[key] = f"{KEY_OWNER[key]}: {owner.get('reason')}"
            else:
                reasons[key] = f"the {KEY_OWNER[key]} benchmark did not report it"
    return values, reasons


def build_json(
    sections: Mapping[str, Mapping[str, Any]],
    *,
    machine: Mapping[str, Any],
    generated_at: str,
    command: str,
    wall_time_s: float,
    charts: Sequence[str] = (),
) -> dict[str, Any]:
    """The BENCHMARKS.json document: stable keys at the top, every section below."""
    values, reasons = stable_metrics(sections)
    return {
        **values,
        "machine": dict(machine),
        "generated_at": generated_at,
        "command": command,
        "wall_time_s": round(wall_time_s, 1),
        "not_measured": reasons,
        "charts": list(charts),
        "benchmarks": {n: dict(s) for n, s in sections.items()},
    }


# ---- markdown ------------------------------------------------------------------------------


def fmt(v: Any) -> str:
    """A cell: numbers with 3-4 significant digits, medians as ``m (min–max)``."""
    if v is None:
        return "—"
    if isinstance(v, Mapping) and "median" in v:
        lo, hi = v.get("min"), v.get("max")
        core = fmt(v["median"])
        if lo is not None and hi is not None and (v.get("n", 2) or 0) > 1:
            core += f" ({fmt(lo)}–{fmt(hi)})"
        return core
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}".replace(",", " ") if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1000:
            return f"{v:,.0f}".replace(",", " ")
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 0.01:
            return f"{v:.3g}" if a < 1 else f"{v:.2f}"
        return f"{v:.2e}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table over the union of the rows' keys (first-seen order)."""
    if not rows:
        return ""
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(doc: Mapping[str, Any], *, chart_links: Mapping[str, Sequence[str]] | None = None) -> str:
    """BENCHMARKS.md from the BENCHMARKS.json document."""
    chart_links = chart_links or {}
    out = [
        "# Benchmarks",
        "",
        f"Regenerated by `{doc.get('command')}` on {doc.get('generated_at')} "
        f"(suite wall time {fmt(float(doc.get('wall_time_s') or 0.0))} s). Every server and the load "
        "generator share this one machine, so absolute figures are lower bounds for a dedicated host;"
        " the ratios are what carry over.",
        "",
        f"**Machine:** {machine_line(doc.get('machine') or {})}"
        + (
            f", commit `{doc['machine']['git_commit']}`"
            if (doc.get("machine") or {}).get("git_commit")
            else ""
        ),
        "",
        "## Headline figures (`BENCHMARKS.json`)",
        "",
        "| key | value | meaning |",
        "| --- | --- | --- |",
    ]
    reasons = doc.get("not_measured") or {}
    for key in STABLE_KEYS:
        v = doc.get(key)
        shown = fmt(v) if v is not None else f"{NOT_MEASURED}: {fmt(reasons.get(key, '?'))}"
        out.append(f"| `{key}` | {shown} | {KEY_MEANING[key]} |")
    out.append("")
    for name, section in (doc.get("benchmarks") or {}).items():
        out += ["", f"## {section.get('title') or SECTION_TITLES.get(name, name)}", ""]
        if section.get("status") == NOT_MEASURED:
            out.append(f"_{NOT_MEASURED}: {fmt(section.get('reason'))}_")
            continue
        if section.get("description"):
            out += [str(section["description"]), ""]
        if section.get("command"):
            out += ["Command:", "", "```bash", str(section["command"]), "```", ""]
        table = markdown_table(section.get("rows") or [])
        if table:
            out += [table, ""]
        metrics = section.get("metrics") or {}
        if metrics and not table:
            out += [markdown_table([{"metric": k, "value": v} for k, v in metrics.items()]), ""]
        for note in section.get("notes") or []:
            out.append(f"- {note}")
        for link in chart_links.get(name, []):
            out += ["", f"![{name}]({link})"]
    out.append("")
    return "\n".join(out)


def dumps(doc: Mapping[str, Any]) -> str:
    """BENCHMARKS.json text (sorted top-level keys are not needed: stable keys come first)."""
    return json.dumps(doc, indent=2, default=_json_default) + "\n"


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)
