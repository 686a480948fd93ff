"""The push flow (no HTTP in here): body -> rows checked against the PushSource -> Feast push.

``POST /v1/features/push`` takes ``{"push_source": "customer_activity_push", "rows": [...]}``
(``push_source`` may be left out when one PushSource feeds the served model's FeatureService).
Rows are validated by ``treeserve.features.push.validate_rows`` (422 naming the first problem),
then written online and offline by a ``FeaturePusher`` on a worker thread; the next prediction of
those entities reads the new values.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import orjson
import pandas as pd

from gateway import metrics
from gateway.errors import FeatureStoreUnavailableError, InvalidRequestError, UnknownPushSourceError
from gateway.settings import GatewaySettings
from treeserve.features import OnlineStoreUnavailableError
from treeserve.features import push as feast_push
from treeserve.features.push import PushResult, PushSchema


class FeaturePusher(Protocol):
    """Where pushed rows go (``treeserve.features.push.FeastFeaturePusher``)."""

    store_name: str

    def schema(self, push_source: str) -> PushSchema:
        """What a row pushed to ``push_source`` holds."""
        ...

    def default_push_source(self, feature_service: str) -> str:
        """The one push source feeding ``feature_service``."""
        ...

    def push(self, push_source: str, frame: pd.DataFrame) -> PushResult:
        """Write validated rows online and offline (blocking)."""
        ...


class PushService:
    """Parses and validates a push body, then writes it through the pusher."""

    def __init__(self, settings: GatewaySettings, pusher: FeaturePusher, *, feature_service: str) -> None:
        self._settings = settings
        self._pusher = pusher
        self._feature_service = feature_service

    async def push(self, body: bytes) -> PushResult:
        """Validate and write one push body."""
        payload = _parse(body)
        try:
            named = payload.get("push_source")
            if named is not None and (not isinstance(named, str) or not named):
                raise InvalidRequestError('"push_source" must be a non-empty string')
            name: str = (
                named
                if named is not None
                else await asyncio.to_thread(self._pusher.default_push_source, self._feature_service)
            )
            schema = await asyncio.to_thread(self._pusher.schema, name)
            gw = self._settings
            frame = feast_push.validate_rows(
                schema,
                payload.get("rows"),
                max_rows=gw.max_entities,
                entity_id_pattern=gw.entity_id_pattern,
                entity_id_max_length=gw.entity_id_max_length,
            )
            result = await asyncio.to_thread(self._pusher.push, name, frame)
        except feast_push.PushRejectedError as e:
            metrics.FEATURE_PUSH_REJECTED.inc()
            raise InvalidRequestError(str(e)) from e
        except feast_push.UnknownPushSourceError as e:
            metrics.FEATURE_PUSH_REJECTED.inc()
            raise UnknownPushSourceError(str(e)) from e
        except OnlineStoreUnavailableError as e:
            raise FeatureStoreUnavailableError(str(e)) from e
        metrics.FEATURE_PUSH_ROWS.labels(result.push_source).inc(result.rows)
        return result


def _parse(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequestError(f"body is not valid JSON: {e.msg}") from e
    if not isinstance(payload, dict):
        raise InvalidRequestError('body must be an object with "rows" (and optionally "push_source")')
    extra = sorted(str(k)[:64] for k in payload if k not in ("push_source", "rows"))
    if extra:
        raise InvalidRequestError(f'unknown fields {extra[:5]}; send "rows" and optionally "push_source"')
    if "rows" not in payload:
        raise InvalidRequestError('body lacks "rows"')
    return payload


def render_push(result: PushResult) -> dict[str, Any]:
    """The JSON shape of ``schemas.PushResponse``."""
    return {
        "push_source": result.push_source,
        "rows": result.rows,
        "feature_views": list(result.feature_views),
        "to": result.to,
    }
