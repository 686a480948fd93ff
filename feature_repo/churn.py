"""Feast definitions of the churn demo: entity, sources, feature views and the model's FeatureService.

Definitions only, no side effects on import. ``definitions(data_dir)`` builds the objects for a
given data folder (treeserve calls it with the configured ``data.data_dir``); the module-level
objects below use the default folder ``../var/data`` (relative to this folder) so that the plain
``feast -c feature_repo …`` CLI sees the same repository.

Two views of one customer:

* ``customer_stats`` — daily snapshots (batch, materialized), TTL 90 days;
* ``customer_realtime`` — session activity pushed as it happens through the PushSource
  ``customer_activity_push`` (``POST /v1/features/push``, ``treeserve features push``), TTL 1 hour:
  older values count as missing. Its batch source holds the history (generated, plus every push
  written with ``PushMode.ONLINE_AND_OFFLINE``) that training joins point-in-time.

The FeatureService ``churn_model`` lists the features in model input order (both views): it is the
model's feature contract, no other file repeats the list. ``last_page_viewed`` is a string; its
tags declare the fixed vocabulary that encodes it for the model (``treeserve.encoding``).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, Int64, String

FEATURE_VIEW = "customer_stats"
REALTIME_VIEW = "customer_realtime"
PUSH_SOURCE = "customer_activity_push"
FEATURE_SERVICE = "churn_model"
STATS_FILE = "customer_stats.parquet"
ACTIVITY_FILE = "customer_activity.parquet"

# The vocabulary of last_page_viewed, in code order (treeserve.encoding, vocabulary/v1): a page
# outside it reaches the model as missing. Append only; reordering changes the model's inputs.
PAGES = ("home", "search", "product", "cart", "checkout", "account", "help", "cancel_subscription")

# Model input order. Every feature is Float64 (counts included) and may be null.
_FEATURES = (
    ("days_since_last_order", "Days since the customer's most recent order."),
    ("order_count_90d", "Orders placed in the last 90 days."),
    ("avg_order_value_usd", "Mean order value over the last 90 days (null without orders)."),
    ("support_tickets_30d", "Support tickets opened in the last 30 days."),
    ("product_category_diversity", "Distinct product categories bought in the last 90 days."),
    ("days_since_signup", "Account age in days."),
    ("email_open_rate_30d", "Share of marketing e-mails opened in 30 days (null: no consent)."),
)


def definitions(data_dir: Path | str) -> list[object]:
    """All Feast objects of the churn demo, reading ``<data_dir>/customer_stats.parquet``."""
    customer = Entity(
        name="customer",
        join_keys=["customer_id"],
        value_type=ValueType.STRING,
        description="A customer of the demo shop.",
    )
    source = FileSource(
        name="customer_stats_source",
        path=str(Path(data_dir) / STATS_FILE),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
        description="Daily customer snapshots written by `treeserve data generate`.",
    )
    stats = FeatureView(
        name=FEATURE_VIEW,
        entities=[customer],
        ttl=timedelta(days=90),
        schema=[Field(name=name, dtype=Float64, description=doc) for name, doc in _FEATURES],
        source=source,
        online=True,
        description="Daily behavioural snapshot per customer.",
    )
    activity_source = FileSource(
        name="customer_activity_source",
        path=str(Path(data_dir) / ACTIVITY_FILE),
        timestamp_field="event_timestamp",
        description="Session activity events: generated history plus every push (offline copy).",
    )
    push = PushSource(
        name=PUSH_SOURCE,
        batch_source=activity_source,
        description="Session activity pushed as it happens (gateway POST /v1/features/push).",
    )
    realtime = FeatureView(
        name=REALTIME_VIEW,
        entities=[customer],
        ttl=timedelta(hours=1),
        schema=[
            Field(
                name="session_count_last_1h",
                dtype=Int64,
                description="Sessions the customer started in the hour before the event.",
            ),
            Field(
                name="cart_value_usd",
                dtype=Float64,
                description="Value of the customer's cart at the event (0 when empty).",
            ),
            Field(
                name="last_page_viewed",
                dtype=String,
                description="Page of the event; encoded for the model by the vocabulary in its tags.",
                tags={"treeserve.encoding": "vocabulary/v1", "treeserve.vocabulary": ",".join(PAGES)},
            ),
        ],
        source=push,
        online=True,
        description="Real-time session activity per customer (pushed; missing after 1 hour).",
    )
    service = FeatureService(
        name=FEATURE_SERVICE,
        features=[stats, realtime],
        description="Input features of the churn-prediction model, in model order.",
    )
    return [customer, source, stats, activity_source, push, realtime, service]


# For the plain `feast -c feature_repo …` CLI, which changes into this folder first.
(
    customer,
    customer_stats_source,
    customer_stats,
    customer_activity_source,
    customer_activity_push,
    customer_realtime,
    churn_model,
) = definitions(Path("../var/data"))
