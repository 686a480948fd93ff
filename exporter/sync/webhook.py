"""MLflow webhook deliveries: signature and age checks, de-duplication, the payload we act on.

MLflow signs ``f"{delivery_id}.{timestamp}."`` + the raw body with HMAC-SHA256 and sends
``X-MLflow-Signature: v1,<base64>``, ``X-MLflow-Delivery-Id`` and ``X-MLflow-Timestamp`` (unix
seconds). Unsigned, badly signed and stale deliveries are rejected (401 at the HTTP layer).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exporter.sync.errors import WebhookRejectedError

HEADER_SIGNATURE = "X-MLflow-Signature"
HEADER_DELIVERY_ID = "X-MLflow-Delivery-Id"
HEADER_TIMESTAMP = "X-MLflow-Timestamp"
SIGNATURE_VERSION = "v1"
ALIAS_EVENTS = ("model_version_alias.created", "model_version_alias.deleted")
VERSION_EVENTS = ("model_version.created",)
"""A new version: the sync stages it ahead of its promotion (``sync.prestage_max``)."""
WEBHOOK_EVENTS = ALIAS_EVENTS + VERSION_EVENTS
"""Every event the sync's webhook subscribes to."""


@dataclass(frozen=True)
class AliasEvent:
    """A verified alias change (or a new version: ``alias`` empty): model, alias, version, when sent."""

    delivery_id: str
    action: str
    """created | deleted"""
    model: str
    alias: str
    version: str | None
    sent_at: float
    """Unix time of the change as stamped by the MLflow server (body timestamp, else header)."""


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The MLflow signature header value for a delivery."""
    digest = hmac.new(
        secret.encode("utf-8"), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256
    ).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify(
    headers: dict[str, str], body: bytes, *, secret: str, max_age_s: float, now: float | None = None
) -> str:
    """Check signature and age; return the delivery id or raise WebhookRejectedError."""
    if not secret:
        raise WebhookRejectedError("no webhook secret configured")
    h = {k.lower(): v for k, v in headers.items()}
    delivery_id = h.get(HEADER_DELIVERY_ID.lower(), "")
    timestamp = h.get(HEADER_TIMESTAMP.lower(), "")
    signature = h.get(HEADER_SIGNATURE.lower(), "")
    if not (delivery_id and timestamp and signature):
        raise WebhookRejectedError("unsigned delivery")
    expected = sign(secret, delivery_id, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise WebhookRejectedError("bad signature")
    try:
        sent = float(timestamp)
    except ValueError as e:
        raise WebhookRejectedError("bad timestamp") from e
    now = time.time() if now is None else now
    if abs(now - sent) > max_age_s:
        raise WebhookRejectedError("stale delivery")
    return delivery_id


def parse_alias_event(delivery_id: str, headers: dict[str, str], body: bytes) -> AliasEvent | None:
    """The alias change (or new version) in a verified body, or None for any other event."""
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    event = f"{payload.get('entity')}.{payload.get('action')}"
    data = payload.get("data") or {}
    if event not in WEBHOOK_EVENTS or not isinstance(data, dict) or not data.get("name"):
        return None
    h = {k.lower(): v for k, v in headers.items()}
    sent_at = float(h.get(HEADER_TIMESTAMP.lower(), time.time()))
    with contextlib.suppress(ValueError):
        sent_at = datetime.fromisoformat(str(payload.get("timestamp"))).timestamp()
    version = data.get("version")
    return AliasEvent(
        delivery_id=delivery_id,
        action=str(payload.get("action")),
        model=str(data["name"]),
        alias=str(data.get("alias", "")),
        version=None if version is None else str(version),
        sent_at=sent_at,
    )


class DeliveryDeduper:
    """Remembers the last ``capacity`` delivery ids; thread-safe."""

    def __init__(self, capacity: int = 4096) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str) -> bool:
        """True the first time an id is seen, False for a repeat."""
        with self._lock:
            if delivery_id in self._seen:
                self._seen.move_to_end(delivery_id)
                return False
            self._seen[delivery_id] = None
            while len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return True
