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
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from treeserve.errors import ConfigError, ServiceUnavailableError


class OnlineStoreUnavailableError(ServiceUnavailableError):
    """The online store cannot be read."""


class FeatureReaderMismatchError(ConfigError):
    """The direct reader and the Feast SDK read different values for the same stored entity."""


class FeatureSource(Protocol):
    """Where entity features come from: entity keys in, a float matrix out (NaN = missing)."""

    store_name: str
    """Short name for metrics and messages (``sqlite``, ``redis``, ``fake``)."""

    def describe(self, feature_service: str) -> tuple[list[str], list[str]]:
        """The FeatureService's ordered features and its entity join keys."""
        ...

    async def fetch(self, feature_service: str, keys: Sequence[tuple[str, ...]]) -> np.ndarray:
        """Features of ``keys`` (values in join-key order): float64 [len(keys), n_features], NaN missing."""
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
