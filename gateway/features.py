"""The gateway's side of the online store: metrics and error mapping around a ``FeatureSource``.

The readers live in ``treeserve.features`` (shared with batch scoring); their
``OnlineStoreUnavailableError`` becomes the gateway's ``FeatureStoreUnavailableError`` (503) here,
where it enters the gateway, and every read is timed and every failure counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gateway import metrics
from gateway.errors import FeatureStoreUnavailableError
from treeserve.encoding import Vocabulary
from treeserve.features import FeatureRows, FeatureSource, OnlineStoreUnavailableError

__all__ = ["MeteredFeatureSource"]


class MeteredFeatureSource:
    """A ``FeatureSource`` that records read latency and errors and raises gateway errors."""

    def __init__(self, source: FeatureSource, *, timeout_s: float = 1.0) -> None:
        self._source = source
        self._timeout_s = timeout_s
        self.store_name = source.store_name
        self._duration = metrics.FEATURE_FETCH_DURATION.labels(source.store_name)
        self._ages: dict[str, Any] = {}

    def describe(self, feature_service: str) -> tuple[list[str], list[str]]:
        """The FeatureService's ordered features and join keys."""
        try:
            return self._source.describe(feature_service)
        except OnlineStoreUnavailableError as e:
            raise FeatureStoreUnavailableError(str(e)) from e

    def encodings(self, feature_service: str) -> Mapping[str, Vocabulary]:
        """The FeatureService's string encodings."""
        try:
            return self._source.encodings(feature_service)
        except OnlineStoreUnavailableError as e:
            raise FeatureStoreUnavailableError(str(e)) from e

    async def fetch(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> np.ndarray:
        """One (coalesced) online read, timed."""
        return (await self.read_rows(feature_service, keys)).values

    async def read_rows(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> FeatureRows:
        """One (coalesced) online read with each view's age, timed; ages go to the age histogram."""
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):  # no extra task per read (wait_for makes one)
                out = await self._source.read_rows(feature_service, keys)
        except OnlineStoreUnavailableError as e:
            raise self._unavailable(e) from e
        except TimeoutError as e:
            raise self._unavailable(self._late(e)) from e
        self._duration.observe(time.perf_counter() - t0)
        for view, ages in out.ages_s.items():
            hist = self._ages.get(view)
            if hist is None:
                hist = self._ages[view] = metrics.FEATURE_AGE.labels(view)
            metrics.observe_many(hist, np.maximum(ages, 0.0))  # NaN (nothing stored) is not observed
        return out

    async def verify(self, feature_service: str) -> None:
        """The reader's start-up self-check (a mismatch stays a configuration error)."""
        try:
            await self._source.verify(feature_service)
        except OnlineStoreUnavailableError as e:
            raise self._unavailable(e) from e

    async def check(self, feature_service: str) -> None:
        """Readiness: the store answers."""
        try:
            await asyncio.wait_for(self._source.check(feature_service), self._timeout_s)
        except OnlineStoreUnavailableError as e:
            raise self._unavailable(e) from e
        except TimeoutError as e:
            raise self._unavailable(self._late(e)) from e

    async def aclose(self) -> None:
        """Release the reader."""
        await self._source.aclose()

    def _late(self, e: TimeoutError) -> OnlineStoreUnavailableError:
        late = OnlineStoreUnavailableError(
            f"the {self.store_name} online store did not answer within {self._timeout_s:g} s"
        )
        late.__cause__ = e
        return late

    def _unavailable(self, e: OnlineStoreUnavailableError) -> FeatureStoreUnavailableError:
        cause = e.__cause__ if e.__cause__ is not None else e
        metrics.FEATURE_FETCH_ERRORS.labels(self.store_name, type(cause).__name__).inc()
        return FeatureStoreUnavailableError(str(e))
