"""Webhook deliveries: MLflow's signature scheme, staleness, de-duplication, the HTTP receiver."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from exporter.sync.errors import WebhookRejectedError
from exporter.sync.service import WEBHOOK_PATH, SyncService, create_app
from exporter.sync.webhook import DeliveryDeduper, parse_alias_event, sign, verify
from treeserve_app.settings import load_settings

SECRET = "s3cret"


def _delivery(
    body: dict, *, secret: str = SECRET, ts: float | None = None, did: str = "d-1"
) -> tuple[dict, bytes]:
    raw = json.dumps(body).encode()
    stamp = str(int(time.time() if ts is None else ts))
    return {
        "X-MLflow-Delivery-Id": did,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": sign(secret, did, stamp, raw),
        "Content-Type": "application/json",
    }, raw


def _alias_body(version: str = "3", model: str = "churn-prediction") -> dict:
    return {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-11-27T08:00:00.123456+00:00",
        "data": {"name": model, "alias": "champion", "version": version},
    }


def test_signature_matches_mlflows_own_implementation() -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    payload = json.dumps(_alias_body())
    assert sign(SECRET, "abc", "1700000000", payload.encode()) == _generate_hmac_signature(
        SECRET, "abc", "1700000000", payload
    )


@given(body=st.binary(max_size=200), did=st.text(min_size=1, max_size=40).filter(lambda s: "\n" not in s))
def test_any_tampering_is_rejected(body: bytes, did: str) -> None:
    now = 1_700_000_000.0
    sig = sign(SECRET, did, str(int(now)), body)
    headers = {"X-MLflow-Delivery-Id": did, "X-MLflow-Timestamp": str(int(now)), "X-MLflow-Signature": sig}
    assert verify(headers, body, secret=SECRET, max_age_s=60, now=now) == did
    with pytest.raises(WebhookRejectedError):
        verify(headers, body + b"x", secret=SECRET, max_age_s=60, now=now)
    with pytest.raises(WebhookRejectedError):
        verify(headers, body, secret="other", max_age_s=60, now=now)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: h.pop("X-MLflow-Signature"), "unsigned delivery"),
        (lambda h: h.__setitem__("X-MLflow-Signature", "v1,AAAA"), "bad signature"),
    ],
)
def test_unsigned_and_bad_signatures(mutate, reason: str) -> None:
    headers, raw = _delivery(_alias_body())
    mutate(headers)
    with pytest.raises(WebhookRejectedError, match=reason):
        verify(headers, raw, secret=SECRET, max_age_s=60)


def test_stale_and_no_secret() -> None:
    headers, raw = _delivery(_alias_body(), ts=time.time() - 3600)
    with pytest.raises(WebhookRejectedError, match="stale"):
        verify(headers, raw, secret=SECRET, max_age_s=60)
    with pytest.raises(WebhookRejectedError, match="no webhook secret"):
        verify(headers, raw, secret="", max_age_s=1e9)


def test_parse_alias_event_uses_body_timestamp() -> None:
    headers, raw = _delivery(_alias_body("7"))
    ev = parse_alias_event("d-1", headers, raw)
    assert ev is not None and (ev.model, ev.alias, ev.version) == ("churn-prediction", "champion", "7")
    assert ev.sent_at == pytest.approx(datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=UTC).timestamp())
    assert (
        parse_alias_event("d", headers, b'{"entity": "model_version", "action": "created", "data": {}}')
        is None
    )
    assert parse_alias_event("d", headers, b"not json") is None


def test_deduper_remembers_a_bounded_window() -> None:
    d = DeliveryDeduper(capacity=2)
    assert d.first_time("a") and d.first_time("b")
    assert not d.first_time("a")
    assert d.first_time("c")  # evicts b (a was touched)
    assert d.first_time("b")


@pytest.fixture
def service(treeserve_home: Path) -> SyncService:
    return SyncService(load_settings(sync={"webhook_secret": SECRET}))


def test_receiver_401_for_bad_signature_and_no_wakeup(service: SyncService) -> None:
    client = TestClient(create_app(service))
    headers, raw = _delivery(_alias_body(), secret="wrong")
    r = client.post(WEBHOOK_PATH, content=raw, headers=headers)
    assert r.status_code == 401
    assert not service._wake.is_set()
    r = client.post(WEBHOOK_PATH, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 401


def test_receiver_accepts_once_and_wakes(service: SyncService) -> None:
    client = TestClient(create_app(service))
    headers, raw = _delivery(_alias_body("5"), did="same")
    assert client.post(WEBHOOK_PATH, content=raw, headers=headers).json() == {"accepted": True}
    assert service._wake.is_set()
    assert service._hints["churn-prediction:champion=5"] > 0
    assert client.post(WEBHOOK_PATH, content=raw, headers=headers).json()["duplicate"] is True
    other, raw2 = _delivery(_alias_body("5", model="not-watched"), did="other")
    assert client.post(WEBHOOK_PATH, content=raw2, headers=other).json()["ignored"] is True
    metrics = client.get("/metrics").text
    assert 'treeserve_sync_webhook_deliveries_total{outcome="accepted"} 1.0' in metrics
    assert client.get("/healthz").json() == {"status": "ok"}


def test_a_new_version_wakes_the_sync_to_stage_it(tmp_path: Path) -> None:
    """``model_version.created``: the sync wakes (it stages new versions ahead of promotion)."""
    body = {
        "entity": "model_version",
        "action": "created",
        "timestamp": "2026-11-27T08:00:00+00:00",
        "data": {"name": "churn-prediction", "version": "5", "source": "models:/m-1", "tags": {}},
    }
    headers, raw = _delivery(body, did="d-new")
    event = parse_alias_event("d-new", headers, raw)
    assert event is not None and (event.model, event.alias, event.version) == ("churn-prediction", "", "5")
    service = SyncService(load_settings(home=tmp_path, sync={"webhook_secret": SECRET}))
    assert service.accept(headers, raw) == (200, {"accepted": True})
    assert service._wake.is_set()
