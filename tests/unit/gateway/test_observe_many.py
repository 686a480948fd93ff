"""Batched histogram observations expose exactly what one observe per value exposes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from gateway.metrics import observe_many

BUCKETS = (0.1, 0.5, 1.0, 2.5, 10.0)


def _samples(h: Histogram) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in h.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize("n", [0, 3, 8, 200])
def test_observe_many_exposes_what_observe_per_value_exposes(n: int) -> None:
    rng = np.random.default_rng(n)
    amounts = rng.uniform(-1.0, 12.0, n)
    if n >= 8:  # values on the bounds (le is inclusive), beyond the last bound, and NaN (not observed)
        amounts[:7] = [0.1, 0.5, 1.0, 2.5, 10.0, math.inf, math.nan]
    one, many = (Histogram("h", "h", ["m"], buckets=BUCKETS, registry=CollectorRegistry()) for _ in range(2))
    child = one.labels("x")
    for a in amounts.tolist():
        if a == a:
            child.observe(a)
    observe_many(many.labels("x"), amounts)
    want, got = _samples(one), _samples(many)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
