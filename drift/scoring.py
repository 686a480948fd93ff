"""Batch scoring: every active entity, scored in-process with the ONNX file Triton serves.

The features come from the Feast online store through the gateway's reader
(``treeserve.features``), the missing-value policy and the output -> score mapping are the
gateway's own (``treeserve.scoring``), and the model is ``model_repository/<model>/<version>/model.onnx`` run by ONNX Runtime — so a batch
score equals the gateway's score for the same entity on the same day.

With ``explain_k`` (``treeserve score --explain``) each row also gets its top reasons (JSON in the
``reasons`` column), from the version's explainer companion (``explainer.json``, the trees the
gateway's explanations come from) evaluated in-process by ``treeserve.treeshap``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from drift.reference import repository_routing
from drift.score_store import ScoreSink, open_sink
from treeserve import contract, scoring, treeshap
from treeserve import repository as repo_format
from treeserve.encoding import Vocabulary
from treeserve.errors import NotFoundError, ValidationFailedError

if TYPE_CHECKING:
    from drift.settings import DriftJobConfig, GatewayOutputs

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (rows done, rows total) after every chunk."""


@dataclass(frozen=True)
class ScoringResult:
    """What ``score_all`` did."""

    model: str
    model_version: str
    score_date: date
    rows: int
    elapsed_s: float
    sink: str
    fallback_rows: int
    loop_s: float = 0.0
    """Time in the chunk loop (online reads + inference), without start-up and the table write."""

    @property
    def rows_per_s(self) -> float:
        """Throughput of the whole run (start-up, features, inference, table write)."""
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else float("inf")

    @property
    def loop_rows_per_s(self) -> float:
        """Throughput of the chunk loop alone (online reads + inference)."""
        return self.rows / self.loop_s if self.loop_s > 0 else float("inf")


@dataclass(frozen=True)
class ServingModel:
    """One installed version: its metadata and an ONNX Runtime session on ``model.onnx``."""

    model: str
    version: str
    features: list[str]
    task: str
    medians: dict[str, float]
    base_rate: float
    feature_service: str
    entity_keys: list[str]
    session: Any
    encodings: dict[str, Vocabulary] = field(default_factory=dict)
    """String feature -> the vocabulary the version was trained with (``treeserve.encoding``)."""

    @classmethod
    def load(cls, repository: Path, model: str, version: str) -> ServingModel:
        """Open ``<repository>/<model>/<version>`` (NotFoundError when it is not installed)."""
        import onnxruntime as ort

        folder = repo_format.version_dir(repository, model, version)
        onnx_path = folder / "model.onnx"
        try:
            meta = repo_format.load_version_metadata(folder)
        except FileNotFoundError:
            meta = None
        if meta is None or not onnx_path.is_file():
            raise NotFoundError(
                f"model {model!r} version {version} is not installed in {repository} "
                "(run `treeserve sync` or `treeserve export`)"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
        return cls(
            model=model,
            version=str(version),
            features=list(meta.features),
            task=meta.task,
            medians=dict(meta.medians),
            base_rate=meta.base_rate,
            feature_service=meta.feature_service,
            entity_keys=list(meta.entity_keys),
            session=session,
            encodings=dict(meta.encodings),
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The model's raw output for float32 rows without NaN (``scoring.output_name(task)``)."""
        (out,) = self.session.run([scoring.output_name(self.task)], {contract.INPUT_TENSOR: x})
        return np.asarray(out)


def load_explainer(repository: Path, model: str, version: str) -> treeshap.TreeExplainer:
    """The explainer of an installed version (NotFoundError when it has none)."""
    folder = repo_format.version_dir(repository, repo_format.explainer_name(model), version)
    try:
        text = repo_format.explainer_file(folder).read_text()
    except FileNotFoundError as e:
        raise NotFoundError(
            f"model {model!r} version {version} has no explainer (installed before explanations "
            "existed); promote a version exported by this treeserve to explain it"
        ) from e
    return treeshap.TreeExplainer(treeshap.loads(text))


def explain_rows(
    model: ServingModel, explainer: treeshap.TreeExplainer, x: np.ndarray, gateway: GatewayOutputs, *, k: int
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Like ``score_rows`` plus each row's top ``k`` reasons as JSON (None on fallback rows)."""
    policy = scoring.MissingValuePolicy.build(
        model.features,
        per_feature=gateway.missing_policy,
        default=gateway.default_missing_policy,
        unknown_entity=gateway.unknown_entity_policy,
    )
    prepared = scoring.prepare(
        x, policy, medians=scoring.median_vector(model.medians, model.features), base_rate=model.base_rate
    )
    has_rows = len(prepared.inputs) > 0
    result = scoring.finish(prepared, model.predict(prepared.inputs) if has_rows else None, model.task)
    phi = explainer.contributions(prepared.inputs) if has_rows else None
    rows = prepared.model_rows if prepared.model_rows is not None else np.arange(len(x))
    reasons: list[str | None] = [None] * len(x)
    n = len(model.features)
    for r, i in enumerate(rows):
        assert phi is not None
        label = int(result.labels[i]) if result.labels is not None else None
        group = scoring.reason_group(model.task, label)
        top = scoring.top_reasons(phi[r, group, :n], prepared.inputs[r], model.features, result.imputed[i], k)
        reasons[int(i)] = json.dumps([t.to_dict() for t in top])
    fallback = np.array([bool(f) for f in result.fallback], dtype=bool)
    return result.scores, fallback, reasons


def score_rows(model: ServingModel, x: np.ndarray, gateway: GatewayOutputs) -> tuple[np.ndarray, np.ndarray]:
    """Scores under the gateway's missing-value policy (``treeserve.scoring``); (scores, fallback mask)."""
    policy = scoring.MissingValuePolicy.build(
        model.features,
        per_feature=gateway.missing_policy,
        default=gateway.default_missing_policy,
        unknown_entity=gateway.unknown_entity_policy,
    )
    result = scoring.score(
        x,
        policy,
        medians=scoring.median_vector(model.medians, model.features),
        base_rate=model.base_rate,
        task=model.task,
        model=model.predict,
    )
    return result.scores, np.array([bool(r) for r in result.fallback], dtype=bool)


def deciles(scores: np.ndarray) -> np.ndarray:
    """Decile 1..10 by rank (10 = highest scores); ties broken by position."""
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    ranks = pd.Series(scores).rank(method="first").to_numpy()
    return np.minimum(10, np.ceil(ranks * 10 / n)).astype(np.int64)


def active_entities(store: Any, feature_service: str, entity_keys: list[str], active_days: int) -> list[str]:
    """Entities with a feature row within ``active_days`` of the newest row in the FeatureService's sources."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    service = store.get_feature_service(feature_service)
    ids: set[str] = set()
    for proj in service.feature_view_projections:
        view = store.get_feature_view(proj.name)
        source = view.batch_source
        path = getattr(source, "path", None)
        if not path:
            raise ValidationFailedError(
                f"feature view {view.name!r}: batch source has no file path to list entities"
            )
        ts_col = source.timestamp_field
        table = ds.dataset(path).to_table(columns=[*entity_keys, ts_col])
        newest = pc.max(table[ts_col]).as_py()
        if newest is None:
            continue
        cutoff = newest - timedelta(days=active_days)
        table = table.filter(pc.greater_equal(table[ts_col], pa.scalar(cutoff, type=table[ts_col].type)))
        distinct = table.group_by(entity_keys).aggregate([])  # one row per entity before joining keys
        keys = [distinct[k].to_pylist() for k in entity_keys]
        ids.update("|".join(str(v) for v in vals) for vals in zip(*keys, strict=True))
    return sorted(ids)


def read_online(
    settings: DriftJobConfig, store: Any, feature_service: str, chunks: list[list[str]]
) -> Iterator[np.ndarray]:
    """Online features of each chunk of ``|``-joined entity ids, float64 [n, n_features], NaN missing.

    Read with the reader the gateway uses (``treeserve.features.feature_source``, checked against
    the SDK first): the same code, the same values the gateway scores with.
    """
    import asyncio

    from treeserve.features import feature_source

    source = feature_source(
        store, reader=settings.gateway.feature_reader, store_name=settings.feast.online_store
    )
    loop = asyncio.new_event_loop()
    try:
        source.describe(feature_service)
        loop.run_until_complete(source.verify(feature_service))
        for ids in chunks:
            keys = [tuple(i.split("|")) for i in ids]
            yield loop.run_until_complete(source.fetch(feature_service, keys))
    finally:
        loop.run_until_complete(source.aclose())
        loop.close()


def resolve_serving_version(settings: DriftJobConfig, model: str, version: str | None) -> str:
    """``version`` or the champion Triton's routing serves (else the registry alias)."""
    if version:
        return str(version)
    routed = repository_routing(settings.path(settings.exporter.repository), model).get(
        contract.ALIAS_CHAMPION
    )
    if routed:
        return routed
    from drift.reference import resolve_version

    return resolve_version(
        settings.mlflow_tracking_uri, settings.path(settings.exporter.repository), model
    ).version


def score_all(
    settings: DriftJobConfig,
    *,
    model: str | None = None,
    version: str | None = None,
    score_date: date | None = None,
    entities: list[str] | None = None,
    sink: ScoreSink | None = None,
    progress: Progress | None = None,
    explain_k: int | None = None,
) -> ScoringResult:
    """Score every active entity with the serving version and replace the day's partition.

    ``explain_k``: also write each entity's top ``explain_k`` reasons (JSON) beside its score.
    """
    from treeserve.features import open_feature_store

    t0 = time.perf_counter()
    model = model or settings.mlflow.model_name
    sc = settings.drift.scoring
    score_date = score_date or datetime.now(UTC).date()
    version = resolve_serving_version(settings, model, version)
    repository = settings.path(settings.exporter.repository)
    serving = ServingModel.load(repository, model, version)
    if explain_k is not None and explain_k < 1:
        raise ValidationFailedError(f"--explain needs at least 1 reason (got {explain_k})")
    explainer = load_explainer(repository, model, version) if explain_k else None
    store = open_feature_store(settings)
    fs_name = serving.feature_service or settings.feast.feature_service
    keys = serving.entity_keys or ["customer_id"]
    ids = entities if entities is not None else active_entities(store, fs_name, keys, sc.active_days)
    if not ids:
        raise ValidationFailedError(
            f"no active entities to score for {model} (is the data generated and applied?)"
        )
    log.info("score: %s version %s, %d entities, date %s", model, version, len(ids), score_date)
    scores = np.empty(len(ids), dtype=np.float64)
    fallback = np.zeros(len(ids), dtype=bool)
    reasons: list[str | None] = [None] * len(ids)
    chunks = [ids[i : i + sc.chunk_size] for i in range(0, len(ids), sc.chunk_size)]
    done = 0
    t_loop = time.perf_counter()
    for chunk, x in zip(chunks, read_online(settings, store, fs_name, chunks), strict=True):
        if explainer is not None and explain_k:
            s, fb, why = explain_rows(serving, explainer, x, settings.gateway, k=explain_k)
            reasons[done : done + len(chunk)] = why
        else:
            s, fb = score_rows(serving, x, settings.gateway)
        scores[done : done + len(chunk)] = s
        fallback[done : done + len(chunk)] = fb
        done += len(chunk)
        if progress is not None:
            progress(done, len(ids))
    loop_s = time.perf_counter() - t_loop
    frame = pd.DataFrame(
        {
            "entity": ids,
            "score": scores,
            "score_decile": deciles(scores),
            "model": model,
            "model_version": version,
            "score_date": score_date,
            "reasons": reasons,
        }
    )
    sink = sink or open_sink(settings)
    sink.replace_partition(frame, model, score_date)
    elapsed = time.perf_counter() - t0
    result = ScoringResult(
        model=model,
        model_version=version,
        score_date=score_date,
        rows=len(frame),
        elapsed_s=elapsed,
        sink=sink.describe(),
        fallback_rows=int(fallback.sum()),
        loop_s=loop_s,
    )
    log.info(
        "score: %d rows in %.2fs (%.0f rows/s) -> %s", result.rows, elapsed, result.rows_per_s, result.sink
    )
    return result
