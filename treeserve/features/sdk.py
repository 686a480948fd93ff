"""The SDK reader: online features through Feast's ``get_online_features``.

One call for a whole (coalesced) batch of entities. Null is missing whatever Feast's status says
(the Redis store reports unknown entities as PRESENT with nulls); so is a value older than its
FeatureView's TTL (Feast's online read does not check it: ``source.expire`` does, from the event
timestamps the SDK returns), and a string outside its vocabulary (``treeserve.encoding``). The SDK is synchronous: by
default a read runs inline on the event loop (about a millisecond per batch); on a thread
(``inline=False``) the same read fights the loop for the GIL and takes many times longer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from treeserve.encoding import Vocabulary
from treeserve.errors import TreeserveError
from treeserve.features.source import (
    FeatureRows,
    OnlineStoreUnavailableError,
    ServiceLayout,
    ViewLayout,
    expire,
    first_line,
    store_unavailable,
    to_float,
)
from treeserve.features.store import (
    feature_service_encodings,
    feature_service_entity_keys,
    feature_service_features,
    feature_service_views,
)

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
        self._layouts: dict[str, ServiceLayout] = {}
        self._encodings: dict[str, dict[str, Vocabulary]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast-online")

    def describe(self, feature_service: str) -> tuple[list[str], list[str]]:
        """Features and entity keys of the FeatureService, read from the Feast registry."""
        try:
            features = feature_service_features(self._store, feature_service)
            keys = feature_service_entity_keys(self._store, feature_service)
            encodings = feature_service_encodings(self._store, feature_service)
            views = feature_service_views(self._store, feature_service)
            self._services[feature_service] = self._store.get_feature_service(feature_service)
        except TreeserveError:
            raise
        except Exception as e:
            raise OnlineStoreUnavailableError(
                f"cannot read FeatureService {feature_service!r} from the Feast registry: {first_line(e)}"
            ) from e
        index = {f: j for j, f in enumerate(features)}
        self._layouts[feature_service] = ServiceLayout(
            views=tuple(ViewLayout(name, ttl, tuple(index[f] for f in names)) for name, ttl, names in views),
            encodings={index[f]: enc for f, enc in encodings.items()},
        )
        self._encodings[feature_service] = encodings
        self._contract[feature_service] = (features, keys)
        return features, keys

    def encodings(self, feature_service: str) -> Mapping[str, Vocabulary]:
        """The FeatureService's string features -> their vocabulary (from the Feast registry)."""
        if feature_service not in self._encodings:
            self.describe(feature_service)
        return self._encodings[feature_service]

    def layout(self, feature_service: str) -> ServiceLayout:
        """The views (TTL, columns) and encodings of the FeatureService."""
        if feature_service not in self._layouts:
            self.describe(feature_service)
        return self._layouts[feature_service]

    def read_sdk(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> FeatureRows:
        """The SDK read of ``keys``, synchronous (also the direct reader's reference)."""
        if feature_service not in self._contract:
            self.describe(feature_service)
        features, join_keys = self._contract[feature_service]
        layout = self._layouts[feature_service]
        service = self._services[feature_service]
        rows = [dict(zip(join_keys, k, strict=True)) for k in keys]
        try:
            response = self._store.get_online_features(features=service, entity_rows=rows)
            data = response.to_dict(include_event_timestamps=True)
        except TreeserveError:
            raise
        except Exception as e:
            raise store_unavailable(self.store_name, e) from e
        out = np.empty((len(keys), len(features)), dtype=np.float64)
        for j, name in enumerate(features):
            enc = layout.encodings.get(j)
            out[:, j] = enc.encode(data[name]) if enc is not None else [to_float(v) for v in data[name]]
        event_ts: dict[str, np.ndarray] = {}
        for view in layout.views:
            if not view.columns:
                continue
            seconds = np.asarray(data[features[view.columns[0]] + "__ts"], dtype=np.float64)
            stored = np.zeros(len(keys), dtype=bool)
            for j in view.columns:
                stored |= ~np.isnan(out[:, j]) | np.array([v is not None for v in data[features[j]]])
            event_ts[view.name] = np.where(stored & (seconds > 0), seconds, np.nan)
        return expire(layout, out, event_ts)

    def read(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> np.ndarray:
        """The SDK read of ``keys`` as the model matrix (synchronous)."""
        return self.read_sdk(feature_service, keys).values

    async def read_rows(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> FeatureRows:
        """Read all ``keys`` in one online-store call, with each view's age."""
        if self._inline:
            # One coalesced read blocks the loop for about a millisecond; on a thread the
            # same read fights the event loop for the GIL and takes tens of milliseconds.
            return self.read_sdk(feature_service, keys)
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self.read_sdk, feature_service, keys
        )

    async def fetch(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> np.ndarray:
        """Read all ``keys`` in one online-store call."""
        return (await self.read_rows(feature_service, keys)).values

    async def verify(self, feature_service: str) -> None:
        """Nothing to check: the SDK is the reference."""

    async def check(self, feature_service: str) -> None:
        """One read of an entity that does not exist: proves the store answers."""
        _, join_keys = self._contract.get(feature_service) or self.describe(feature_service)
        await self.fetch(feature_service, [tuple("__treeserve_readyz__" for _ in join_keys)])

    async def aclose(self) -> None:
        """Stop the reader thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)
