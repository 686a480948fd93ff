"""The SDK reader: online features through Feast's ``get_online_features``.

One call for a whole (coalesced) batch of entities. Null is missing whatever Feast's status says
(the Redis store reports unknown entities as PRESENT with nulls). The SDK is synchronous: by
default a read runs inline on the event loop (about a millisecond per batch); on a thread
(``inline=False``) the same read fights the loop for the GIL and takes many times longer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from treeserve.errors import TreeserveError
from treeserve.features.source import OnlineStoreUnavailableError, first_line, store_unavailable, to_float
from treeserve.features.store import feature_service_entity_keys, feature_service_features

if TYPE_CHECKING:
    from feast import FeatureStore


class FeastFeatureSource:
    """``FeatureSource`` through the Feast SDK (``get_online_features`` with the FeatureService)."""

    def __init__(self, store: FeatureStore, *, store_name: str, inline: bool = True) -> None:
        self._store = store
        self.store_name = store_name
        self._inline = inline
        self._services: dict[str, Any] = {}
        self._contract: dict[str, tuple[list[str], list[str]]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast-online")

    def describe(self, feature_service: str) -> tuple[list[str], list[str]]:
        """Features and entity keys of the FeatureService, read from the Feast registry."""
        try:
            features = feature_service_features(self._store, feature_service)
            keys = feature_service_entity_keys(self._store, feature_service)
            self._services[feature_service] = self._store.get_feature_service(feature_service)
        except TreeserveError:
            raise
        except Exception as e:
            raise OnlineStoreUnavailableError(
                f"cannot read FeatureService {feature_service!r} from the Feast registry: {first_line(e)}"
            ) from e
        self._contract[feature_service] = (features, keys)
        return features, keys

    def read(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> np.ndarray:
        """The SDK read of ``keys``, synchronous (also the direct reader's reference)."""
        if feature_service not in self._contract:
            self.describe(feature_service)
        features, join_keys = self._contract[feature_service]
        service = self._services[feature_service]
        rows = [dict(zip(join_keys, k, strict=True)) for k in keys]
        try:
            data = self._store.get_online_features(features=service, entity_rows=rows).to_dict()
        except TreeserveError:
            raise
        except Exception as e:
            raise store_unavailable(self.store_name, e) from e
        out = np.empty((len(keys), len(features)), dtype=np.float64)
        for j, name in enumerate(features):
            out[:, j] = [to_float(v) for v in data[name]]
        return out

    async def fetch(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> np.ndarray:
        """Read all ``keys`` in one online-store call."""
        if self._inline:
            # One coalesced read blocks the loop for about a millisecond; on a thread the
            # same read fights the event loop for the GIL and takes tens of milliseconds.
            return self.read(feature_service, keys)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.read, feature_service, keys)

    async def verify(self, feature_service: str) -> None:
        """Nothing to check: the SDK is the reference."""

    async def check(self, feature_service: str) -> None:
        """One read of an entity that does not exist: proves the store answers."""
        _, join_keys = self._contract.get(feature_service) or self.describe(feature_service)
        await self.fetch(feature_service, [tuple("__treeserve_readyz__" for _ in join_keys)])

    async def aclose(self) -> None:
        """Stop the reader thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)
