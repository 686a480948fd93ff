"""Shape the dicts the bench functions return into report sections (rows, curves, title, command).

The bench functions (gateway, Triton, promotion) return their figures in their own layout; a
section needs ``rows`` for its table and, for throughput/latency benches, ``curves`` for the
chart. An adapter adds what is missing and never changes a figure. Unknown layouts fall back to
a flat "figure | value" table of every scalar they hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from loadtest.bench_report import fmt

Adapter = Callable[[dict[str, Any]], dict[str, Any]]


def flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``[("http.gateway.64.rps", 4100.0), ...]``: every scalar leaf with its dotted path."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if "median" in v:
                out.append((path, v))
            else:
                out += flatten(v, path + ".")
        elif isinstance(v, int | float | str | bool) or v is None:
            out.append((path, v))
    return out


_FIGURE = re.compile(r"(_c\d+$|_ratio(_|$))")
"""Top-level keys worth quoting under the gateway table: per-concurrency figures and ratios."""
_RESERVED = {"title", "command", "description", "rows", "curves", "notes", "metrics", "status", "reason"}


def generic(raw: dict[str, Any]) -> dict[str, Any]:
    """Rows = every scalar figure the bench returned (when it gave no rows of its own)."""
    out = dict(raw)
    if not out.get("rows"):
        rest = {k: v for k, v in raw.items() if k not in _RESERVED}
        out["rows"] = [{"figure": k, "value": v} for k, v in flatten(rest)]
    return out


def _by_concurrency(series: Mapping[str, Any] | None) -> list[tuple[int, Mapping[str, Any]]]:
    items = []
    for c, point in (series or {}).items():
        try:
            items.append((int(c), point))
        except (TypeError, ValueError):
            continue
    return sorted(items)


def gateway(raw: dict[str, Any]) -> dict[str, Any]:
    """``run_gateway_bench``: http/grpc × server × concurrency → rows and curves."""
    out = dict(raw)
    http = raw.get("http") or {}
    grpc = raw.get("grpc") or {}
    series = {
        "gateway (HTTP, wrk)": ("HTTP", "wrk", http.get("gateway")),
        "baseline (HTTP, wrk)": ("HTTP", "wrk", http.get("baseline")),
        "Triton alone (gRPC, h2load)": ("gRPC", "h2load", grpc.get("triton")),
        "gateway (gRPC, h2load)": ("gRPC", "h2load", grpc.get("gateway")),
    }
    if not out.get("rows"):
        rows = []
        for name, (transport, tool, points) in series.items():
            for c, p in _by_concurrency(points):
                rows.append(
                    {
                        "server": name.split(" (")[0],
                        "transport": transport,
                        "load generator": tool,
                        "concurrency": c,
                        "req/s": p.get("rps"),
                        "p50 ms": p.get("p50_ms"),
                        "p99 ms": p.get("p99_ms"),
                        "mean ms": p.get("mean_ms"),
                        "errors": (p.get("non_2xx") or 0)
                        + (p.get("socket_errors") or 0)
                        + (p.get("failed") or 0),
                    }
                )
        for server, p in (raw.get("grpc_latency_c1") or {}).items():
            rows.append(
                {
                    "server": "Triton alone" if server == "triton" else server,
                    "transport": "gRPC",
                    "load generator": "grpc.aio client",
                    "concurrency": p.get("concurrency", 1),
                    "req/s": p.get("rps"),
                    "p50 ms": p.get("p50_ms"),
                    "p99 ms": p.get("p99_ms"),
                    "mean ms": p.get("mean_ms"),
                    "errors": p.get("failed") or 0,
                }
            )
        feats = raw.get("feature_reads_entities_per_s") or {}
        for k, v in feats.items():
            rows.append(
                {"server": f"feature reads: {k}", "transport": "in process", "concurrency": 64, "req/s": v}
            )
        out["rows"] = rows
    if not out.get("curves"):
        out["curves"] = {
            name: [
                {"concurrency": c, "rps": p.get("rps"), "p99_ms": p.get("p99_ms")}
                for c, p in _by_concurrency(points)
            ]
            for name, (_, _, points) in series.items()
            if points
        }
    out.setdefault("title", "Gateway vs the per-request FastAPI baseline vs Triton alone")
    out.setdefault(
        "command", "python -m loadtest.bench --only gateway  # or: python -m loadtest.bench_gateway"
    )
    notes = list(out.get("notes") or [])
    notes.append(
        f"gateway workers {raw.get('gateway_workers')}, baseline workers {raw.get('baseline_workers')} "
        f"(OMP_NUM_THREADS=1), online store {raw.get('online_store')}, {raw.get('duration_s')} s per point "
        f"after a {raw.get('warmup_s')} s warm-up; h2load reports no percentiles: the gRPC percentiles "
        "at concurrency 1 come from a small grpc.aio client run against both servers."
    )
    spreads = [
        f"`{k}` {fmt(raw[k])} (rounds {fmt(raw.get(k + '_min'))}–{fmt(raw.get(k + '_max'))})"
        for k in raw
        if raw.get(k) is not None and k + "_min" in raw and k + "_max" in raw
    ]
    if spreads:
        notes.append(
            f"Gateway vs Triton alone: {raw.get('rounds')} interleaved rounds per figure (Triton, gateway "
            f"gRPC, gateway HTTP (calling Triton over {raw.get('gateway_triton_protocol', 'HTTP')}), and the "
            "same for a second gateway calling Triton over gRPC, in turn; "
            "Triton and both gateways at concurrency 1), each figure the median "
            "of its per-round values: " + ", ".join(spreads) + "."
        )
    figures = [
        f"`{k}` {fmt(v)}"
        for k, v in raw.items()
        if k not in _RESERVED
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and _FIGURE.search(k)
        and not k.endswith(("_min", "_max"))
    ]
    if figures:
        notes.append("Figures: " + ", ".join(figures) + ".")
    out["notes"] = notes
    return out


ADAPTERS: dict[str, Adapter] = {"gateway": gateway}


def adapt(name: str, raw: Any) -> Any:
    """Apply the section's adapter (or the generic one) to a bench result dict."""
    if not isinstance(raw, dict) or raw.get("status") == "not measured":
        return raw
    return generic(ADAPTERS.get(name, lambda r: r)(raw))
