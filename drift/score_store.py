"""The batch score table: one partition per (model, score_date), replaced on rerun, never duplicated.

Columns: ``entity`` str, ``score`` float64, ``score_decile`` int (10 = highest scores), ``model``
str, ``model_version`` str, ``score_date`` date, ``reasons`` str or null (JSON list of the top
reasons, written by ``treeserve score --explain``; tables from before it gain the column). Sinks: DuckDB file (default), Parquet partitions,
PostgreSQL. Each replaces a partition atomically: DELETE + INSERT in one transaction (DuckDB,
PostgreSQL) or a new file renamed over the old one (Parquet).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from drift.settings import DriftJobConfig
from treeserve.errors import ConfigError, ServiceUnavailableError

log = logging.getLogger(__name__)

COLUMNS = ("entity", "score", "score_decile", "model", "model_version", "score_date", "reasons")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ConfigError(f"invalid table name {name!r}: letters, digits and _ only")
    return name


class ScoreSink(Protocol):
    """Where batch scores are kept."""

    def replace_partition(self, frame: pd.DataFrame, model: str, score_date: date) -> int:
        """Replace the rows of (model, score_date) with ``frame``; returns rows written."""
        ...

    def read_partition(self, model: str, score_date: date) -> pd.DataFrame:
        """The rows of (model, score_date) (empty frame if none)."""
        ...

    def dates(self, model: str) -> list[date]:
        """Score dates present for ``model``, oldest first."""
        ...

    def describe(self) -> str:
        """Where the table lives, for messages."""
        ...


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity": pd.Series(dtype="object"),
            "score": pd.Series(dtype="float64"),
            "score_decile": pd.Series(dtype="int64"),
            "model": pd.Series(dtype="object"),
            "model_version": pd.Series(dtype="object"),
            "score_date": pd.Series(dtype="object"),
            "reasons": pd.Series(dtype="object"),
        }
    )


def _with_reasons(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``reasons`` column (null when the scores were written without reasons)."""
    return frame if "reasons" in frame.columns else frame.assign(reasons=None)


class DuckDBScoreSink:
    """A DuckDB database file with one table."""

    def __init__(self, path: Path, table: str) -> None:
        self.path = path
        self.table = _check_ident(table)

    def describe(self) -> str:
        return f"duckdb:{self.path}#{self.table}"

    def _connect(self) -> Any:
        import duckdb

        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(self.path))
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (entity VARCHAR NOT NULL, score DOUBLE, "
            "score_decile INTEGER, model VARCHAR NOT NULL, model_version VARCHAR NOT NULL, score_date DATE NOT NULL, "
            "reasons VARCHAR)"
        )
        con.execute(f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS reasons VARCHAR")
        return con

    def replace_partition(self, frame: pd.DataFrame, model: str, score_date: date) -> int:
        con = self._connect()
        try:
            con.execute("BEGIN TRANSACTION")
            con.execute(f"DELETE FROM {self.table} WHERE model = ? AND score_date = ?", [model, score_date])
            con.register("_new_scores", _with_reasons(frame)[list(COLUMNS)])
            con.execute(f"INSERT INTO {self.table} SELECT {', '.join(COLUMNS)} FROM _new_scores")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()
        return len(frame)

    def read_partition(self, model: str, score_date: date) -> pd.DataFrame:
        if not self.path.exists():
            return _empty()
        con = self._connect()
        try:
            return con.execute(
                f"SELECT {', '.join(COLUMNS)} FROM {self.table} WHERE model = ? AND score_date = ? ORDER BY entity",
                [model, score_date],
            ).df()
        finally:
            con.close()

    def dates(self, model: str) -> list[date]:
        if not self.path.exists():
            return []
        con = self._connect()
        try:
            rows = con.execute(
                f"SELECT DISTINCT score_date FROM {self.table} WHERE model = ? ORDER BY score_date", [model]
            ).fetchall()
        finally:
            con.close()
        return [r[0] for r in rows]


class ParquetScoreSink:
    """``<root>/<table>/model=<m>/score_date=<d>/part-0.parquet``: a file per partition."""

    def __init__(self, root: Path, table: str) -> None:
        self.root = root / _check_ident(table)

    def describe(self) -> str:
        return f"parquet:{self.root}"

    def _dir(self, model: str, score_date: date) -> Path:
        return self.root / f"model={model}" / f"score_date={score_date.isoformat()}"

    def replace_partition(self, frame: pd.DataFrame, model: str, score_date: date) -> int:
        folder = self._dir(model, score_date)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".part-0.parquet.tmp"
        out = _with_reasons(frame)[list(COLUMNS)].copy()
        out["reasons"] = out["reasons"].astype("object")
        out["score_date"] = pd.to_datetime(out["score_date"]).dt.date
        out.to_parquet(tmp, index=False)
        os.replace(tmp, folder / "part-0.parquet")
        for stale in folder.glob("*.parquet"):
            if stale.name != "part-0.parquet":
                stale.unlink()
        return len(frame)

    def read_partition(self, model: str, score_date: date) -> pd.DataFrame:
        f = self._dir(model, score_date) / "part-0.parquet"
        if not f.exists():
            return _empty()
        return _with_reasons(pd.read_parquet(f)).sort_values("entity", ignore_index=True)

    def dates(self, model: str) -> list[date]:
        folder = self.root / f"model={model}"
        if not folder.is_dir():
            return []
        out = []
        for d in folder.glob("score_date=*"):
            if (d / "part-0.parquet").exists():
                out.append(date.fromisoformat(d.name.split("=", 1)[1]))
        return sorted(out)

    def drop(self) -> None:
        """Remove every partition (tests)."""
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresScoreSink:
    """A PostgreSQL table (psycopg2)."""

    def __init__(self, dsn: str, table: str) -> None:
        self.dsn = dsn
        self.table = _check_ident(table)

    def describe(self) -> str:
        return f"postgres:{self.table}"

    def _connect(self) -> Any:
        import psycopg2

        try:
            con = psycopg2.connect(self.dsn)
        except psycopg2.OperationalError as e:
            raise ServiceUnavailableError(f"PostgreSQL score table: {str(e).strip().splitlines()[0]}") from e
        with con, con.cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (entity TEXT NOT NULL, score DOUBLE PRECISION, "
                "score_decile INTEGER, model TEXT NOT NULL, model_version TEXT NOT NULL, score_date DATE NOT NULL, "
                "reasons TEXT)"
            )
            cur.execute(f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS reasons TEXT")
            cur.execute(
                f"CREATE INDEX IF NOT EXISTS {self.table}_partition_idx ON {self.table} (model, score_date)"
            )
        return con

    def replace_partition(self, frame: pd.DataFrame, model: str, score_date: date) -> int:
        from psycopg2.extras import execute_values

        con = self._connect()
        try:
            with con, con.cursor() as cur:  # one transaction: readers see the old or the new partition
                cur.execute(
                    f"DELETE FROM {self.table} WHERE model = %s AND score_date = %s", (model, score_date)
                )
                rows = [
                    (str(e), float(s), int(d), str(m), str(v), sd, None if r is None else str(r))
                    for e, s, d, m, v, sd, r in _with_reasons(frame)[list(COLUMNS)].itertuples(
                        index=False, name=None
                    )
                ]
                execute_values(
                    cur, f"INSERT INTO {self.table} ({', '.join(COLUMNS)}) VALUES %s", rows, page_size=5000
                )
        finally:
            con.close()
        return len(frame)

    def read_partition(self, model: str, score_date: date) -> pd.DataFrame:
        con = self._connect()
        try:
            with con.cursor() as cur:
                cur.execute(
                    f"SELECT {', '.join(COLUMNS)} FROM {self.table} WHERE model = %s AND score_date = %s ORDER BY entity",
                    (model, score_date),
                )
                rows = cur.fetchall()
        finally:
            con.close()
        return pd.DataFrame(rows, columns=list(COLUMNS)) if rows else _empty()

    def dates(self, model: str) -> list[date]:
        con = self._connect()
        try:
            with con.cursor() as cur:
                cur.execute(
                    f"SELECT DISTINCT score_date FROM {self.table} WHERE model = %s ORDER BY score_date",
                    (model,),
                )
                return [r[0] for r in cur.fetchall()]
        finally:
            con.close()


def open_sink(settings: DriftJobConfig) -> ScoreSink:
    """The sink configured in ``settings.drift.scoring``."""
    sc = settings.drift.scoring
    if sc.sink == "duckdb":
        return DuckDBScoreSink(settings.path(sc.duckdb_path), sc.table)
    if sc.sink == "parquet":
        return ParquetScoreSink(settings.path(sc.parquet_dir), sc.table)
    return PostgresScoreSink(sc.postgres_dsn, sc.table)
