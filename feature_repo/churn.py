"""Feast definitions of the churn demo: entity, source, feature view and the model's FeatureService.

Definitions only, no side effects on import. ``definitions(data_dir)`` builds the objects for a
given data folder (treeserve calls it with the configured ``data.data_dir``); the module-level
objects below use the default folder ``../var/data`` (relative to this folder) so that the plain
``feast -c feature_repo …`` CLI sees the same repository.

The FeatureService ``churn_model`` lists the features in model input order: it is the model's
feature contract, no other file repeats the list.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

FEATURE_VIEW = "customer_stats"
FEATURE_SERVICE = "churn_model"
STATS_FILE = "customer_stats.parquet"

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
    service = FeatureService(
        name=FEATURE_SERVICE,
        features=[stats],
        description="Input features of the churn-prediction model, in model order.",
    )
    return [customer, source, stats, service]


# For the plain `feast -c feature_repo …` CLI, which changes into this folder first.
customer, customer_stats_source, customer_stats, churn_model = definitions(Path("../var/data"))
