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
    line = _run(tmp_path, TREESERVE_LOG_LEVEL="INFO")
    assert line.endswith("INFO exporter.validate parity ok model=churn version=3"), line


def test_log_json_gives_one_json_object_per_line(tmp_path: Path) -> None:
    doc = json.loads(_run(tmp_path, TREESERVE_LOG_JSON="true", TREESERVE_LOG_LEVEL="INFO"))
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


def test_a_command_without_verbose_shows_its_own_warnings_only(tmp_path: Path) -> None:
    # INFO is below the CLI's default level; a library's WARNING is below what libraries may show.
    program = _PROGRAM + (
        'logging.getLogger("exporter.sync").warning("ours")\n'
        'logging.getLogger("mlflow.store").warning("theirs")\n'
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TREESERVE_")}
    clean.update(TREESERVE_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    err = subprocess.run(
        [sys.executable, "-c", program], env=clean, capture_output=True, text=True, check=True, cwd=tmp_path
    ).stderr
    assert "WARNING exporter.sync ours" in err
    assert "parity ok" not in err and "theirs" not in err


def test_third_party_records_below_their_level_are_dropped() -> None:
    import io
    import logging

    from treeserve.logs import setup_logging

    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    try:
        setup_logging("INFO", stream=out, third_parties="ERROR")
        logging.getLogger("training.gate").info("gate passed")
        logging.getLogger("somelib.migration").info("Context impl SQLiteImpl.")
        logging.getLogger("somelib.store").error("database locked")
    finally:
        setup_logging(logging.getLevelName(level))
    text = out.getvalue()
    assert "gate passed" in text and "database locked" in text
    assert "SQLiteImpl" not in text
