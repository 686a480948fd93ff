"""Feature source adapter: entity keys in, a float matrix out (NaN = missing).

``FeastFeatureSource`` reads the online store through the Feast SDK's ``get_online_features``
for a whole (coalesced) batch of entities at once. Null is missing whatever Feast's status says
(the Redis store reports unknown entities as PRESENT with nulls). The SDK is synchronous: by
default a (coalesced) read runs inline on the event loop (about a millisecond per batch); on a
thread (``inline=False``) the same read fights the loop for the GIL and takes many times longer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from gateway import metrics
from gateway.errors import FeatureStoreUnavailableError
from treeserve.errors import TreeserveError

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)


class FeatureSource(Protocol):
    """Where entity features come from."""

    store_name: str
    """Short name for metrics and messages (``sqlite``, ``redis``, ``fake``)."""

    def describe(self, feature_service: str) -> tuple[list[str], list[str]]:
        """The FeatureService's ordered features and its entity join keys."""
        ...

    async def fetch(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> np.ndarray:
        """Features of ``keys`` (values in join-key order): float64 [len(keys), n_features], NaN missing."""
        ...

    async def check(self, feature_service: str) -> None:
        """Raise FeatureStoreUnavailableError when the online store cannot be read."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...


def _to_float(v: Any) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


class FeastFeatureSource:
    """Online features through the Feast SDK (``get_online_features`` with the FeatureService)."""

    def __init__(self, store: FeatureStore, *, store_name: str, inline: bool = True) -> None:
        self._store = store
        self.store_name = store_name
        self._inline = inline
        self._services: dict[str, Any] = {}
        self._contract: dict[str, tuple[list[str], list[str]]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast-online")
        self._duration = metrics.FEATURE_FETCH_DURATION.labels(store_name)

    def describe(self, feature_service: str) -> tuple[list[str], list[str]]:
        """Features and entity keys of the FeatureService, read from the Feast registry."""
        from treeserve.feast_store import feature_service_entity_keys, feature_service_features

        try:
            features = feature_service_features(self._store, feature_service)
            keys = feature_service_entity_keys(self._store, feature_service)
            self._services[feature_service] = self._store.get_feature_service(feature_service)
        except TreeserveError:
            raise
        except Exception as e:
            raise FeatureStoreUnavailableError(
                f"cannot read FeatureService {feature_service!r} from the Feast registry: {_first_line(e)}"
            ) from e
        self._contract[feature_service] = (features, keys)
        return features, keys

    def _read(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> np.ndarray:
        if feature_service not in self._contract:
            self.describe(feature_service)
        features, join_keys = self._contract[feature_service]
        service = self._services[feature_service]
        rows = [dict(zip(join_keys, k, strict=True)) for k in keys]
        response = self._store.get_online_features(features=service, entity_rows=rows)
        data = response.to_dict()
        out = np.empty((len(keys), len(features)), dtype=np.float64)
        for j, name in enumerate(features):
            out[:, j] = [_to_float(v) for v in data[name]]
        return out

    async def fetch(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> np.ndarray:
        """Read all ``keys`` in one online-store call."""
        t0 = time.perf_counter()
        try:
            if self._inline:
                # One coalesced read blocks the loop for about a millisecond; on a thread the
                # same read fights the event loop for the GIL and takes tens of milliseconds.
                out = self._read(feature_service, keys)
            else:
                out = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._read, feature_service, keys
                )
        except TreeserveError:
            raise
        except Exception as e:
            raise store_unavailable(self.store_name, e) from e
        self._duration.observe(time.perf_counter() - t0)
        return out

    async def check(self, feature_service: str) -> None:
        """One read of an entity that does not exist: proves the store answers."""
        _, join_keys = self._contract.get(feature_service) or self.describe(feature_service)
        await self.fetch(feature_service, [tuple("__treeserve_readyz__" for _ in join_keys)])

    async def aclose(self) -> None:
        """Stop the reader thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def store_unavailable(store_name: str, e: BaseException) -> FeatureStoreUnavailableError:
    """Count a failed online read and turn it into the gateway's error (raise it ``from e``)."""
    metrics.FEATURE_FETCH_ERRORS.labels(store_name, type(e).__name__).inc()
    return FeatureStoreUnavailableError(f"the {store_name} online store cannot be read: {_first_line(e)}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
