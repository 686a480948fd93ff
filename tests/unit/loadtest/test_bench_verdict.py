"""``make bench`` fails, naming the reason, when a headline figure cannot be measured."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from loadtest import bench


def test_missing_load_generators_stop_the_run_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(bench.shutil, "which", lambda cmd: None if cmd == "h2load" else f"/usr/bin/{cmd}")

    def must_not_run(**_: Any) -> dict[str, Any]:
        raise AssertionError("the suite ran without its load generators")

    monkeypatch.setattr(bench, "run_suite", must_not_run)
    assert bench.main(["--only", "gateway", "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "h2load not found on PATH" in err and "apt-get install -y nghttp2-client" in err
    assert "wrk" not in err.split("install")[0]


def test_benches_without_load_generators_do_not_need_them() -> None:
    assert bench.missing_load_generators(["export", "promotion"], which=lambda _: None) == ""


def test_an_unmeasured_headline_figure_fails_the_run_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = {key: 1.0 for key in bench.STABLE_KEYS}
    doc["promotion_latency_poll_s"] = None
    doc["not_measured"] = {"promotion_latency_poll_s": "TimeoutError: version 2 never became READY"}
    monkeypatch.setattr(bench, "run_suite", lambda **_: doc)
    assert bench.main(["--only", "promotion", "--out-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert re.search(r"promotion_latency_poll_s +not measured", captured.out)
    assert "promotion_latency_poll_s: TimeoutError: version 2 never became READY" in captured.err


def test_a_complete_run_exits_0(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc: dict[str, Any] = {key: 1.0 for key in bench.STABLE_KEYS}
    monkeypatch.setattr(bench, "run_suite", lambda **_: doc)
    monkeypatch.setattr(bench.shutil, "which", lambda cmd: f"/usr/bin/{cmd}")
    assert bench.main(["--out-dir", str(tmp_path)]) == 0


def test_headlines_of_benches_not_selected_are_not_required() -> None:
    doc = {key: None for key in bench.STABLE_KEYS}
    assert bench.unmeasured_headlines(doc, ["export"]) == []
    assert [line.split(":")[0] for line in bench.unmeasured_headlines(doc, ["triton"])] == [
        "triton_dynamic_batching_speedup_c32"
    ]
