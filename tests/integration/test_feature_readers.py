"""The direct feature reader against the Feast SDK on real online stores (SQLite and Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.fixtures.feast_data import REDIS_CONNECTION
from treeserve.features import (
    DirectFeatureSource,
    FeastFeatureSource,
    FeatureReaderMismatchError,
    feature_source,
    open_feature_store,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "redis"])
def world(request: pytest.FixtureRequest) -> Any:
    """The demo world materialized into each online store."""
    return request.getfixturevalue("demo_world" if request.param == "sqlite" else "redis_demo_world")


class ChangedKeyLayout(DirectFeatureSource):
    """A direct reader whose idea of the stored key layout is no longer Feast's."""

    def _entity_protos(self, plan: Any, keys: list[str], rows: Sequence[tuple[str, ...]]) -> list[Any]:
        protos = super()._entity_protos(plan, keys, rows)
        for p in protos:
            p.join_keys[0] = p.join_keys[0] + "_v2"
        return protos


def test_direct_reader_is_checked_against_the_sdk_and_a_changed_layout_fails_loudly(world: Any) -> None:
    settings = world.settings
    store = open_feature_store(settings)
    reader = feature_source(store, reader="direct", store_name=settings.feast.online_store)
    changed = ChangedKeyLayout(store, store_name=settings.feast.online_store)

    async def check() -> None:
        await reader.verify(world.feature_service)  # the real layout passes
        await changed.verify(world.feature_service)

    with pytest.raises(FeatureReaderMismatchError) as info:
        asyncio.run(check())
    message = str(info.value)
    assert "disagrees with the Feast SDK" in message and "customer_id=" in message
    assert any(f in message for f in world.features) and "feature_reader=sdk" in message


@pytest.fixture(params=["sqlite", "redis"])
def two_key_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A FeatureService over two FeatureViews with different join keys, written online."""
    from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource
    from feast.repo_config import RepoConfig
    from feast.types import Float64, String
    from feast.value_type import ValueType

    now = datetime.now(UTC)
    customers = pd.DataFrame(
        {"customer_id": ["c1", "c2", "c3"], "spend": [10.0, 20.0, 30.0], "ts": [now] * 3}
    )
    regions = pd.DataFrame({"region_id": ["north", "south"], "risk": [0.25, 0.75], "ts": [now] * 2})
    customers.to_parquet(tmp_path / "customers.parquet")
    regions.to_parquet(tmp_path / "regions.parquet")
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    region = Entity(name="region", join_keys=["region_id"], value_type=ValueType.STRING)
    views = [
        FeatureView(
            name=name,
            entities=[entity],
            schema=[Field(name=key, dtype=String), Field(name=feature, dtype=Float64)],
            source=FileSource(
                name=f"{name}_source", path=str(tmp_path / f"{name}.parquet"), timestamp_field="ts"
            ),
            ttl=timedelta(days=30),
        )
        for name, entity, key, feature in (
            ("customers", customer, "customer_id", "spend"),
            ("regions", region, "region_id", "risk"),
        )
    ]
    online: dict[str, Any] = (
        {"type": "redis", "connection_string": REDIS_CONNECTION}
        if request.param == "redis"
        else {"type": "sqlite", "path": str(tmp_path / "online.db")}
    )
    config = RepoConfig(
        project=f"ts_two_{uuid.uuid4().hex[:8]}",
        provider="local",
        registry={"registry_type": "sql", "path": f"sqlite:///{tmp_path / 'registry.db'}"},
        online_store=online,
        offline_store={"type": "duckdb"},
        entity_key_serialization_version=3,
        repo_path=tmp_path,
    )
    store = FeatureStore(config=config, repo_path=str(tmp_path))
    store.apply([customer, region, *views, FeatureService(name="two_keys", features=views)])
    store.write_to_online_store("customers", customers)
    store.write_to_online_store("regions", regions)
    try:
        yield store
    finally:
        with contextlib.suppress(Exception):
            store.teardown()


def test_two_views_with_different_join_keys_read_their_own_keys(two_key_store: Any) -> None:
    store_name = two_key_store.config.online_store.type
    direct = DirectFeatureSource(two_key_store, store_name=store_name)
    features, keys = direct.describe("two_keys")
    assert features == ["spend", "risk"] and keys == ["customer_id", "region_id"]
    rows = [("c1", "north"), ("c2", "south"), ("c1", "south"), ("c3", "nowhere")]
    want = FeastFeatureSource(two_key_store, store_name=store_name).read("two_keys", rows)
    np.testing.assert_array_equal(want[:3], [[10.0, 0.25], [20.0, 0.75], [10.0, 0.75]])

    async def twice_then_verify() -> list[np.ndarray]:  # the second read goes through the key cache
        reads = [await direct.fetch("two_keys", rows) for _ in range(2)]
        await direct.verify("two_keys")
        return reads

    for got in asyncio.run(twice_then_verify()):
        np.testing.assert_array_equal(got, want)
