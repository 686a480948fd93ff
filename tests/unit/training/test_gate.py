"""The promotion gate's checks (pure logic, no MLflow)."""

from __future__ import annotations

import numpy as np

from training.gate import GateResult, evaluate

rng = np.random.default_rng(0)
LABELS = rng.integers(0, 2, 2000)
GOOD = np.clip(0.5 * LABELS + rng.normal(0.25, 0.2, 2000), 0, 1)  # ranks well
NOISE = rng.random(2000)  # ranks at chance


def _by_name(checks):
    return {c.name: c for c in checks}


def test_good_candidate_without_champion_passes() -> None:
    checks, auc, champ = evaluate(
        GOOD, LABELS, champion_scores=None, champion_version=None, auc_tolerance=0.01, min_std=0.01
    )
    assert all(c.passed for c in checks)
    assert auc is not None and auc > 0.8 and champ is None


def test_worse_than_champion_beyond_tolerance_fails_with_reason() -> None:
    checks, auc, champ = evaluate(
        NOISE, LABELS, champion_scores=GOOD, champion_version="3", auc_tolerance=0.01, min_std=0.01
    )
    vs = _by_name(checks)["vs_champion"]
    assert not vs.passed
    assert "champion v3" in vs.detail
    assert auc < champ - 0.01


def test_slightly_worse_within_tolerance_passes() -> None:
    worse = np.clip(GOOD + rng.normal(0, 0.02, 2000), 0, 1)
    checks, auc, champ = evaluate(
        worse, LABELS, champion_scores=GOOD, champion_version="1", auc_tolerance=0.02, min_std=0.01
    )
    assert auc <= champ + 1e-9
    assert _by_name(checks)["vs_champion"].passed


def test_degenerate_predictions_fail() -> None:
    flat = np.full(2000, 0.2) + rng.normal(0, 0.001, 2000)
    checks, _, _ = evaluate(
        flat, LABELS, champion_scores=None, champion_version=None, auc_tolerance=0.01, min_std=0.01
    )
    assert not _by_name(checks)["not_degenerate"].passed


def test_out_of_range_or_nan_predictions_fail() -> None:
    for bad in (GOOD * 1.5, np.where(LABELS == 1, np.nan, GOOD)):
        checks, _, _ = evaluate(
            bad, LABELS, champion_scores=None, champion_version=None, auc_tolerance=0.01, min_std=0.01
        )
        assert not _by_name(checks)["score_range"].passed


def test_result_reason_names_failed_checks() -> None:
    checks, _, _ = evaluate(
        NOISE, LABELS, champion_scores=GOOD, champion_version="2", auc_tolerance=0.0, min_std=0.01
    )
    result = GateResult("m", "4", "champion", passed=False, forced=False, alias_moved=False, checks=checks)
    assert result.reason.startswith("vs_champion: roc_auc")


def test_a_champion_that_cannot_score_the_holdout_gives_one_failing_verdict_naming_why() -> None:
    checks, auc, champ = evaluate(
        GOOD,
        LABELS,
        champion_scores=None,
        champion_version="3",
        auc_tolerance=0.01,
        min_std=0.01,
        champion_unscorable="the held-out rows lack its features ['tenure_days']",
    )
    vs = [c for c in checks if c.name == "vs_champion"]
    assert len(vs) == 1, vs
    assert not vs[0].passed
    assert "champion v3 cannot score" in vs[0].detail and "tenure_days" in vs[0].detail
    result = GateResult("m", "4", "champion", False, False, False, checks, auc, "3", champ)
    assert "no other champion" not in result.reason and "cannot score" in result.reason
