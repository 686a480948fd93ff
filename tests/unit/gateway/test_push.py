"""The push body: rows checked against a PushSource's schema, errors naming the problem."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidRequestError, UnknownPushSourceError
from gateway.push import PushService
from gateway.settings import GatewaySettings
from treeserve.features import push as feast_push
from treeserve.features.push import PushRejectedError, PushResult, PushSchema, validate_rows

SCHEMA = PushSchema(
    "customer_activity_push",
    ("customer_id",),
    {"session_count_last_1h": "int64", "cart_value_usd": "float64", "last_page_viewed": "string"},
    ("customer_realtime",),
)
NOW = 1_800_000_000.0
ROW = {
    "customer_id": "cust-000001",
    "event_timestamp": "2027-01-15T08:00:00Z",
    "session_count_last_1h": 2,
    "cart_value_usd": 19.99,
    "last_page_viewed": "cart",
}


def _rows(*rows: dict[str, Any]) -> pd.DataFrame:
    return validate_rows(SCHEMA, list(rows), max_rows=10, now_s=NOW)


def test_a_good_row_becomes_the_frame_feast_pushes() -> None:
    frame = _rows(
        ROW, {**ROW, "cart_value_usd": None, "last_page_viewed": None, "event_timestamp": 1_790_000_000}
    )
    assert list(frame.columns) == ["customer_id", "event_timestamp", *SCHEMA.fields]
    assert str(frame["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert frame["session_count_last_1h"].dtype == "int64" and frame["cart_value_usd"].dtype == "float64"
    assert math.isnan(frame["cart_value_usd"][1]) and frame["last_page_viewed"][1] is None
    assert frame["event_timestamp"][0] == pd.Timestamp("2027-01-15T08:00:00Z")


def test_naive_times_are_utc_and_offsets_are_converted() -> None:
    frame = _rows(
        {**ROW, "event_timestamp": "2027-01-15T08:00:00"},
        {**ROW, "event_timestamp": "2027-01-15T09:00:00+01:00"},
    )
    assert (frame["event_timestamp"] == pd.Timestamp("2027-01-15T08:00:00Z")).all()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({**ROW, "session_count_last_1h": "2"}, "rows[0].session_count_last_1h must be an integer (got '2')"),
        ({**ROW, "session_count_last_1h": True}, "must be an integer"),
        ({**ROW, "session_count_last_1h": None}, "must be an integer"),
        ({**ROW, "cart_value_usd": "x"}, "rows[0].cart_value_usd must be a finite number or null"),
        ({**ROW, "last_page_viewed": 3}, "rows[0].last_page_viewed must be a string"),
        ({**ROW, "last_page_viewed": "p" * 300}, "at most 256 characters"),
        ({**ROW, "customer_id": "a b"}, "rows[0].customer_id must be a string of 1-128 characters"),
        ({**ROW, "customer_id": 7}, "rows[0].customer_id must be a string"),
        ({**ROW, "event_timestamp": "soon"}, "rows[0].event_timestamp must be an ISO 8601 time"),
        ({**ROW, "event_timestamp": NOW + 3600}, "lies more than 300 s in the future"),
        (
            {**ROW, "colour": 1},
            "rows[0] has unknown columns ['colour']; push source 'customer_activity_push' takes",
        ),
        ({k: v for k, v in ROW.items() if k != "cart_value_usd"}, "rows[0] lacks columns ['cart_value_usd']"),
        ("not an object", "rows[0] must be an object"),
    ],
)
def test_a_bad_row_is_refused_naming_it(row: Any, message: str) -> None:
    with pytest.raises(PushRejectedError) as e:
        _rows(row)
    assert message in str(e.value)


def test_row_counts_are_bounded() -> None:
    with pytest.raises(PushRejectedError, match="1 to 10 rows"):
        validate_rows(SCHEMA, [], max_rows=10, now_s=NOW)
    with pytest.raises(PushRejectedError, match=r"1 to 10 rows \(got 11\)"):
        validate_rows(SCHEMA, [ROW] * 11, max_rows=10, now_s=NOW)
    with pytest.raises(PushRejectedError, match='"rows" must be a list'):
        validate_rows(SCHEMA, {"a": 1}, max_rows=10, now_s=NOW)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from([*ROW, "x"]), _json, max_size=6), max_size=4) | _json)
def test_any_json_either_passes_or_is_refused_with_push_rejected(rows: Any) -> None:
    with contextlib.suppress(PushRejectedError):
        validate_rows(SCHEMA, rows, max_rows=10, now_s=NOW)


class FakePusher:
    store_name = "fake"

    def __init__(self) -> None:
        self.pushed: list[tuple[str, pd.DataFrame]] = []

    def schema(self, push_source: str) -> PushSchema:
        if push_source != SCHEMA.push_source:
            raise feast_push.UnknownPushSourceError(f"no push source {push_source!r} in the Feast registry")
        return SCHEMA

    def default_push_source(self, feature_service: str) -> str:
        return SCHEMA.push_source

    def push(self, push_source: str, frame: pd.DataFrame) -> PushResult:
        self.pushed.append((push_source, frame))
        return PushResult(push_source, len(frame), SCHEMA.feature_views)


@pytest.mark.anyio
async def test_the_service_maps_rejections_to_422_and_unknown_sources_to_404() -> None:
    import orjson

    pusher = FakePusher()
    service = PushService(GatewaySettings(max_entities=5), pusher, feature_service="churn_model")
    row = {**ROW, "event_timestamp": "2020-01-01T00:00:00Z"}
    result = await service.push(orjson.dumps({"rows": [row]}))
    assert result.rows == 1 and pusher.pushed[0][0] == "customer_activity_push"
    with pytest.raises(InvalidRequestError, match="cart_value_usd must be a finite number") as e:
        await service.push(orjson.dumps({"rows": [{**row, "cart_value_usd": "x"}]}))
    assert e.value.status_code == 422
    with pytest.raises(UnknownPushSourceError) as nf:
        await service.push(orjson.dumps({"push_source": "other", "rows": [row]}))
    assert nf.value.status_code == 404
    for body, message in [
        (b"[1]", "body must be an object"),
        (b"{", "not valid JSON"),
        (b'{"push_source": "customer_activity_push"}', 'lacks "rows"'),
        (b'{"rows": [], "x": 1}', "unknown fields ['x']"),
        (orjson.dumps({"rows": [row] * 6}), "1 to 5 rows"),
    ]:
        with pytest.raises(InvalidRequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
            await service.push(body)
