"""One logging set-up: structured fields survive the plain format; log_json gives JSON lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from treeserve.logs import JsonFormatter, PlainFormatter

ROOT = Path(__file__).resolve().parents[3]

# What an entry point does: build settings through the CLI kit, then a library module logs.
_PROGRAM = """
import logging
from treeserve_app import clikit
clikit.settings()
logging.getLogger("exporter.validate").info("parity ok", extra={"model": "churn", "version": "3"})
"""


def _run(tmp_path: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TREESERVE_")}
    clean.update(TREESERVE_HOME=str(tmp_path), PYTHONPATH=str(ROOT), **env)
    proc = subprocess.run(
        [sys.executable, "-c", _PROGRAM], env=clean, capture_output=True, text=True, check=True, cwd=tmp_path
    )
    return proc.stderr.strip()


def test_the_plain_format_keeps_model_and_version(tmp_path: Path) -> None:
    line = _run(tmp_path)
    assert line.endswith("INFO exporter.validate parity ok model=churn version=3"), line


def test_log_json_gives_one_json_object_per_line(tmp_path: Path) -> None:
    doc = json.loads(_run(tmp_path, TREESERVE_LOG_JSON="true"))
    assert doc["message"] == "parity ok" and doc["logger"] == "exporter.validate"
    assert (doc["model"], doc["version"], doc["level"]) == ("churn", "3", "INFO")


def test_values_with_spaces_are_quoted_and_tracebacks_stay_below() -> None:
    import logging

    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    record.__dict__.update(reason="two words", versions=[1, 2])
    first, *rest = PlainFormatter().format(record).splitlines()
    assert first.endswith('failed reason="two words" versions=[1,2]')
    assert rest[-1] == "ValueError: bad"
    assert json.loads(JsonFormatter().format(record))["versions"] == [1, 2]
