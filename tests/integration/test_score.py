"""``treeserve score`` against the gateway: the same entities get the same scores; a rerun of a day
replaces its partition (DuckDB and PostgreSQL); the gateway's own prediction log feeds the drift job."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import numpy as np
import pytest

from drift.score_store import DuckDBScoreSink, PostgresScoreSink

pytestmark = pytest.mark.integration
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def gateway(gateway_stack: Any, demo_world: Any) -> Iterator[Any]:
    proc = gateway_stack.start_gateway(demo_world, name="drift-score")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def settings(demo_world: Any, gateway_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("score")
    s = demo_world.settings
    return s.model_copy(
        update={
            "exporter": s.exporter.model_copy(update={"repository": gateway_stack.repository}),
            "drift": s.drift.model_copy(
                update={
                    "reports_dir": root / "reports",
                    "textfile_path": root / "drift.prom",
                    "log_to_mlflow": False,
                }
            ),
        }
    )


def _gateway_scores(url: str, model: str, ids: list[str]) -> tuple[np.ndarray, list[str]]:
    scores, versions = [], []
    for start in range(0, len(ids), 100):
        r = httpx.post(
            f"{url}/v1/models/{model}/predict",
            json={"entities": [{"customer_id": i} for i in ids[start : start + 100]]},
            timeout=30.0,
        )
        assert r.status_code == 200, r.text
        scores += [p["score"] for p in r.json()["predictions"]]
        versions += [r.json()["model_version"]] * len(r.json()["predictions"])
    return np.array(scores), versions


def test_batch_scores_equal_gateway_scores_and_a_rerun_replaces_the_day(
    settings: Any, gateway: Any, demo_world: Any, tmp_path: Any
) -> None:
    from drift.scoring import score_all

    sink = DuckDBScoreSink(tmp_path / "scores.duckdb", "batch_scores")
    day = date(2026, 11, 27)
    first = score_all(settings, score_date=day, sink=sink)
    table = sink.read_partition(demo_world.model_name, day)
    assert first.rows == len(table) == len(demo_world.customer_ids(100_000))
    assert set(table["model_version"]) == {demo_world.version}
    assert sorted(table["score_decile"].unique()) == list(range(1, 11))

    ids = random.Random(3).sample(table["entity"].tolist(), 300)
    online, versions = _gateway_scores(gateway.url, demo_world.model_name, ids)
    batch = table.set_index("entity").loc[ids, "score"].to_numpy()
    np.testing.assert_allclose(batch, online, atol=1e-6)
    assert set(versions) == {demo_world.version}

    score_all(settings, score_date=day, sink=sink)
    again = sink.read_partition(demo_world.model_name, day)
    assert len(again) == first.rows and again["entity"].is_unique
    np.testing.assert_allclose(again.sort_values("entity")["score"], table.sort_values("entity")["score"])


def test_postgres_partition_is_replaced_not_duplicated(settings: Any, demo_world: Any) -> None:
    import psycopg2

    from drift.scoring import score_all

    table = f"scores_{uuid.uuid4().hex[:8]}"
    sink = PostgresScoreSink(PG_DSN, table)
    ids = demo_world.customer_ids(400)
    try:
        for _ in range(2):
            score_all(settings, score_date=date(2026, 11, 27), entities=ids, sink=sink)
        score_all(settings, score_date=date(2026, 11, 28), entities=ids[:100], sink=sink)
        con = psycopg2.connect(PG_DSN)
        with con, con.cursor() as cur:
            cur.execute(
                f"SELECT score_date, count(*), count(DISTINCT entity) FROM {table} GROUP BY 1 ORDER BY 1"
            )
            rows = cur.fetchall()
        con.close()
        assert rows == [(date(2026, 11, 27), 400, 400), (date(2026, 11, 28), 100, 100)]
    finally:
        con = psycopg2.connect(PG_DSN)
        with con, con.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        con.close()


def test_drift_job_reads_the_gateways_own_log(
    gateway: Any, gateway_stack: Any, demo_world: Any, settings: Any
) -> None:
    """Traffic through the real gateway, logged by its writer, compared with the training reference."""
    from drift.job import run_drift

    ids = demo_world.customer_ids(100_000)
    _gateway_scores(gateway.url, demo_world.model_name, random.Random(5).choices(ids, k=800))
    gateway.stop()  # graceful: the log is flushed (the module's last user of this gateway)
    predlog = gateway_stack.root / "drift-score" / "predlog"
    s = settings.model_copy(update={"gateway": settings.gateway.model_copy(update={"predlog_dir": predlog})})
    summary = run_drift(s, since="1d")
    assert summary.current_rows >= 800 and summary.version == demo_world.version
    assert summary.version_source == "repository routing"
    # Nothing pushed session activity: the real-time columns are null throughout the window (a
    # stopped stream is a data problem too) and are the only ones that drift.
    realtime = {"session_count_last_1h", "cart_value_usd", "last_page_viewed"}
    drifted = {c.column for c in summary.columns if c.drifted}
    assert drifted == realtime, [(c.column, c.method, c.score) for c in summary.columns]
    assert {c.column for c in summary.columns if c.method == "all-null"} == realtime
    assert summary.score_drift is not None and summary.score_drift.score < 0.5
