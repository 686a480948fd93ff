"""The request mix: kinds per transport, payload shapes, entity files."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pandas as pd
import pytest

from loadtest.errors import LoadtestConfigError
from loadtest.workload import (
    UNKNOWN_PREFIX,
    Workload,
    draw_kind,
    effective_weights,
    gateway_payload,
    load_entity_ids,
    load_feature_rows,
    triton_rows,
)

FEATURES = ["a", "b", "c"]


def _workload(**kw: object) -> Workload:
    base: dict[str, object] = {
        "model": "churn-prediction",
        "entity_key": "customer_id",
        "known_ids": [f"cust-{i:06d}" for i in range(50)],
        "feature_names": FEATURES,
        "feature_rows": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
        "batch_min": 10,
        "batch_max": 100,
    }
    base.update(kw)
    return Workload(**base)  # type: ignore[arg-type]


def test_each_transport_sends_only_what_it_can() -> None:
    wl = _workload()
    assert set(effective_weights(wl, transport="http")) == {"single", "batch", "unknown", "raw"}
    assert set(effective_weights(wl, transport="grpc-entities")) == {"single", "batch", "unknown"}
    assert set(effective_weights(wl, transport="features")) == {"single", "batch", "unknown"}
    assert set(effective_weights(_workload(feature_rows=[]), transport="http")) == {
        "single",
        "batch",
        "unknown",
    }
    with pytest.raises(LoadtestConfigError, match="empty"):
        effective_weights(_workload(weights={"raw": 1}), transport="grpc-entities")


def test_the_mix_follows_the_weights() -> None:
    rng = random.Random(1)
    weights = effective_weights(_workload(), transport="http")
    kinds = [draw_kind(rng, weights) for _ in range(5000)]
    assert 0.75 < kinds.count("single") / len(kinds) < 0.85
    assert all(kinds.count(k) > 0 for k in ("batch", "unknown", "raw"))


def test_gateway_payloads() -> None:
    rng = random.Random(2)
    wl = _workload()
    body, n = gateway_payload(rng, wl, "single")
    assert n == 1 and body["entities"][0]["customer_id"] in wl.known_ids
    body, n = gateway_payload(rng, wl, "batch")
    assert 10 <= n <= 100 and len(body["entities"]) == n
    body, n = gateway_payload(rng, wl, "unknown")
    assert body["entities"][0]["customer_id"].startswith(UNKNOWN_PREFIX)
    assert body["entities"][0]["customer_id"] not in wl.known_ids
    body, n = gateway_payload(rng, wl, "raw")
    assert n == 1 and set(body["instances"][0]) == set(FEATURES)


def test_batches_never_exceed_what_the_server_accepts() -> None:
    rng = random.Random(3)
    wl = _workload(max_batch=16)
    assert all(gateway_payload(rng, wl, "batch")[1] <= 16 for _ in range(200))


def test_triton_rows() -> None:
    rng = random.Random(4)
    wl = _workload()
    assert len(triton_rows(rng, wl, "single")) == 1
    unknown = triton_rows(rng, wl, "unknown")
    assert len(unknown[0]) == 3 and all(math.isnan(v) for v in unknown[0])


def test_workload_round_trips_through_json(tmp_path: Path) -> None:
    wl = _workload(model_version="3")
    assert Workload.load(wl.save(tmp_path / "w.json")) == wl


def test_entity_ids_from_parquet_and_text(tmp_path: Path) -> None:
    pq = tmp_path / "customers.parquet"
    pd.DataFrame({"customer_id": [f"cust-{i:06d}" for i in range(100)], "x": range(100)}).to_parquet(pq)
    ids = load_entity_ids(pq, "customer_id", limit=10, seed=1)
    assert len(ids) == 10 and all(i.startswith("cust-") for i in ids)
    txt = tmp_path / "ids.txt"
    txt.write_text("customer_id\ncust-1\n\n# comment\ncust-2,extra\n")
    assert load_entity_ids(txt, "customer_id", limit=10, seed=1) == ["cust-1", "cust-2"]


def test_bad_entity_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(LoadtestConfigError, match="does not exist"):
        load_entity_ids(tmp_path / "nope.parquet", "customer_id", limit=10, seed=1)
    pq = tmp_path / "c.parquet"
    pd.DataFrame({"id": ["a"]}).to_parquet(pq)
    with pytest.raises(LoadtestConfigError, match="no column 'customer_id'"):
        load_entity_ids(pq, "customer_id", limit=10, seed=1)


def test_feature_rows_skip_incomplete_rows(tmp_path: Path) -> None:
    pq = tmp_path / "stats.parquet"
    pd.DataFrame(
        {"a": [1.0, None, 3.0], "b": [1.0, 2.0, 3.0], "c": [0, 0, 0], "other": ["x", "y", "z"]}
    ).to_parquet(pq)
    rows = load_feature_rows(pq, FEATURES, limit=10, seed=1)
    assert sorted(rows) == [[1.0, 1.0, 0.0], [3.0, 3.0, 0.0]]
    assert load_feature_rows(pq, ["missing"], limit=10, seed=1) == []
