"""Streaming features: push -> online + offline -> the next prediction, TTL, ages, CLI.

Real Feast (SQLite and Redis online stores, DuckDB offline store), real Triton, the real gateway
process. Each store gets its own copy of the demo world's data, so the pushes (which append to the
activity source's Parquet file) never reach the session's shared world.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from gateway.server import GatewayProcess
from tests.fixtures.feast_data import REDIS_CONNECTION, own_data_world, sdk_features, teardown_feast
from tests.integration.test_gateway import expected_scores

pytestmark = pytest.mark.integration

KEY = "push-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}
REALTIME = ["session_count_last_1h", "cart_value_usd", "last_page_viewed"]
PAGES = ("home", "search", "product", "cart", "checkout", "account", "help", "cancel_subscription")


@pytest.fixture(scope="module")
def sqlite_stream(
    demo_world: Any, gateway_stack: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, GatewayProcess]]:
    world = own_data_world(demo_world, tmp_path_factory.mktemp("stream-sqlite"))
    gw = gateway_stack.start_gateway(world, name="stream-sqlite", api_keys=[KEY])
    yield world, gw
    gw.stop()


@pytest.fixture(scope="module")
def redis_stream(
    demo_world: Any, gateway_stack: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, GatewayProcess]]:
    world = own_data_world(
        demo_world,
        tmp_path_factory.mktemp("stream-redis"),
        online_store="redis",
        redis_connection_string=REDIS_CONNECTION,
    )
    gw = gateway_stack.start_gateway(world, name="stream-redis", api_keys=[KEY])
    try:
        yield world, gw
    finally:
        gw.stop()
        teardown_feast(world.settings)


@pytest.fixture(params=["sqlite", "redis"])
def stream_case(request: pytest.FixtureRequest) -> tuple[Any, GatewayProcess]:
    return request.getfixturevalue(f"{request.param}_stream")  # type: ignore[no-any-return]


def _predict(gw: GatewayProcess, ids: list[str]) -> list[dict[str, Any]]:
    r = httpx.post(
        f"{gw.url}/v1/models/churn-prediction/predict",
        json={"entities": [{"customer_id": i} for i in ids]},
        headers=AUTH,
        timeout=10.0,
    )
    assert r.status_code == 200, r.text
    return r.json()["predictions"]  # type: ignore[no-any-return]


def _push(gw: GatewayProcess, rows: list[dict[str, Any]], **kw: Any) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/features/push", json={"rows": rows, **kw}, headers=AUTH, timeout=30.0)


def _now(delta_s: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).isoformat()


def test_a_push_is_what_the_next_prediction_reads(
    stream_case: tuple[Any, GatewayProcess], gateway_stack: Any
) -> None:
    world, gw = stream_case
    ids = random.Random(3).sample(world.customer_ids(10_000), 3)
    before = _predict(gw, ids)
    for p in before:  # the world's activity is hours old: past the 1 h TTL, imputed and flagged
        assert p["imputed"] and set(REALTIME) <= set(p["imputed_features"])

    rows = [
        {
            "customer_id": ids[0],
            "event_timestamp": _now(),
            "session_count_last_1h": 1,
            "cart_value_usd": 0.0,
            "last_page_viewed": "cancel_subscription",
        },
        {
            "customer_id": ids[1],
            "event_timestamp": _now(),
            "session_count_last_1h": 4,
            "cart_value_usd": 120.5,
            "last_page_viewed": "checkout",
        },
    ]
    r = _push(gw, rows)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "push_source": "customer_activity_push",
        "rows": 2,
        "feature_views": ["customer_realtime"],
        "to": "online_and_offline",
    }

    after = _predict(gw, ids)
    x = sdk_features(world, ids)
    j = [world.features.index(f) for f in REALTIME]
    np.testing.assert_array_equal(x[0, j], [1.0, 0.0, float(PAGES.index("cancel_subscription"))])
    np.testing.assert_array_equal(x[1, j], [4.0, 120.5, float(PAGES.index("checkout"))])
    assert np.isnan(x[2, j]).all()
    want, _, _ = expected_scores(gateway_stack, world, x)
    np.testing.assert_allclose([p["score"] for p in after], want, atol=1e-5)
    for p in after[:2]:
        assert not set(REALTIME) & set(p["imputed_features"])
    assert after[0]["score"] != pytest.approx(before[0]["score"], abs=1e-4)
    assert after[2]["score"] == pytest.approx(before[2]["score"], abs=1e-7)

    # offline too: the activity source (what training joins) holds the pushed rows
    offline = pd.read_parquet(world.data_dir / "customer_activity.parquet")
    mine = offline[
        offline["customer_id"].isin(ids[:2]) & (offline["event_timestamp"] > pd.Timestamp(_now(-600)))
    ]
    assert sorted(mine["last_page_viewed"]) == ["cancel_subscription", "checkout"]

    metrics = httpx.get(f"{gw.url}/metrics", timeout=5.0).text
    assert (
        'treeserve_gateway_feature_age_seconds_bucket{le="1800.0",view="customer_realtime"}'
        in metrics.replace('view="customer_realtime",le="1800.0"', 'le="1800.0",view="customer_realtime"')
    )
    assert 'view="customer_stats"' in metrics
    assert 'treeserve_gateway_feature_push_rows_total{push_source="customer_activity_push"}' in metrics


def test_realtime_values_older_than_the_ttl_are_imputed_and_flagged(
    sqlite_stream: tuple[Any, GatewayProcess],
) -> None:
    world, gw = sqlite_stream
    cid = random.Random(11).choice(world.customer_ids(10_000))
    stale = {
        "customer_id": cid,
        "event_timestamp": _now(-2 * 3600),
        "session_count_last_1h": 2,
        "cart_value_usd": 55.0,
        "last_page_viewed": "help",
    }
    assert _push(gw, [stale]).status_code == 200  # accepted and stored: late events are facts too
    (p,) = _predict(gw, [cid])
    assert p["imputed"] and set(REALTIME) <= set(p["imputed_features"])
    assert not p["fallback"]
    assert np.isnan(sdk_features(world, [cid])[0, [world.features.index(f) for f in REALTIME]]).all()
    fresh = {**stale, "event_timestamp": _now(-60)}
    assert _push(gw, [fresh]).status_code == 200
    (p,) = _predict(gw, [cid])
    assert not set(REALTIME) & set(p["imputed_features"])


def test_bad_pushes_are_refused_with_a_message_naming_the_problem(
    sqlite_stream: tuple[Any, GatewayProcess],
) -> None:
    _, gw = sqlite_stream
    row = {
        "customer_id": "cust-000001",
        "event_timestamp": _now(),
        "session_count_last_1h": 1,
        "cart_value_usd": 1.0,
        "last_page_viewed": "home",
    }
    url = f"{gw.url}/v1/features/push"
    assert httpx.post(url, json={"rows": [row]}, timeout=10).status_code == 401
    cases = [
        (
            {"rows": [{**row, "cart_value_usd": "lots"}]},
            422,
            "rows[0].cart_value_usd must be a finite number",
        ),
        (
            {"rows": [{**row, "session_count_last_1h": 1.5}]},
            422,
            "rows[0].session_count_last_1h must be an integer",
        ),
        ({"rows": [{**row, "colour": "red"}]}, 422, "rows[0] has unknown columns ['colour']"),
        (
            {"rows": [{k: v for k, v in row.items() if k != "last_page_viewed"}]},
            422,
            "lacks columns ['last_page_viewed']",
        ),
        (
            {"rows": [{**row, "event_timestamp": "yesterday"}]},
            422,
            "rows[0].event_timestamp must be an ISO 8601",
        ),
        ({"rows": [{**row, "event_timestamp": _now(3600)}]}, 422, "in the future"),
        ({"rows": []}, 422, "1 to 1000 rows"),
        ({"rows": [row], "push_source": "nope"}, 404, "no push source 'nope'"),
        ({"rows": [row], "extra": 1}, 422, "unknown fields ['extra']"),
    ]
    for body, status, message in cases:
        r = httpx.post(url, json=body, headers=AUTH, timeout=10)
        assert r.status_code == status, (body, r.text)
        assert message in r.json()["message"], (message, r.text)
    r = httpx.post(
        url, content=b"{not json", headers={**AUTH, "content-type": "application/json"}, timeout=10
    )
    assert r.status_code == 422 and "not valid JSON" in r.json()["message"]
    big = {"rows": [row] * 1000, "pad": "x" * 1_100_000}
    r = httpx.post(url, json=big, headers=AUTH, timeout=10)
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


@pytest.mark.parametrize("reader", ["direct", "sdk"])
def test_online_reads_equal_the_sdk_over_both_views(
    stream_case: tuple[Any, GatewayProcess], reader: str
) -> None:
    from treeserve.features import DirectFeatureSource, FeastFeatureSource
    from treeserve.features.store import open_feature_store

    world, gw = stream_case
    rng = random.Random(17)
    ids = rng.sample(world.customer_ids(10_000), 120)
    pushed = ids[:40]
    rows = [
        {
            "customer_id": cid,
            "event_timestamp": _now(-rng.randint(0, 1800)),
            "session_count_last_1h": rng.randint(1, 6),
            "cart_value_usd": round(rng.uniform(0, 200), 2) if rng.random() < 0.7 else None,
            "last_page_viewed": rng.choice([*PAGES, "blog", None]),
        }
        for cid in pushed
    ]
    assert _push(gw, rows).status_code == 200
    ids += ["cust-999991", "nobody-here"]
    cls = DirectFeatureSource if reader == "direct" else FeastFeatureSource
    source = cls(open_feature_store(world.settings), store_name=world.settings.feast.online_store)
    want = sdk_features(world, ids)
    got = asyncio.run(source.fetch(world.feature_service, [(i,) for i in ids]))
    np.testing.assert_array_equal(got, want)
    realtime = [world.features.index(f) for f in REALTIME]
    assert not np.isnan(got[:40, realtime[0]]).any() and np.isnan(got[40:, realtime[0]]).all()
    asyncio.run(source.aclose())


def _cli(world: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "treeserve_app.cli", *args],
        env=world.subprocess_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_features_push_cli_sends_files_and_stdin(
    sqlite_stream: tuple[Any, GatewayProcess], tmp_path: Path
) -> None:
    world, gw = sqlite_stream
    a, b, c = random.Random(23).sample(world.customer_ids(10_000), 3)
    csv = tmp_path / "rows.csv"
    csv.write_text(
        "customer_id,event_timestamp,session_count_last_1h,cart_value_usd,last_page_viewed\n"
        f"{a},{_now()},2,10.5,cart\n{b},{_now()},1,,search\n"
    )
    r = _cli(
        world, "features", "push", "--from", str(csv), "--url", gw.url, "--api-key", KEY, "--batch-size", "1"
    )
    assert r.returncode == 0, r.stderr
    assert "pushed 2 rows in 2 requests" in r.stdout
    line = json.dumps(
        {
            "customer_id": c,
            "event_timestamp": _now(),
            "session_count_last_1h": 3,
            "cart_value_usd": 0.0,
            "last_page_viewed": "help",
        }
    )
    r = _cli(world, "features", "push", "--from", "-", "--url", gw.url, "--api-key", KEY, stdin=line + "\n")
    assert r.returncode == 0, r.stderr
    x = sdk_features(world, [a, b, c])
    j = [world.features.index(f) for f in REALTIME]
    assert x[0, j].tolist() == [2.0, 10.5, float(PAGES.index("cart"))]
    assert x[1, j[0]] == 1.0 and np.isnan(x[1, j[1]])
    assert x[2, j].tolist() == [3.0, 0.0, float(PAGES.index("help"))]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(line.replace('"help"', "7") + "\n")
    r = _cli(world, "features", "push", "--from", str(bad), "--url", gw.url, "--api-key", KEY)
    assert r.returncode == 1
    (line_,) = r.stderr.strip().splitlines()  # one line, no traceback
    assert line_.startswith("error: ") and "rows[0].last_page_viewed must be a string" in line_
    r = _cli(world, "features", "push", "--from", str(tmp_path / "missing.csv"), "--url", gw.url)
    assert r.returncode == 1 and "is not a file" in r.stderr


def test_data_stream_replays_events_that_serve_fresh(sqlite_stream: tuple[Any, GatewayProcess]) -> None:
    world, gw = sqlite_stream
    started = pd.Timestamp.now(tz="UTC")
    r = _cli(
        world,
        "data", "stream", "--rate", "40", "--count", "30", "--duration", "30",
        "--url", gw.url, "--api-key", KEY, "--seed", str(uuid.uuid4().int % 1000),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "sent 30 events" in r.stdout
    offline = pd.read_parquet(world.data_dir / "customer_activity.parquet")
    streamed = offline[offline["event_timestamp"] >= started]
    assert len(streamed) == 30
    ids = sorted(set(streamed["customer_id"]))
    preds = _predict(gw, ids)
    assert all("session_count_last_1h" not in p["imputed_features"] for p in preds)
    r = _cli(world, "data", "stream", "--url", "http://10.1.2.3:8080", "--count", "1")
    assert r.returncode == 1 and "loopback" in r.stderr
