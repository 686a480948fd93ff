"""Calibration at default settings: no false alarm on same-world traffic, the drift mode is caught.

Windows are realistic: 500 rows (the minimum the job accepts) and 2000 rows, reference = 3000
label-time training rows, current = the newest snapshot of random customers, as the gateway sees.
"""

from __future__ import annotations

import pytest

from drift.evaluate import DriftConfig, evaluate
from drift.settings import DriftSettings
from tests.unit.drift.worlds import serving_window, training_reference
from training.data import DRIFTED_FEATURES, FEATURES

SETTINGS = DriftSettings()
CFG = DriftConfig.from_settings(SETTINGS)
REFERENCE_SEED = 1


@pytest.fixture(scope="module")
def reference():
    return training_reference(REFERENCE_SEED)


@pytest.mark.parametrize("rows", [500, 2000])
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_same_world_traffic_stays_under_the_threshold(reference, seed: int, rows: int) -> None:
    ev = evaluate(reference, serving_window(seed, rows), list(FEATURES), CFG)
    assert ev.drift_share < SETTINGS.share_threshold, [(c.column, round(c.score, 3)) for c in ev.columns]


@pytest.mark.parametrize("rows", [500, 2000])
@pytest.mark.parametrize("seed", [2])
def test_generator_drift_mode_is_detected_naming_the_shifted_columns(reference, seed: int, rows: int) -> None:
    ev = evaluate(reference, serving_window(seed, rows, drift=True), list(FEATURES), CFG)
    drifted = {c.column for c in ev.columns if c.drifted}
    assert ev.drift_share >= SETTINGS.share_threshold
    assert set(DRIFTED_FEATURES) <= drifted
    assert "days_since_signup" not in drifted  # the generator does not move tenure
    assert all(c.method == "wasserstein" for c in ev.columns)


def test_held_out_label_time_rows_of_another_world_do_not_drift(reference) -> None:
    other = training_reference(7, rows=1000)
    ev = evaluate(reference, other, list(FEATURES), CFG)
    assert not [c.column for c in ev.columns if c.drifted]
