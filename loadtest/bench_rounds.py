"""Interleaved rounds: figures that compare two servers, measured at the same moments.

On the benchmark machine (2 cores shared by Triton, Redis, the gateway, the load generator and
whatever else runs) a server's throughput moves by up to 2× from one minute to the next. A ratio
of two runs taken a minute apart measures the neighbours as much as the servers: the gateway/Triton
ratio moved by ±40 % between runs of the same code. Here each comparison is a series of short
rounds that take every server in turn (the order rotating from round to round, so none always
runs first); a ratio or a difference is formed within each round, where both sides saw the same
machine, and the figure is the median over the rounds, with min and max as its spread.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Round = dict[str, dict[str, Any]]
"""One round: server name -> what its run returned (``rps``, ``p50_ms``, ``requests``, ...)."""

_SUMMED = ("requests", "failed", "non_2xx", "socket_errors", "cpu_s")
"""Counts (and CPU seconds) add up over rounds; the other figures are medians of the rounds."""


def run_rounds(runs: Mapping[str, Callable[[int], dict[str, Any]]], *, rounds: int) -> list[Round]:
    """Call every run once per round (``run(round_index)``), the order rotating by one each round."""
    names = list(runs)
    out: list[Round] = []
    for r in range(rounds):
        k = r % len(names)
        out.append({name: runs[name](r) for name in names[k:] + names[:k]})
    return out


def ratio(rounds: Sequence[Round], num: str, den: str, field: str = "rps") -> list[float]:
    """``num[field] / den[field]`` of every round where both were measured."""
    out = []
    for rnd in rounds:
        a, b = (rnd.get(num) or {}).get(field), (rnd.get(den) or {}).get(field)
        if a is not None and b:
            out.append(a / b)
    return out


def difference(rounds: Sequence[Round], minuend: str, subtrahend: str, field: str) -> list[float]:
    """``minuend[field] - subtrahend[field]`` of every round where both were measured."""
    out = []
    for rnd in rounds:
        a, b = (rnd.get(minuend) or {}).get(field), (rnd.get(subtrahend) or {}).get(field)
        if a is not None and b is not None:
            out.append(a - b)
    return out


def spread(values: Sequence[float], *, digits: int = 3) -> dict[str, float | None]:
    """Median, min and max of per-round values (None each when no round measured it)."""
    if not values:
        return {"median": None, "min": None, "max": None}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def merged(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One server's rounds as one point: counts and CPU seconds summed, other figures the median."""
    out: dict[str, Any] = {"rounds": len(points)}
    keys = {k for p in points for k, v in p.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    for k in sorted(keys):
        values = [p[k] for p in points if isinstance(p.get(k), int | float)]
        if k in _SUMMED:
            # CPU per request needs both sums over the same rounds: a round without one has neither.
            out[k] = round(sum(values), 3) if len(values) == len(points) else None
        elif k == "concurrency":
            out[k] = values[0]
        else:
            out[k] = round(statistics.median(values), 3)
    return out
