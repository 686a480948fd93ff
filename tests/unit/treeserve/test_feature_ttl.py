"""Values older than their FeatureView's TTL are missing; every stored value's age is reported."""

from __future__ import annotations

import time

import numpy as np

from treeserve.features.source import ServiceLayout, ViewLayout, expire

LAYOUT = ServiceLayout(
    views=(ViewLayout("stats", 90 * 86400.0, (0, 1)), ViewLayout("realtime", 3600.0, (2, 3)))
)


def test_values_past_their_views_ttl_become_missing_and_ages_are_kept() -> None:
    now = time.time()
    x = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, np.nan, np.nan]])
    ts = {
        "stats": np.array([now - 86400, now - 86400, now - 100 * 86400]),
        "realtime": np.array([now - 60, now - 7200, np.nan]),
    }
    rows = expire(LAYOUT, x, ts)
    np.testing.assert_array_equal(rows.values[0], [1.0, 2.0, 3.0, 4.0])  # both fresh
    np.testing.assert_array_equal(rows.values[1], [5.0, 6.0, np.nan, np.nan])  # realtime 2 h old
    assert np.isnan(rows.values[2]).all()  # stats 100 days old, realtime never stored
    assert 55 < rows.ages_s["realtime"][0] < 120 and 7100 < rows.ages_s["realtime"][1] < 7300
    assert np.isnan(rows.ages_s["realtime"][2])  # nothing stored: no age
    assert rows.ages_s["stats"][2] > 99 * 86400  # expired values still report their age


def test_a_view_without_ttl_never_expires() -> None:
    layout = ServiceLayout(views=(ViewLayout("forever", 0.0, (0,)),))
    rows = expire(layout, np.array([[1.0]]), {"forever": np.array([time.time() - 10 * 365 * 86400])})
    assert rows.values[0, 0] == 1.0
