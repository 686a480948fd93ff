"""The client side of ``POST /v1/features/push``: rows from files, sent in batches.

``read_rows(path)`` reads push rows from CSV, JSON lines (``.jsonl``/``.ndjson``, or ``-`` for
stdin), a JSON array (``.json``) or Parquet, in batches; ``PushClient.push(rows)`` sends one batch
and returns the gateway's answer, raising ``PushRejectedError`` with the gateway's message on a
4xx answer and ``ServiceUnavailableError`` when the gateway cannot be reached or answers 5xx.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from treeserve.errors import ConfigError, ServiceUnavailableError
from treeserve.features.push import PushRejectedError, rows_from_records

PUSH_PATH = "/v1/features/push"


def read_rows(source: str, *, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Batches of rows from ``source`` (a file path, or ``-``: JSON lines on stdin)."""
    if batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if source == "-":
        yield from _json_lines(sys.stdin, "stdin", batch_size)
        return
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"{path} is not a file (give CSV, JSON lines, JSON or Parquet, or - for stdin)")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with path.open() as f:
            yield from _json_lines(f, str(path), batch_size)
        return
    if suffix == ".json":
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not JSON: {e.msg} (line {e.lineno})") from e
        if not isinstance(rows, list):
            raise ConfigError(f"{path} must hold a JSON array of row objects")
        for i in range(0, len(rows), batch_size):
            yield rows[i : i + batch_size]
        return
    yield from _frames(path, suffix, batch_size)


def _frames(path: Path, suffix: str, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    import pandas as pd

    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix == ".csv":
            frame = pd.read_csv(path, keep_default_na=True)
        else:
            raise ConfigError(f"{path}: unknown format {suffix!r} (use .csv, .jsonl, .json or .parquet)")
    except (ValueError, OSError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path} cannot be read: {str(e).splitlines()[0]}") from e
    records = frame.to_dict("records")
    for i in range(0, len(records), batch_size):
        yield rows_from_records(records[i : i + batch_size])


def _json_lines(f: IO[str] | io.TextIOBase, name: str, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for n, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{name} line {n} is not JSON: {e.msg}") from e
        batch.append(row)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


class PushClient:
    """Sends row batches to a gateway's push endpoint (one HTTP connection, reused)."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)

    def push(self, rows: list[dict[str, Any]], *, push_source: str | None = None) -> dict[str, Any]:
        """Send one batch; the gateway's JSON answer."""
        import httpx

        body: dict[str, Any] = {"rows": rows}
        if push_source:
            body["push_source"] = push_source
        try:
            r = self._client.post(self.url + PUSH_PATH, json=body)
        except httpx.HTTPError as e:
            raise ServiceUnavailableError(f"the gateway at {self.url} cannot be reached: {e}") from e
        try:
            answer = r.json()
        except ValueError:
            answer = {"message": r.text[:200]}
        if r.status_code >= 500:
            raise ServiceUnavailableError(
                f"the gateway answered {r.status_code}: {answer.get('message', r.reason_phrase)}"
            )
        if r.status_code >= 400:
            raise PushRejectedError(
                f"the gateway refused the push ({r.status_code}): {answer.get('message')}"
            )
        return dict(answer)

    def close(self) -> None:
        """Close the connection."""
        self._client.close()
