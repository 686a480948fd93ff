"""The ``FeatureSource`` interface every online-feature reader implements, and its errors.

    ServiceUnavailableError
    └── OnlineStoreUnavailableError     the online store (or its registry) cannot be read
    ConfigError
    └── FeatureReaderMismatchError      the direct reader disagrees with the Feast SDK

Third-party (Feast, Redis, SQLite) errors become ``OnlineStoreUnavailableError`` in the reader
that met them; the error keeps the original as its ``__cause__``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from treeserve.encoding import Vocabulary
from treeserve.errors import ConfigError, ServiceUnavailableError


class OnlineStoreUnavailableError(ServiceUnavailableError):
    """The online store cannot be read."""


class FeatureReaderMismatchError(ConfigError):
    """The direct reader and the Feast SDK read different values for the same stored entity."""


@dataclass(frozen=True)
class ViewLayout:
    """One FeatureView of a FeatureService: its columns in the model matrix and its TTL."""

    name: str
    ttl_s: float
    """Values older than this count as missing (0: no TTL)."""
    columns: tuple[int, ...]


@dataclass(frozen=True)
class ServiceLayout:
    """What a reader needs beyond the feature list: the views (TTL) and the string encodings."""

    views: tuple[ViewLayout, ...]
    encodings: Mapping[int, Vocabulary] = field(default_factory=dict)
    """Column -> the vocabulary that encodes its strings (``treeserve.encoding``)."""


@dataclass(frozen=True)
class FeatureRows:
    """One online read: the model matrix and how old each view's values were."""

    values: np.ndarray
    """float64 [n, n_features]; NaN = missing (null, unknown entity, older than the TTL, unknown string)."""
    ages_s: Mapping[str, np.ndarray]
    """FeatureView -> float64 [n]: age of the stored values at read time (NaN: nothing stored)."""


def expire(layout: ServiceLayout, values: np.ndarray, event_ts: Mapping[str, np.ndarray]) -> FeatureRows:
    """Ages from the views' event timestamps (epoch seconds, NaN: none); values past the TTL -> NaN."""
    now = time.time()
    ages: dict[str, np.ndarray] = {}
    for view in layout.views:
        ts = event_ts.get(view.name)
        if ts is None:
            continue
        age = now - ts
        ages[view.name] = age
        if view.ttl_s > 0:
            stale = age > view.ttl_s
            if stale.any():
                values[np.flatnonzero(stale)[:, None], view.columns] = np.nan  # stale rows x view columns
    return FeatureRows(values, ages)


class FeatureSource(Protocol):
    """Where entity features come from: entity keys in, a float matrix out (NaN = missing)."""

    store_name: str
    """Short name for metrics and messages (``sqlite``, ``redis``, ``fake``)."""

    def describe(self, feature_service: str) -> tuple[list[str], list[str]]:
        """The FeatureService's ordered features and its entity join keys."""
        ...

    def encodings(self, feature_service: str) -> Mapping[str, Vocabulary]:
        """The FeatureService's string features -> the vocabulary that encodes them."""
        ...

    async def fetch(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> np.ndarray:
        """Features of ``keys`` (values in join-key order): float64 [len(keys), n_features], NaN missing."""
        ...

    async def read_rows(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> FeatureRows:
        """``fetch`` with the age of each view's values (one read)."""
        ...

    async def verify(self, feature_service: str) -> None:
        """Start-up self-check: raise FeatureReaderMismatchError when this reader reads wrong values."""
        ...

    async def check(self, feature_service: str) -> None:
        """Raise OnlineStoreUnavailableError when the online store cannot be read."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...


def to_float(v: Any) -> float:
    """A Python value from Feast as a float; NaN for null and non-numbers."""
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when empty)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def store_unavailable(store_name: str, e: BaseException) -> OnlineStoreUnavailableError:
    """A failed online read as treeserve's error (raise it ``from e``)."""
    return OnlineStoreUnavailableError(f"the {store_name} online store cannot be read: {first_line(e)}")
