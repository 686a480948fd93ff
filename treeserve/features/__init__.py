"""Feast in one place: building the store, the ``FeatureSource`` readers, and choosing one.

    store.py    ``open_feature_store(settings)``: the ``RepoConfig`` built in code; FeatureService contract
    source.py   the ``FeatureSource`` interface and its errors
    sdk.py      ``FeastFeatureSource``: ``get_online_features`` (the reference)
    direct.py   ``DirectFeatureSource``: the online store's own ``online_read``, checked against the SDK

``feature_source`` is the one place a reader is chosen (``gateway.feature_reader``); the gateway
and batch scoring both call it, so they read the same values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from treeserve.features.direct import DirectFeatureSource
from treeserve.features.sdk import FeastFeatureSource
from treeserve.features.source import (
    FeatureReaderMismatchError,
    FeatureRows,
    FeatureSource,
    OnlineStoreUnavailableError,
)
from treeserve.features.store import open_feature_store

if TYPE_CHECKING:
    from feast import FeatureStore

    from treeserve.settings import CoreConfig

__all__ = [
    "DirectFeatureSource",
    "FeastFeatureSource",
    "FeatureReaderMismatchError",
    "FeatureRows",
    "FeatureSource",
    "OnlineStoreUnavailableError",
    "feature_source",
    "open_feature_source",
    "open_feature_store",
]


def feature_source(
    store: FeatureStore, *, reader: Literal["direct", "sdk"], store_name: str
) -> FeatureSource:
    """The reader named by ``reader`` on ``store`` (``store_name``: ``sqlite`` or ``redis``)."""
    if reader == "direct":
        return DirectFeatureSource(store, store_name=store_name)
    return FeastFeatureSource(store, store_name=store_name)


def open_feature_source(settings: CoreConfig, *, reader: Literal["direct", "sdk"]) -> FeatureSource:
    """The ``reader`` (``sdk`` or ``direct``) on the configured Feast store."""
    return feature_source(open_feature_store(settings), reader=reader, store_name=settings.feast.online_store)
