"""Prometheus metrics of the gateway (all names start with ``treeserve_gateway_``).

Dashboards and alerts are built from the names below; renaming one is a breaking change.

Labels:
    transport   ``http`` | ``grpc``
    endpoint    the route template (``/v1/models/{model}/predict``) or the gRPC method (``ModelInfer``)
    status      HTTP status code as a string (gRPC: the HTTP status our error maps to)
    model       registered model name
    version     model version (registry version = Triton version); ``""`` when not resolved
    route       ``champion`` | ``challenger`` | ``shadow``
    stage       ``features`` | ``triton`` (coalesced batches)
    feature     feature name
    reason      short machine-readable cause (``unavailable``, ``timeout``, ``missing_features`` …)

With several uvicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` (``treeserve gateway`` does it)
and ``/metrics`` aggregates all workers.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)

PREFIX = "treeserve_gateway_"

_LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_SCORE_BUCKETS = tuple(round(i / 20, 2) for i in range(1, 21))

# ---- requests ---------------------------------------------------------------------------
REQUESTS = Counter(
    PREFIX + "requests_total",
    "Requests handled, by transport, endpoint, status, model and version.",
    ["transport", "endpoint", "status", "model", "version"],
)
REQUEST_DURATION = Histogram(
    PREFIX + "request_duration_seconds",
    "End-to-end request latency inside the gateway.",
    ["transport", "endpoint", "status", "model", "version"],
    buckets=_LATENCY_BUCKETS_S,
)
IN_FLIGHT = Gauge(
    PREFIX + "in_flight_requests",
    "Prediction requests being processed.",
    multiprocess_mode="livesum",
)
PREDICTIONS = Counter(
    PREFIX + "predictions_total",
    "Rows scored (one per entity or instance), by model, version and route.",
    ["model", "version", "route"],
)
ENTITIES_PER_REQUEST = Histogram(
    PREFIX + "entities_per_request",
    "Entities or instances in one prediction request.",
    ["model"],
    buckets=_BATCH_BUCKETS,
)

# ---- stages -----------------------------------------------------------------------------
FEATURE_FETCH_DURATION = Histogram(
    PREFIX + "feature_fetch_duration_seconds",
    "One online-store read (a coalesced batch of entities).",
    ["store"],
    buckets=_LATENCY_BUCKETS_S,
)
FEATURE_FETCH_ERRORS = Counter(
    PREFIX + "feature_fetch_errors_total",
    "Online-store reads that failed.",
    ["store", "reason"],
)
TRITON_DURATION = Histogram(
    PREFIX + "triton_duration_seconds",
    "One Triton inference call (a coalesced batch), retries included.",
    ["model", "version"],
    buckets=_LATENCY_BUCKETS_S,
)
TRITON_ERRORS = Counter(
    PREFIX + "triton_errors_total",
    "Triton calls that failed after retries, by reason (unavailable, timeout, circuit_open, error).",
    ["model", "version", "reason"],
)
TRITON_RETRIES = Counter(
    PREFIX + "triton_retries_total",
    "Triton calls retried after UNAVAILABLE.",
    ["model", "version"],
)
CIRCUIT_STATE = Gauge(
    PREFIX + "circuit_state",
    "Circuit breaker towards Triton: 0 closed, 1 half-open, 2 open.",
    ["target"],
    multiprocess_mode="max",
)
COALESCE_WAIT = Histogram(
    PREFIX + "coalesce_wait_seconds",
    "Time a request waited in a coalescing queue before its batch was sent.",
    ["stage"],
    buckets=_LATENCY_BUCKETS_S,
)
COALESCED_BATCH_SIZE = Histogram(
    PREFIX + "coalesced_batch_size",
    "Rows in one coalesced online read or Triton call.",
    ["stage"],
    buckets=_BATCH_BUCKETS,
)
COALESCED_REQUESTS = Histogram(
    PREFIX + "coalesced_requests",
    "Requests merged into one online read or Triton call.",
    ["stage"],
    buckets=_BATCH_BUCKETS,
)

# ---- data quality -----------------------------------------------------------------------
_AGE_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 2700, 3600, 7200, 21600, 86400, 604800)
FEATURE_AGE = Histogram(
    PREFIX + "feature_age_seconds",
    "Age of the online feature values read for a prediction (now - their event timestamp), per "
    "FeatureView; values older than the view's TTL were treated as missing.",
    ["view"],
    buckets=_AGE_BUCKETS_S,
)
FEATURE_PUSH_ROWS = Counter(
    PREFIX + "feature_push_rows_total",
    "Rows written online and offline through POST /v1/features/push, per Feast PushSource.",
    ["push_source"],
)
FEATURE_PUSH_REJECTED = Counter(
    PREFIX + "feature_push_rejected_total",
    "Pushes refused because their rows do not match the PushSource's schema (422/404).",
)
MISSING_FEATURES = Counter(
    PREFIX + "missing_features_total",
    "Feature values missing (null in the store or the request), per feature.",
    ["model", "feature"],
)
IMPUTATIONS = Counter(
    PREFIX + "imputations_total",
    "Missing feature values replaced by the version's training median, per feature.",
    ["model", "feature"],
)
FALLBACKS = Counter(
    PREFIX + "fallbacks_total",
    "Rows answered with the base rate instead of a model score, by reason.",
    ["model", "reason"],
)
SCORE = Histogram(
    PREFIX + "score",
    "Scores returned (classifier: positive-class probability).",
    ["model", "version"],
    buckets=_SCORE_BUCKETS,
)

# ---- model state ------------------------------------------------------------------------
SKEW_GUARD_REJECTIONS = Counter(
    PREFIX + "skew_guard_rejections_total",
    "Versions refused because their feature list differs from the FeatureService.",
    ["model", "version"],
)
VERSION_SERVABLE = Gauge(
    PREFIX + "version_servable",
    "1 when a routed version passes the skew guard, 0 when it is refused.",
    ["model", "version", "alias"],
    multiprocess_mode="max",
)
ROUTING_CHANGES = Counter(
    PREFIX + "routing_changes_total",
    "Routing (alias -> version) changes observed in the model repository.",
    ["model"],
)
ROUTING_GENERATION = Gauge(
    PREFIX + "routing_generation",
    "Generation of the routing this gateway serves: a counter the sync raises with every routing "
    "change (configs written before the counter: Unix time of their write). Gateways showing "
    "different values answer with different versions.",
    ["model"],
    multiprocess_mode="min",
)
READY = Gauge(
    PREFIX + "ready",
    "1 when /readyz is OK (Triton, model version, online store, contract).",
    multiprocess_mode="min",
)

# ---- prediction log ---------------------------------------------------------------------
PREDLOG_QUEUE_DEPTH = Gauge(
    PREFIX + "predlog_queue_depth",
    "Prediction-log records waiting to be written.",
    multiprocess_mode="livesum",
)
PREDLOG_ENQUEUE_WAIT = Histogram(
    PREFIX + "predlog_enqueue_wait_seconds",
    "Time spent putting records on the prediction-log queue (non-zero only when it is full and the policy is block).",
    buckets=_LATENCY_BUCKETS_S,
)
PREDLOG_DROPPED = Counter(
    PREFIX + "predlog_dropped_total",
    "Prediction-log rows refused (answered 503) because the queue was full (policy drop).",
)
PREDLOG_ROWS_WRITTEN = Counter(
    PREFIX + "predlog_rows_written_total",
    "Prediction-log rows converted from the write-ahead log to Parquet.",
)
PREDLOG_SEGMENTS_WRITTEN = Counter(
    PREFIX + "predlog_segments_written_total",
    "Prediction-log Parquet segments closed.",
)
PREDLOG_WRITE_ERRORS = Counter(
    PREFIX + "predlog_write_errors_total",
    "Prediction-log writes that failed (their requests were answered 503) or conversions to retry.",
)
PREDLOG_WRITABLE = Gauge(
    PREFIX + "predlog_writable",
    "1 when the prediction log can be written; 0 while requests are refused for lack of a record.",
    multiprocess_mode="min",
)

ALL_METRIC_NAMES: tuple[str, ...] = tuple(
    sorted(
        m._name  # type: ignore[attr-defined]
        for m in (
            REQUESTS,
            REQUEST_DURATION,
            IN_FLIGHT,
            PREDICTIONS,
            ENTITIES_PER_REQUEST,
            FEATURE_FETCH_DURATION,
            FEATURE_FETCH_ERRORS,
            FEATURE_AGE,
            FEATURE_PUSH_ROWS,
            FEATURE_PUSH_REJECTED,
            TRITON_DURATION,
            TRITON_ERRORS,
            TRITON_RETRIES,
            CIRCUIT_STATE,
            COALESCE_WAIT,
            COALESCED_BATCH_SIZE,
            COALESCED_REQUESTS,
            MISSING_FEATURES,
            IMPUTATIONS,
            FALLBACKS,
            SCORE,
            SKEW_GUARD_REJECTIONS,
            VERSION_SERVABLE,
            ROUTING_CHANGES,
            ROUTING_GENERATION,
            READY,
            PREDLOG_QUEUE_DEPTH,
            PREDLOG_ENQUEUE_WAIT,
            PREDLOG_DROPPED,
            PREDLOG_ROWS_WRITTEN,
            PREDLOG_SEGMENTS_WRITTEN,
            PREDLOG_WRITE_ERRORS,
            PREDLOG_WRITABLE,
        )
    )
)
"""Every metric family this module defines (counters without the ``_total`` suffix)."""


_MANY = 12
"""From this many values on, ``observe_many`` counts buckets with numpy instead of observing each
(measured, 12 buckets: 8 values 5.1 µs one by one vs 6.5 µs with numpy; 64 values 39 vs 8 µs)."""


def observe_many(hist: Any, amounts: np.ndarray) -> None:
    """``hist.observe(a)`` for every ``a`` of ``amounts`` but NaN (nothing observed), with the same
    buckets, count and sum: the sum added once and one ``inc`` per bucket touched instead of a
    bucket scan per value (a per-row histogram, e.g. scores, costs ~1 µs per row otherwise).

    ``hist`` is a labelled child of a ``prometheus_client`` Histogram (its ``_upper_bounds``,
    ``_buckets`` and ``_sum``, the layout ``observe`` itself uses); anything else is observed value
    by value.
    """
    bounds = getattr(hist, "_upper_bounds", None)
    buckets = getattr(hist, "_buckets", None)
    total = getattr(hist, "_sum", None)
    if len(amounts) < _MANY or bounds is None or buckets is None or total is None:
        for a in amounts.tolist():
            if a == a:
                hist.observe(a)
        return
    x = amounts[~np.isnan(amounts)]
    if not len(x):
        return
    total.inc(float(x.sum()))
    counts = np.bincount(np.searchsorted(bounds, x, side="left"), minlength=len(bounds))  # amount <= bound
    for i in np.flatnonzero(counts).tolist():
        buckets[i].inc(int(counts[i]))


def _multiprocess_dir() -> str | None:
    """The shared directory when values live in mmap files (decided when prometheus_client loaded).

    Feast sets ``PROMETHEUS_MULTIPROC_DIR`` when it is imported, so the environment alone does not
    say which mode this process' metrics use: the value class does.
    """
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("PROMETHEUS_MULTIPROCESS_DIR")


def render() -> tuple[bytes, str]:
    """The Prometheus exposition of this process (or of all workers in multiprocess mode)."""
    directory = _multiprocess_dir()
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
