"""A small async gRPC load generator that reports percentiles, and a process CPU meter.

h2load gives throughput only for gRPC; :func:`grpc_latency` replays one serialized
``ModelInfer`` request from ``concurrency`` asyncio workers over one ``grpc.aio`` channel and
returns req/s with p50/p90/p99 — the same client for Triton alone and for the gateway, so the
difference of their p50 is what the gateway adds.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def percentile(sorted_ms: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100, nearest rank) of ascending ``sorted_ms``."""
    if not sorted_ms:
        raise ValueError("no latencies")
    rank = max(1, math.ceil(q / 100 * len(sorted_ms)))
    return float(sorted_ms[min(rank, len(sorted_ms)) - 1])


def latency_summary(latencies_s: Sequence[float], elapsed_s: float, *, errors: int = 0) -> dict[str, Any]:
    """req/s, p50/p90/p99/mean (ms) and counts of one measured run."""
    ms = sorted(1e3 * x for x in latencies_s)
    out: dict[str, Any] = {"requests": len(ms), "failed": errors}
    out["rps"] = round(len(ms) / elapsed_s, 1) if elapsed_s > 0 else 0.0
    if ms:
        for q in (50, 90, 99):
            out[f"p{q}_ms"] = round(percentile(ms, q), 3)
        out["mean_ms"] = round(sum(ms) / len(ms), 3)
    return out


async def _measure(target: str, message: bytes, concurrency: int, duration_s: float, warmup_s: float) -> Any:
    import grpc

    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)
        latencies: list[float] = []
        errors = 0
        record = False
        stop = time.perf_counter() + warmup_s + duration_s

        async def worker() -> None:
            nonlocal errors
            while (t0 := time.perf_counter()) < stop:
                try:
                    await call(message, timeout=10)
                except grpc.RpcError:
                    errors += record
                    continue
                if record:
                    latencies.append(time.perf_counter() - t0)

        tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, concurrency))]
        await asyncio.sleep(warmup_s)
        record, t_start = True, time.perf_counter()
        await asyncio.gather(*tasks)
        return latency_summary(latencies, time.perf_counter() - t_start, errors=errors)


def grpc_latency(
    target: str, framed_body: bytes, *, concurrency: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    """Replay one gRPC-framed ``ModelInfer`` request (as h2load's ``-d`` file) against ``target``."""
    result = asyncio.run(_measure(target, framed_body[5:], concurrency, duration_s, warmup_s))
    result["concurrency"] = concurrency
    result["load_generator"] = "grpc.aio client"
    return dict(result)


class CpuMeter:
    """CPU seconds a process tree spends between :meth:`start` (maybe after a delay) and :meth:`stop`."""

    def __init__(self, read: Callable[[], float]) -> None:
        self._read = read
        self._start: float | None = None
        self._timer: threading.Timer | None = None

    def start(self, *, after_s: float = 0.0) -> CpuMeter:
        """Start now, or after ``after_s`` (a load generator's warm-up) in a timer thread."""
        if after_s > 0:
            self._timer = threading.Timer(after_s, self._begin)
            self._timer.daemon = True
            self._timer.start()
        else:
            self._begin()
        return self

    def _begin(self) -> None:
        self._start = self._read()

    def stop(self) -> float | None:
        """CPU seconds since the start (None when the start never happened)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()
        return None if self._start is None else self._read() - self._start


def cpu_us_per_request(cpu_s: float | None, requests: int | None) -> float | None:
    """Microseconds of CPU per answered request (None when either is unknown)."""
    if cpu_s is None or not requests:
        return None
    return round(1e6 * cpu_s / requests, 1)
