"""An online store that stops answering (a Redis client retrying a dead server) costs a 503, not a hang."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from gateway.errors import FeatureStoreUnavailableError
from gateway.features import MeteredFeatureSource

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class HangingStore:
    store_name = "redis"

    def __init__(self) -> None:
        self.cancelled = 0

    async def fetch(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> np.ndarray:
        try:
            await asyncio.Event().wait()  # never answers
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")

    async def read_rows(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> np.ndarray:
        return await self.fetch(feature_service, keys)

    async def check(self, feature_service: str) -> None:
        await asyncio.Event().wait()


async def test_a_store_that_does_not_answer_is_unavailable_within_the_deadline() -> None:
    store = HangingStore()
    source = MeteredFeatureSource(store, timeout_s=0.05)  # type: ignore[arg-type]
    with pytest.raises(
        FeatureStoreUnavailableError, match=r"redis online store did not answer within 0\.05 s"
    ) as e:
        await source.fetch("svc", [("c1",)])
    assert e.value.status_code == 503 and store.cancelled == 1  # the stuck read is abandoned
    with pytest.raises(FeatureStoreUnavailableError, match="did not answer"):
        await source.check("svc")
