"""A seeded churn world: customers, daily behavioural snapshots and churn labels.

The simulation runs day by day, vectorised over customers:

* every customer has a latent engagement (a stable base plus an AR(1) wobble) that drives the
  order rate, the ticket rate and the e-mail open rate;
* daily snapshots (``event_timestamp`` = 00:00 UTC) carry the seven features, with nulls where a
  real pipeline has them (no orders -> no average order value, no e-mail consent, gaps);
* session activity (``customer_activity``): bursts of sessions in the three hours before each
  label time and before the end of the world (ending ``FINAL_BURST_GAP_S`` before it); every session is an event carrying the real-time
  features (sessions in the last hour, cart value, page viewed), shaped by a latent churn intent
  that the daily snapshot does not show;
* each labelled customer gets one observation time; ``churned_within_30d`` is drawn from
  ``sigmoid(ground_truth_logit(snapshot + real-time features visible at that time) + noise)``
  (real-time features older than one hour are not visible: the FeatureView's TTL), and customers
  who churn stop ordering afterwards — so features from after the label time would leak the answer.

``--drift`` shifts the population (fewer, smaller orders, more tickets, fewer e-mail opens):
see ``DRIFTED_FEATURES``. Same seed, same arguments -> byte-identical tables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from treeserve.errors import ConfigError

log = logging.getLogger(__name__)

FEATURES = (
    "days_since_last_order",
    "order_count_90d",
    "avg_order_value_usd",
    "support_tickets_30d",
    "product_category_diversity",
    "days_since_signup",
    "email_open_rate_30d",
)
"""The generated feature columns (the model order lives in the Feast FeatureService)."""

DRIFTED_FEATURES = (
    "days_since_last_order",
    "order_count_90d",
    "avg_order_value_usd",
    "support_tickets_30d",
    "email_open_rate_30d",
)
"""Features whose distribution ``drift=True`` shifts."""

REALTIME_FEATURES = ("session_count_last_1h", "cart_value_usd", "last_page_viewed")
"""The generated session-activity columns (FeatureView ``customer_realtime``)."""
PAGES = ("home", "search", "product", "cart", "checkout", "account", "help", "cancel_subscription", "blog")
"""Pages a session can end on; ``blog`` is outside the model's vocabulary (reaches it as missing)."""
REALTIME_TTL_S = 3600
"""Real-time values older than this are not visible (the FeatureView's TTL)."""
FINAL_BURST_GAP_S = 3600
"""The world's final session burst ends this long before its last snapshot (00:00 UTC of the end
date): served at any later time its values are past the TTL, so fresh values come from pushes
only, whatever the hour."""

LABEL = "churned_within_30d"
STATS_FILE = "customer_stats.parquet"
ACTIVITY_FILE = "customer_activity.parquet"
LABELS_FILE = "labels.parquet"
CUSTOMERS_FILE = "customers.parquet"

_BURN_IN_DAYS = 90  # history before the window so 90-day counts are warm on day one
_LABEL_HORIZON_DAYS = 30


@dataclass(frozen=True)
class WorldParams:
    """Generative knobs; ``drift`` swaps in a shifted set."""

    order_rate_intercept: float = -2.3
    order_value_factor: float = 1.0
    ticket_rate_intercept: float = -4.2
    open_rate_shift: float = 0.0


NORMAL = WorldParams()
DRIFTED = WorldParams(
    order_rate_intercept=-2.75, order_value_factor=0.75, ticket_rate_intercept=-3.5, open_rate_shift=-0.15
)


@dataclass(frozen=True)
class GeneratedData:
    """What ``generate_world`` wrote."""

    data_dir: Path
    n_customers: int
    n_snapshots: int
    n_events: int
    n_labels: int
    churn_rate: float
    start: datetime
    end: datetime
    drift: bool
    elapsed_s: float


# Page -> its share of sessions (log scale) and how churn intent moves it; -> its churn effect.
_PAGE_BASE = np.array([1.0, 0.8, 1.2, 0.3, -0.2, -0.3, -0.8, -2.0, -1.5])
_PAGE_INTENT = np.array([0.0, 0.0, -0.2, -0.4, -0.8, 0.4, 0.6, 1.4, 0.0])
_PAGE_EFFECT = dict(zip(PAGES, (0.0, 0.0, -0.2, -0.6, -1.2, 0.7, 1.2, 2.8, 0.0), strict=True))


def realtime_logit(x: dict[str, np.ndarray]) -> np.ndarray:
    """The real-time part of the churn log-odds; 0 where no fresh activity is visible."""
    sessions = np.asarray(x["session_count_last_1h"], dtype=np.float64)
    cart = np.asarray(x["cart_value_usd"], dtype=np.float64)
    pages = np.asarray(x["last_page_viewed"], dtype=object)
    page = np.array([_PAGE_EFFECT.get(p, 0.0) if isinstance(p, str) else 0.0 for p in pages])
    visible = ~np.isnan(sessions)
    term = (
        1.15
        - 0.45 * np.minimum(np.nan_to_num(sessions), 5.0)
        - 0.015 * np.minimum(np.nan_to_num(cart), 150.0)
    )
    return np.where(visible, term + page, 0.0)


def ground_truth_logit(x: dict[str, np.ndarray]) -> np.ndarray:
    """The churn log-odds the labels are drawn from (before noise), from visible features.

    Without the real-time columns in ``x`` only the snapshot part is computed.
    """
    dslo = np.nan_to_num(x["days_since_last_order"], nan=30.0)
    orders = np.nan_to_num(x["order_count_90d"], nan=5.0)
    aov = np.nan_to_num(x["avg_order_value_usd"], nan=45.0)
    tickets = np.nan_to_num(x["support_tickets_30d"], nan=0.5)
    diversity = np.nan_to_num(x["product_category_diversity"], nan=2.0)
    tenure = x["days_since_signup"]
    open_rate = x["email_open_rate_30d"]
    return (
        -1.55
        + 0.05 * np.minimum(dslo, 90.0)
        - 0.10 * np.minimum(orders, 20.0)
        - 0.012 * np.clip(aov - 45.0, -40.0, 80.0)
        + 0.45 * np.minimum(tickets, 6.0)
        - 0.12 * diversity
        + 0.9 * (tenure < 60)
        - 1.6 * (np.nan_to_num(open_rate, nan=0.25) - 0.3)
        + 0.25 * np.isnan(open_rate)
        + (realtime_logit(x) if "session_count_last_1h" in x else 0.0)
    )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def simulate(
    *,
    n_customers: int,
    n_days: int,
    seed: int,
    end_date: date,
    drift: bool = False,
    progress: Callable[[float], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Simulate the world; returns (customers, customer_stats, labels, customer_activity) frames."""
    if n_customers < 1 or n_days < _LABEL_HORIZON_DAYS + 7:
        raise ValueError(f"need n_customers >= 1 and n_days >= {_LABEL_HORIZON_DAYS + 7}")
    p = DRIFTED if drift else NORMAL
    rng = np.random.default_rng(seed)
    n, total = n_customers, _BURN_IN_DAYS + n_days

    # ---- customers ---------------------------------------------------------------------------
    # signup day on the simulation clock (0 = start of burn-in); ~20% sign up inside the window
    new = rng.random(n) < 0.2
    signup = np.where(
        new,
        rng.integers(_BURN_IN_DAYS, total - 7, n),
        _BURN_IN_DAYS - rng.integers(60, 1500, n),
    )
    base_engagement = rng.normal(0.0, 0.8, n)
    order_value = np.exp(rng.normal(np.log(45.0), 0.45, n)) * p.order_value_factor
    ticket_propensity = rng.normal(0.0, 0.5, n)
    breadth = rng.integers(2, 13, n).astype(np.float64)
    consent = rng.random(n) < 0.9
    open_affinity = rng.normal(0.0, 0.5, n)
    country = rng.choice(
        np.array(["US", "DE", "GB", "FR", "NL", "ES"]), n, p=[0.4, 0.2, 0.15, 0.1, 0.08, 0.07]
    )
    channel = rng.choice(
        np.array(["organic", "paid_search", "social", "referral"]), n, p=[0.4, 0.3, 0.2, 0.1]
    )

    # each labelled customer is observed once, inside the window, at least 7 days after signup
    window_start = _BURN_IN_DAYS
    lo = np.maximum(window_start, signup + 7)
    hi = total - _LABEL_HORIZON_DAYS  # exclusive: the 30-day outcome must be observable
    labelled = lo < hi
    obs_day = np.where(labelled, lo + (rng.random(n) * np.maximum(hi - lo, 1)).astype(np.int64), -1)
    obs_second = rng.integers(1, 86_400, n)  # after the 00:00 snapshot of the same day
    label_noise = rng.normal(0.0, 0.6, n)
    label_draw = rng.random(n)
    churn_lag = rng.integers(0, 8, n)
    # session bursts before each label time: their own stream, so the snapshots stay as they were
    act_rng = np.random.default_rng([seed, 1])
    obs_s = obs_day * 86_400 + obs_second
    burst = _activity(act_rng, np.flatnonzero(labelled), obs_s[labelled], base_engagement[labelled], 0.0)
    seen = _visible_at(burst, n, obs_s)

    # ---- day-by-day simulation -----------------------------------------------------------------
    wobble = rng.normal(0.0, 0.35, n)
    last_order = signup - 1 - rng.integers(0, 40, n)  # a last order before the window (or signup)
    last_order = np.where(signup >= _BURN_IN_DAYS, signup, last_order)
    orders_hist = np.zeros((total, n), dtype=np.float32)
    value_hist = np.zeros((total, n), dtype=np.float32)
    ticket_hist = np.zeros((total, n), dtype=np.float32)
    churned = np.zeros(n, dtype=bool)
    churn_from = np.full(n, total + 1)
    label = np.full(n, -1, dtype=np.int64)
    out = {f: np.full((n_days, n), np.nan, dtype=np.float64) for f in FEATURES}

    for t in range(total):
        alive = signup <= t
        wobble = 0.96 * wobble + rng.normal(0.0, 0.1, n)
        engagement = base_engagement + wobble
        gone = t >= churn_from
        rate = np.exp(p.order_rate_intercept + 0.9 * engagement) * np.where(gone, 0.03, 1.0) * alive
        orders = rng.poisson(rate)
        values = orders * order_value * np.exp(rng.normal(0.0, 0.25, n))
        tickets = rng.poisson(np.exp(p.ticket_rate_intercept - 0.6 * engagement + ticket_propensity) * alive)
        orders_hist[t], value_hist[t], ticket_hist[t] = orders, values, tickets
        last_order = np.where(orders > 0, t, last_order)
        if t < window_start:
            continue

        d = t - window_start
        cnt90 = orders_hist[max(0, t - 89) : t + 1].sum(axis=0).astype(np.float64)
        val90 = value_hist[max(0, t - 89) : t + 1].sum(axis=0).astype(np.float64)
        tick30 = ticket_hist[max(0, t - 29) : t + 1].sum(axis=0).astype(np.float64)
        open_rate = _sigmoid(-0.9 + 0.8 * engagement + open_affinity + 4.0 * p.open_rate_shift)
        open_rate = np.clip(open_rate * np.where(gone, 0.3, 1.0) + rng.normal(0.0, 0.04, n), 0.0, 1.0)
        snap = {
            "days_since_last_order": (t - last_order).astype(np.float64),
            "order_count_90d": cnt90,
            "avg_order_value_usd": np.where(cnt90 > 0, np.round(val90 / np.maximum(cnt90, 1), 2), np.nan),
            "support_tickets_30d": tick30,
            "product_category_diversity": np.round(breadth * (1.0 - (1.0 - 1.0 / breadth) ** cnt90)),
            "days_since_signup": (t - signup).astype(np.float64),
            "email_open_rate_30d": np.where(consent, np.round(open_rate, 3), np.nan),
        }
        # pipeline gaps: a few values go missing on random days
        for f in ("days_since_last_order", "support_tickets_30d", "email_open_rate_30d"):
            snap[f] = np.where(rng.random(n) < 0.01, np.nan, snap[f])
        for f in FEATURES:
            out[f][d] = np.where(alive, snap[f], np.nan)

        # the label time falls after today's 00:00 snapshot: today's snapshot is what is visible
        due = obs_day == t
        if due.any():
            logit = ground_truth_logit({**{f: snap[f] for f in FEATURES}, **seen}) + label_noise
            hit = due & (label_draw < _sigmoid(logit))
            label = np.where(due, hit.astype(np.int64), label)
            churned |= hit
            churn_from = np.where(hit, t + 1 + churn_lag, churn_from)
        if progress is not None:
            progress((d + 1) / n_days)

    # ---- tables --------------------------------------------------------------------------------
    day0 = datetime.combine(end_date, datetime.min.time(), tzinfo=UTC) - timedelta(days=total - 1)

    def stamp(days: np.ndarray) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(day0 + pd.to_timedelta(days, unit="D")).as_unit("us")

    ids = np.array([f"cust-{i:06d}" for i in range(n)])
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_date": stamp(signup),
            "country": country,
            "acquisition_channel": channel,
            "email_consent": consent,
        }
    )
    customers["created"] = customers["signup_date"]

    day_idx, cust_idx = np.nonzero(signup[None, :] <= (np.arange(n_days)[:, None] + window_start))
    ts = stamp(day_idx + window_start)
    stats = pd.DataFrame({"customer_id": ids[cust_idx], "event_timestamp": ts})
    for f in FEATURES:
        stats[f] = out[f][day_idx, cust_idx]
    stats["created"] = ts + pd.Timedelta(minutes=30)

    # the final burst: three hours of activity ending FINAL_BURST_GAP_S before the last snapshot
    alive_end = signup <= total - 1
    end_s = np.full(n, (total - 1) * 86_400 - FINAL_BURST_GAP_S)
    idx = np.flatnonzero(alive_end)
    recent = _activity(act_rng, idx, end_s[idx], base_engagement[idx], 0.8 * churned[idx])
    events = {k: np.concatenate([burst[k], recent[k]]) for k in burst}
    order = np.lexsort((events["customer"], events["t"]))
    t0 = pd.Timestamp(day0)
    activity = pd.DataFrame(
        {
            "customer_id": ids[events["customer"][order]],
            "event_timestamp": (t0 + pd.to_timedelta(events["t"][order], unit="s")).as_unit("us"),
            "session_count_last_1h": events["session_count_last_1h"][order].astype(np.int64),
            "cart_value_usd": events["cart_value_usd"][order],
            "last_page_viewed": events["last_page_viewed"][order].astype(object),
        }
    )
    activity["event_timestamp"] = activity["event_timestamp"].astype("datetime64[us, UTC]")

    li = np.nonzero(labelled)[0]
    labels = pd.DataFrame(
        {
            "customer_id": ids[li],
            "event_timestamp": (stamp(obs_day[li]) + pd.to_timedelta(obs_second[li], unit="s")).as_unit("us"),
            LABEL: label[li],
        }
    ).sort_values(["event_timestamp", "customer_id"], ignore_index=True)
    return customers, stats, labels, activity


def final_burst(activity: pd.DataFrame, world_end: pd.Timestamp) -> pd.DataFrame:
    """The session events of the world's final burst (the three hours before ``world_end`` minus
    ``FINAL_BURST_GAP_S``); ``world_end`` is the newest ``customer_stats`` snapshot time."""
    end = world_end - pd.Timedelta(seconds=FINAL_BURST_GAP_S)
    ts = activity["event_timestamp"]
    return activity[(ts > end - pd.Timedelta(hours=3)) & (ts <= end)]


def live_activity(activity: pd.DataFrame, world_end: pd.Timestamp) -> pd.DataFrame:
    """What a live stream would serve at the final burst's end: each customer's latest event of
    its last hour (``customer_id`` + the real-time columns; customers without one are absent)."""
    burst = final_burst(activity, world_end)
    last_hour = burst[
        burst["event_timestamp"] > burst["event_timestamp"].max() - pd.Timedelta(seconds=REALTIME_TTL_S)
    ]
    latest = last_hour.sort_values("event_timestamp").groupby("customer_id").tail(1)
    return latest.drop(columns="event_timestamp").reset_index(drop=True)


def _activity(
    rng: np.random.Generator,
    customers: np.ndarray,
    until_s: np.ndarray,
    engagement: np.ndarray,
    intent_shift: Any,
) -> dict[str, np.ndarray]:
    """Session events of ``customers`` in the three hours before ``until_s`` (simulation seconds).

    Sessions arrive at a rate rising with engagement; each event carries the sessions of the last
    hour (itself included), the cart value and the page, both shaped by a latent churn intent.
    """
    m = len(customers)
    intent = rng.normal(0.0, 1.0, m) + intent_shift
    counts = rng.poisson(np.exp(0.3 + 0.5 * engagement))
    who = np.repeat(np.arange(m), counts)
    t = np.repeat(until_s, counts) - rng.integers(1, 3 * 3600, len(who))
    key = who.astype(np.int64) * 10**10 + t
    order = np.argsort(key, kind="stable")
    who, t, key = who[order], t[order], key[order]
    last_hour = np.arange(len(key)) + 1 - np.searchsorted(key, key - REALTIME_TTL_S, side="right")
    logits = _PAGE_BASE[None, :] + _PAGE_INTENT[None, :] * intent[who][:, None]
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    page_idx = (probs.cumsum(axis=1) < rng.random(len(who))[:, None]).sum(axis=1)
    has_cart = rng.random(len(who)) < 1.0 / (1.0 + np.exp(0.3 + 0.8 * intent[who]))
    cart = np.where(has_cart, np.round(np.exp(rng.normal(np.log(60.0), 0.6, len(who))), 2), 0.0)
    return {
        "customer": customers[who],
        "t": t,
        "session_count_last_1h": last_hour.astype(np.float64),
        "cart_value_usd": cart,
        "last_page_viewed": np.array(PAGES, dtype=object)[page_idx],
    }


def _visible_at(events: dict[str, np.ndarray], n: int, at_s: np.ndarray) -> dict[str, np.ndarray]:
    """Per customer: the latest event at or before ``at_s`` and within the TTL (NaN/None otherwise)."""
    out: dict[str, np.ndarray] = {
        "session_count_last_1h": np.full(n, np.nan),
        "cart_value_usd": np.full(n, np.nan),
        "last_page_viewed": np.full(n, None, dtype=object),
    }
    c, t = events["customer"], events["t"]
    ok = (t <= at_s[c]) & (t > at_s[c] - REALTIME_TTL_S)
    for i in np.flatnonzero(ok):  # events are sorted by (customer, time): the last one wins
        for k in out:
            out[k][c[i]] = events[k][i]
    return out


def generate_world(
    out_dir: Path,
    *,
    n_customers: int,
    n_days: int,
    seed: int,
    end_date: date | None = None,
    drift: bool = False,
    progress: Callable[[float], None] | None = None,
) -> GeneratedData:
    """Simulate and write ``customers``, ``customer_stats`` and ``labels`` parquet files."""
    started = time.perf_counter()
    end_date = end_date or datetime.now(UTC).date()
    try:  # fail on an unusable folder before the simulation, not after it
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot write the data folder {out_dir}: {e.strerror or e}") from e
    customers, stats, labels, activity = simulate(
        n_customers=n_customers, n_days=n_days, seed=seed, end_date=end_date, drift=drift, progress=progress
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = (
        (customers, CUSTOMERS_FILE),
        (stats, STATS_FILE),
        (labels, LABELS_FILE),
        (activity, ACTIVITY_FILE),
    )
    for frame, name in frames:
        tmp = out_dir / f".{name}.tmp"
        frame.to_parquet(tmp, index=False)
        tmp.replace(out_dir / name)
    result = GeneratedData(
        data_dir=out_dir,
        n_customers=n_customers,
        n_snapshots=len(stats),
        n_events=len(activity),
        n_labels=len(labels),
        churn_rate=float(labels[LABEL].mean()) if len(labels) else 0.0,
        start=stats["event_timestamp"].min().to_pydatetime(),
        end=stats["event_timestamp"].max().to_pydatetime(),
        drift=drift,
        elapsed_s=time.perf_counter() - started,
    )
    log.info(
        "generated world dir=%s customers=%d snapshots=%d labels=%d churn_rate=%.3f drift=%s",
        out_dir,
        n_customers,
        result.n_snapshots,
        result.n_labels,
        result.churn_rate,
        drift,
    )
    return result
