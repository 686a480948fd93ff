"""Commands that only talk to the registry answer without loading MLflow, pandas or Feast."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("mlflow", "pandas", "feast", "xgboost")

PROGRAM = """
import atexit, sys
from treeserve_app.cli import main
atexit.register(lambda: print("loaded:", *sorted(m for m in {heavy!r} if m in sys.modules)))
sys.argv = ["treeserve", *{args!r}]
main()
"""


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["promote", "no-such-model", "1"], "error: registered model 'no-such-model' not found"),
        (["rollback", "no-such-model"], "error: registered model 'no-such-model' not found"),
    ],
)
def test_a_missing_model_is_named_without_heavy_imports(tmp_path: Path, args: list[str], error: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TREESERVE_", "MLFLOW_"))}
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(heavy=HEAVY, args=args)],
        env={**env, "TREESERVE_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip() == error
    assert out.stdout.strip() == "loaded:"
    assert not (tmp_path / "var" / "mlflow").exists()  # a lookup creates no database
