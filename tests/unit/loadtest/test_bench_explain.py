"""The explain bench's headline figures: owned by the explain section, a missing one fails make bench."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest import bench
from loadtest.bench_explain import _executions
from loadtest.bench_report import KEY_OWNER, STABLE_KEYS, build_json

KEYS = ("explain_p99_ms_c8", "predict_rps_ratio_with_explain_installed")


def test_explain_keys_are_headline_figures_of_the_explain_bench() -> None:
    assert "explain" in bench.BENCHES and "explain" in bench.NEEDS_WORLD
    for key in KEYS:
        assert key in STABLE_KEYS and KEY_OWNER[key] == "explain"


def test_an_explain_bench_that_could_not_measure_fails_the_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = build_json(
        {"explain": {"status": "not measured", "reason": "wrk is not installed"}},
        machine={},
        generated_at="now",
        command="make bench",
        wall_time_s=1.0,
    )
    assert values.get("explain_p99_ms_c8") is None
    assert "wrk is not installed" in values["not_measured"]["explain_p99_ms_c8"]
    monkeypatch.setattr(bench, "run_suite", lambda **_: values)
    assert bench.main(["--only", "explain", "--out-dir", str(tmp_path)]) == 1


def test_rows_per_execution_come_from_tritons_statistics() -> None:
    stats = {
        "model_stats": [
            {"inference_count": 120, "execution_count": 30},
            {"inference_count": 8, "execution_count": 2},
        ]
    }
    assert _executions(stats) == (128, 32)
    assert _executions({}) == (0, 0)
