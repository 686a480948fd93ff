"""One logging set-up for every treeserve entry point (CLI, gateway workers, sync, benchmarks).

Modules log with structured fields, ``log.info("parity ok", extra={"model": m, "version": v})``.
The plain formatter (default, for people) appends those fields as ``key=value``; with
``log_json`` (``TREESERVE_LOG_JSON=true``, services in production) each line is one JSON object
with ``ts``, ``level``, ``logger``, ``message`` and the same fields.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from treeserve.quiet import OWN_PACKAGES

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)
"""Attributes every LogRecord has: anything else on a record came from ``extra=``."""

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call passed with ``extra=``, in the order given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class PlainFormatter(logging.Formatter):
    """``<time> <level> <logger> <message> key=value ...`` (values with spaces are quoted)."""

    def __init__(self) -> None:
        super().__init__(PLAIN_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The standard line with the record's extra fields appended."""
        line = super().format(record)
        fields = extra_fields(record)
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        pairs = " ".join(f"{k}={_plain(v)}" for k, v in fields.items())
        return f"{head} {pairs}{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the extra fields, exc (if any)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in extra_fields(record).items():
            doc.setdefault(k, v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the given stream, else to whatever ``sys.stderr`` is at the time of the record."""

    def __init__(self, stream: IO[str] | None) -> None:
        super().__init__(stream)
        self._fixed = stream

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        self._fixed = value


class _ThirdPartyFilter(logging.Filter):
    """Lets a library's record through only at ``level`` or above; ours pass at any level."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self._level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self._level or record.name.split(".")[0] in OWN_PACKAGES


def setup_logging(
    level: str = "INFO",
    *,
    json_lines: bool = False,
    stream: IO[str] | None = None,
    third_parties: str | None = None,
) -> None:
    """Send every logger's records to ``stream`` (default stderr) in the chosen format.

    ``third_parties``: the lowest level shown for loggers outside treeserve's packages (None: same
    as ``level``), so a command shows its own warnings without a library's. Calling it again
    replaces the handler it installed (never one someone else installed).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _Handler):
            root.removeHandler(handler)
    handler = _Handler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    if third_parties is not None:
        handler.addFilter(_ThirdPartyFilter(logging.getLevelName(third_parties.upper())))
    root.addHandler(handler)
    root.setLevel(level.upper())


def _plain(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))
    return json.dumps(text) if (not text or any(c.isspace() for c in text)) else text
