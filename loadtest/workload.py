"""What the load test sends: a workload description and the requests drawn from it.

The runner builds a :class:`Workload` once (known entity ids from the demo data or an entities
file, a few real feature rows, the model's feature list and version) and hands it to Locust as a
JSON file, so every Locust process — local, master or worker — draws from the same sample.
Drawing is pure (``random.Random`` in, payload out), which keeps it testable without Locust.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from loadtest.errors import LoadtestConfigError

log = logging.getLogger(__name__)

RequestKind = Literal["single", "batch", "unknown", "raw"]
KINDS: tuple[RequestKind, ...] = ("single", "batch", "unknown", "raw")
UNKNOWN_PREFIX = "cold-"
"""Unknown (cold-start) ids: never produced by the demo generator (``cust-000123``)."""
WORKLOAD_ENV = "TREESERVE_LOADTEST_WORKLOAD"
"""Environment variable naming the workload JSON file for the locustfile."""
HISTOGRAM_ENV = "TREESERVE_LOADTEST_HISTOGRAM"
"""Where the master (or the single local Locust process) writes the 10 µs latency histogram."""
API_KEY_ENV = "TREESERVE_LOADTEST_API_KEY"
"""Bearer key the gateway users send (kept out of the workload file)."""
TIMEOUT_ENV = "TREESERVE_LOADTEST_TIMEOUT_S"
"""Client-side timeout of one request."""


@dataclass(frozen=True)
class Workload:
    """Everything a Locust user needs to build requests, JSON-serialisable."""

    model: str
    entity_key: str
    known_ids: list[str]
    feature_names: list[str] = field(default_factory=list)
    feature_rows: list[list[float]] = field(default_factory=list)
    """Real rows in ``feature_names`` order (no missing values)."""
    model_version: str = ""
    """Triton version to pin for direct Triton runs (empty: Triton's default policy)."""
    weights: dict[str, float] = field(
        default_factory=lambda: {"single": 80, "batch": 8, "unknown": 7, "raw": 5}
    )
    batch_min: int = 10
    batch_max: int = 100
    max_batch: int = 1000
    """Largest request the server accepts (gateway max_entities / Triton max_batch_size)."""

    def to_json(self) -> str:
        """Serialise for the locustfile."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Workload:
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(text))

    def save(self, path: Path) -> Path:
        """Write the workload JSON to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: Path) -> Workload:
        """Read a workload JSON file."""
        return cls.from_json(Path(path).read_text())

    @property
    def n_features(self) -> int:
        """Width of the model input."""
        return len(self.feature_names)


Transport = Literal["http", "grpc-entities", "features"]


def effective_weights(workload: Workload, *, transport: Transport) -> dict[RequestKind, float]:
    """The kinds ``transport`` can send, with their weights.

    ``http`` (gateway JSON) sends all four kinds; ``grpc-entities`` (gateway KServe v2) has no raw
    requests; ``features`` (Triton directly) sends feature rows: single, batch, and an all-NaN row
    for ``unknown``.
    """
    out: dict[RequestKind, float] = {}
    for kind in KINDS:
        w = float(workload.weights.get(kind, 0.0))
        if w > 0 and _can_send(workload, transport, kind):
            out[kind] = w
    if not out:
        raise LoadtestConfigError(
            f"the request mix for {transport} is empty: give a positive weight to a kind it can send"
        )
    return out


def _can_send(workload: Workload, transport: Transport, kind: RequestKind) -> bool:
    if transport == "features":
        return kind != "raw" and bool(workload.feature_rows)
    if kind == "raw":
        return transport == "http" and bool(workload.feature_rows)
    if kind in ("single", "batch"):
        return bool(workload.known_ids)
    return True


def draw_kind(rng: random.Random, weights: dict[RequestKind, float]) -> RequestKind:
    """One request kind, drawn by weight."""
    kinds = list(weights)
    return rng.choices(kinds, weights=[weights[k] for k in kinds], k=1)[0]


def batch_size(rng: random.Random, workload: Workload) -> int:
    """A batch size in ``[batch_min, batch_max]``, capped by what the server accepts."""
    hi = max(1, min(workload.batch_max, workload.max_batch))
    lo = max(1, min(workload.batch_min, hi))
    return rng.randint(lo, hi)


def draw_entity_ids(rng: random.Random, workload: Workload, kind: RequestKind) -> list[str]:
    """Entity ids for an entity request of ``kind`` (single, batch or unknown)."""
    if kind == "unknown":
        return [f"{UNKNOWN_PREFIX}{rng.randrange(10**9):09d}"]
    n = 1 if kind == "single" else batch_size(rng, workload)
    return [rng.choice(workload.known_ids) for _ in range(n)]


def gateway_payload(rng: random.Random, workload: Workload, kind: RequestKind) -> tuple[dict[str, Any], int]:
    """The JSON body of one gateway predict request and the number of rows it asks for."""
    if kind == "raw":
        row = rng.choice(workload.feature_rows)
        return {"instances": [dict(zip(workload.feature_names, row, strict=True))]}, 1
    ids = draw_entity_ids(rng, workload, kind)
    return {"entities": [{workload.entity_key: i} for i in ids]}, len(ids)


def triton_rows(rng: random.Random, workload: Workload, kind: RequestKind) -> list[list[float]]:
    """Feature rows for a direct Triton request: one row, or a batch for ``batch``."""
    if not workload.feature_rows:
        raise LoadtestConfigError("the workload has no feature rows for a direct Triton run")
    n = batch_size(rng, workload) if kind == "batch" else 1
    rows = [rng.choice(workload.feature_rows) for _ in range(n)]
    if kind == "unknown":
        # Triton has no notion of an unknown entity: send an all-missing row (NaN = missing).
        rows = [[math.nan] * workload.n_features]
    return rows


# ---- building a workload from the demo data --------------------------------------------------


def load_entity_ids(path: Path, entity_key: str, *, limit: int, seed: int) -> list[str]:
    """Known ids from a parquet file (column ``entity_key``) or a text file (one id per line)."""
    path = Path(path)
    if not path.exists():
        raise LoadtestConfigError(
            f"entities file {path} does not exist (run `treeserve data generate` or pass --entities-file)"
        )
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if entity_key not in table.column_names:
            raise LoadtestConfigError(f"entities file {path} has no column {entity_key!r}")
        ids = [str(x) for x in table.column(entity_key).to_pylist() if x is not None]
    else:
        lines = path.read_text().splitlines()
        ids = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if ids and ids[0] == entity_key:
            ids = ids[1:]  # a CSV-style header
        ids = [i.split(",")[0] for i in ids]
    ids = sorted(set(ids))
    if not ids:
        raise LoadtestConfigError(f"entities file {path} holds no ids")
    if len(ids) > limit:
        ids = sorted(random.Random(seed).sample(ids, limit))
    return ids


def load_feature_rows(path: Path, feature_names: list[str], *, limit: int, seed: int) -> list[list[float]]:
    """Up to ``limit`` complete rows of ``feature_names`` from a parquet file ([] if unavailable)."""
    if not feature_names or not Path(path).exists():
        return []
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    if any(f not in schema.names for f in feature_names):
        return []
    frame = pq.read_table(path, columns=feature_names).to_pandas().dropna()
    if frame.empty:
        return []
    frame = frame.sample(n=min(limit, len(frame)), random_state=seed)
    return [[float(v) for v in row] for row in frame.itertuples(index=False, name=None)]
