"""Status file, lock, staging clean-up and the canary comparison."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exporter.canary import compare_outputs
from exporter.sync.adapters import cleanup_staging
from exporter.sync.decide import choose_routing
from exporter.sync.errors import SyncBusyError
from exporter.sync.lock import sync_lock
from exporter.sync.status import ModelStatus, SyncStatus, VersionFailure, read_status, write_status


def test_status_round_trip_and_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "s" / "status.json"
    assert read_status(path).result == "never"
    st = SyncStatus(
        updated_at=1.0,
        result="degraded",
        models={
            "m": ModelStatus(
                routing={"champion": "1"}, failures={"2": VersionFailure("validation", "parity", 3.0)}
            )
        },
    )
    write_status(path, st)
    back = read_status(path)
    assert back.models["m"].failures["2"].reason == "validation"
    assert back.models["m"].routing == {"champion": "1"}
    path.write_text("{broken")
    assert read_status(path).result == "never"


def test_second_sync_is_refused_while_the_lock_is_held(tmp_path: Path) -> None:
    lock = tmp_path / "sync.lock"
    code = (
        "import sys, time; from exporter.sync.lock import sync_lock; from pathlib import Path\n"
        "with sync_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(30)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(SyncBusyError, match="another sync is running"), sync_lock(lock, timeout_s=0):
            pass
    finally:
        holder.kill()
        holder.wait()
    with sync_lock(lock, timeout_s=0):
        pass


def test_cleanup_removes_dead_owners_only(tmp_path: Path) -> None:
    staging = tmp_path / ".staging"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (staging / f"churn-prediction-3-{dead.pid}-abcd1234").mkdir(parents=True)
    (staging / f"churn-prediction-4-{os.getpid()}-abcd1234").mkdir()
    (staging / "churn-prediction-2-removed-abcd1234").mkdir()
    assert cleanup_staging(tmp_path) == 2
    assert [p.name for p in staging.iterdir()] == [f"churn-prediction-4-{os.getpid()}-abcd1234"]


def test_compare_outputs() -> None:
    want = {"probabilities": np.array([[0.2, 0.8]], np.float32), "label": np.array([[1]], np.int64)}
    assert compare_outputs(want, want, atol=1e-5, rtol=0)[0] is None
    off = {"probabilities": np.array([[0.3, 0.7]], np.float32), "label": np.array([[1]], np.int64)}
    assert "probabilities" in (compare_outputs(off, want, atol=1e-5, rtol=0)[0] or "")
    assert "label" in (compare_outputs({**want, "label": np.array([[0]])}, want, atol=1e-5, rtol=0)[0] or "")


def test_routing_never_switches_to_a_failed_version() -> None:
    fail = {"3": VersionFailure("validation", "parity", 0.0)}
    assert choose_routing({"champion": "3"}, {"champion": "2"}, {"2", "3"}, fail) == {"champion": "2"}
    assert choose_routing({"champion": "3"}, {"champion": "2"}, {"2", "3"}, {}) == {"champion": "3"}
    # deleted challenger alias stops; deleted champion alias keeps serving
    assert choose_routing({}, {"champion": "2", "challenger": "4"}, {"2", "4"}, {}) == {"champion": "2"}
