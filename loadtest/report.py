"""Reading a Locust run back: totals from its JSON report, percentiles, SLO verdicts, report paths.

Locust's ``--json-file`` holds the final totals per request name (the CSV misses the last
second). Its latency histogram rounds to whole milliseconds below 100 ms, so the locustfile also
records a 10 µs histogram (``latency_histogram.json``); when present, percentiles come from it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest.errors import LoadtestRunError

STATS_JSON = "stats.json"
FINE_HISTOGRAM_JSON = "latency_histogram.json"
FINE_BUCKET_US = 10
"""Width of one bucket of the fine histogram."""


@dataclass(frozen=True)
class EndpointStats:
    """Totals of one request name (or of all of them: ``Aggregated``)."""

    name: str
    method: str
    requests: int
    failures: int
    rps: float
    avg_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def error_rate(self) -> float:
        """Failures per request (0 when nothing ran)."""
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class LoadtestSummary:
    """What a user reads after a run: the aggregate first, then each request name."""

    total: EndpointStats
    endpoints: list[EndpointStats] = field(default_factory=list)
    duration_s: float = 0.0
    percentile_source: str = "locust"
    """``fine`` (10 µs histogram) or ``locust`` (Locust's rounded histogram)."""

    @property
    def requests(self) -> int:
        return self.total.requests

    @property
    def failures(self) -> int:
        return self.total.failures

    @property
    def rps(self) -> float:
        return self.total.rps

    @property
    def p99_ms(self) -> float:
        return self.total.p99_ms

    @property
    def error_rate(self) -> float:
        return self.total.error_rate

    def headline(self) -> str:
        """One line: ``1234 requests in 10.0 s, 123.4 req/s, p50 1.20 ms, p95 …, p99 …, errors 0.00%``."""
        t = self.total
        return (
            f"{t.requests} requests in {self.duration_s:.1f} s, {t.rps:.1f} req/s, p50 {t.p50_ms:.2f} ms, "
            f"p95 {t.p95_ms:.2f} ms, p99 {t.p99_ms:.2f} ms, errors {t.error_rate:.2%}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (error rates included)."""
        out = asdict(self)
        out["total"]["error_rate"] = self.total.error_rate
        for e, d in zip(self.endpoints, out["endpoints"], strict=True):
            d["error_rate"] = e.error_rate
        return out


# ---- percentiles ---------------------------------------------------------------------------


def percentile(histogram: Mapping[float, int], q: float) -> float:
    """The ``q`` quantile (0..1) of a {value: count} histogram; 0 when empty."""
    total = sum(histogram.values())
    if total <= 0:
        return 0.0
    rank = max(1, math.ceil(q * total - 1e-9))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return float(value)
    return float(max(histogram))


def _locust_histogram(entry: Mapping[str, Any]) -> dict[float, int]:
    return {float(k): int(v) for k, v in (entry.get("response_times") or {}).items()}


def merge_histograms(histograms: Iterable[Mapping[float, int]]) -> dict[float, int]:
    """Sum several {value: count} histograms."""
    out: dict[float, int] = {}
    for h in histograms:
        for k, v in h.items():
            out[k] = out.get(k, 0) + v
    return out


def fine_histogram_ms(buckets: Mapping[str | int, int]) -> dict[float, int]:
    """Convert the locustfile's {bucket index: count} (10 µs buckets) into {ms (bucket middle): count}."""
    return {(int(k) + 0.5) * FINE_BUCKET_US / 1000.0: int(v) for k, v in buckets.items()}


# ---- summary -------------------------------------------------------------------------------


def _endpoint(
    name: str, method: str, entries: Sequence[Mapping[str, Any]], hist: Mapping[float, int]
) -> EndpointStats:
    requests = sum(int(e.get("num_requests") or 0) for e in entries)
    failures = sum(int(e.get("num_failures") or 0) for e in entries)
    total_ms = sum(float(e.get("total_response_time") or 0.0) for e in entries)
    starts = [float(e["start_time"]) for e in entries if e.get("start_time")]
    lasts = [float(e["last_request_timestamp"]) for e in entries if e.get("last_request_timestamp")]
    span = (max(lasts) - min(starts)) if starts and lasts else 0.0
    return EndpointStats(
        name=name,
        method=method,
        requests=requests,
        failures=failures,
        rps=requests / span if span > 0 else 0.0,
        avg_ms=total_ms / requests if requests else 0.0,
        p50_ms=percentile(hist, 0.50),
        p95_ms=percentile(hist, 0.95),
        p99_ms=percentile(hist, 0.99),
        max_ms=max((float(e.get("max_response_time") or 0.0) for e in entries), default=0.0),
    )


def summarize(
    entries: Sequence[Mapping[str, Any]], *, fine_buckets: Mapping[str | int, int] | None = None
) -> LoadtestSummary:
    """Summarise Locust's JSON stats (a list of per-name entries) into totals and percentiles."""
    endpoints = [
        _endpoint(str(e.get("name")), str(e.get("method") or ""), [e], _locust_histogram(e))
        for e in sorted(entries, key=lambda e: (str(e.get("method")), str(e.get("name"))))
    ]
    fine = fine_histogram_ms(fine_buckets) if fine_buckets else {}
    if sum(fine.values()) != sum(int(e.get("num_requests") or 0) for e in entries):
        fine = {}  # a worker's last report went missing: Locust's own totals are the truth
    hist = fine or merge_histograms(_locust_histogram(e) for e in entries)
    total = _endpoint("Aggregated", "", list(entries), hist)
    starts = [float(e["start_time"]) for e in entries if e.get("start_time")]
    lasts = [float(e["last_request_timestamp"]) for e in entries if e.get("last_request_timestamp")]
    return LoadtestSummary(
        total=total,
        endpoints=endpoints,
        duration_s=(max(lasts) - min(starts)) if starts and lasts else 0.0,
        percentile_source="fine" if fine else "locust",
    )


def read_summary(report_dir: Path) -> LoadtestSummary:
    """Summarise the reports Locust left in ``report_dir``."""
    stats_path = report_dir / STATS_JSON
    if not stats_path.exists():
        raise LoadtestRunError(
            f"Locust wrote no {STATS_JSON} in {report_dir} (see {report_dir / 'locust.log'})"
        )
    entries = json.loads(stats_path.read_text())
    fine_path = report_dir / FINE_HISTOGRAM_JSON
    fine = json.loads(fine_path.read_text()).get("buckets") if fine_path.exists() else None
    return summarize(entries, fine_buckets=fine)


# ---- SLOs and paths ------------------------------------------------------------------------


def evaluate_slo(
    summary: LoadtestSummary, *, slo_p99_ms: float | None = None, max_error_rate: float | None = None
) -> list[str]:
    """One message per objective missed (empty: all met).

    Whatever the objectives, a run without requests or where every request failed is a miss: a
    load test that never reached the service proves nothing.
    """
    problems: list[str] = []
    if summary.requests == 0:
        return ["no request completed during the run"]
    if summary.failures == summary.requests:
        return [f"every request failed ({summary.failures}/{summary.requests})"]
    if slo_p99_ms is not None and summary.p99_ms > slo_p99_ms:
        problems.append(f"p99 {summary.p99_ms:.3f} ms > SLO {slo_p99_ms:g} ms")
    if max_error_rate is not None and summary.error_rate > max_error_rate:
        problems.append(
            f"error rate {summary.error_rate:.2%} ({summary.failures}/{summary.requests}) > allowed {max_error_rate:.2%}"
        )
    return problems


def top_failure(report_dir: Path) -> str:
    """The most frequent error in Locust's ``stats_failures.csv`` (empty when there is none)."""
    import csv

    path = report_dir / "stats_failures.csv"
    if not path.exists():
        return ""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return ""
    top = max(rows, key=lambda r: int(r.get("Occurrences") or 0))
    return f"{top.get('Name', '?')}: {top.get('Error', '?')} (×{top.get('Occurrences', '?')})"


def new_report_dir(base: Path, *, now: datetime | None = None) -> Path:
    """A fresh ``<base>/<UTC timestamp>/`` folder (suffixed ``-2``, ``-3`` … if taken)."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = base / stamp
    n = 2
    while candidate.exists():
        candidate = base / f"{stamp}-{n}"
        n += 1
    candidate.mkdir(parents=True)
    return candidate


def format_summary(summary: LoadtestSummary) -> str:
    """A plain-text table: one line per request name plus the aggregate."""
    header = f"{'name':<28} {'reqs':>8} {'fails':>6} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}"
    lines = [header, "-" * len(header)]
    for e in [*summary.endpoints, summary.total]:
        lines.append(
            f"{e.name[:28]:<28} {e.requests:>8} {e.failures:>6} {e.rps:>9.1f} "
            f"{e.p50_ms:>8.2f} {e.p95_ms:>8.2f} {e.p99_ms:>8.2f} {e.error_rate:>7.2%}"
        )
    return "\n".join(lines)
