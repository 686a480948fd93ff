"""The prediction flow, shared by the HTTP and gRPC transports (no HTTP, no SDK in here).

entity ids -> online features (coalesced read) -> missing-value policy (impute with the
version's training median, or fall back to its base rate) -> routed version (champion, sticky
challenger share, shadow) -> Triton (coalesced call) -> scores + flags -> prediction log.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import re
import secrets
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gateway import catalog, metrics
from gateway.catalog import ModelView, VersionInfo
from gateway.coalesce import Coalescer
from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    ModelNotServableError,
    UnknownModelError,
)
from gateway.predlog import PredictionBatch, PredictionLog
from gateway.settings import GatewaySettings
from gateway.triton import InferenceClient
from treeserve import contract, scoring
from treeserve.errors import TreeserveError
from treeserve.features import FeatureSource

log = logging.getLogger(__name__)

ROUTE_CHAMPION = contract.ALIAS_CHAMPION
ROUTE_CHALLENGER = contract.ALIAS_CHALLENGER
ROUTE_SHADOW = "shadow"


@dataclass(frozen=True)
class Prediction:
    """One scored row."""

    score: float
    risk_tier: str | None
    model_version: str
    route: str
    imputed: tuple[str, ...]
    """Features replaced by the training median (empty: none)."""
    fallback: str
    """Why the base rate was returned instead of a model score (empty: model score)."""
    label: int | None = None


@dataclass(frozen=True)
class PredictionResult:
    """The answer to one request."""

    request_id: str
    model: str
    model_version: str
    """The champion version (rows answered by the challenger say so in their own field)."""
    predictions: list[Prediction]
    latency_ms: float


@dataclass
class _Scored:
    scores: np.ndarray
    labels: np.ndarray | None
    versions: list[str]
    routes: list[str]
    imputed: list[tuple[str, ...]]
    fallback: list[str]

    def __getitem__(self, rows: slice) -> _Scored:
        return _Scored(
            self.scores[rows],
            self.labels[rows] if self.labels is not None else None,
            self.versions[rows],
            self.routes[rows],
            self.imputed[rows],
            self.fallback[rows],
        )


@dataclass
class _BatchResult:
    """A coalesced entity batch after scoring; sliced back per request."""

    x: np.ndarray
    scored: _Scored
    champion: VersionInfo
    challenger: VersionInfo | None
    view: ModelView

    def __getitem__(self, rows: slice) -> _BatchResult:
        return _BatchResult(self.x[rows], self.scored[rows], self.champion, self.challenger, self.view)


class PredictionService:
    """Everything between a transport and the adapters."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        repository: Path,
        feature_service: str,
        features: FeatureSource,
        triton: InferenceClient,
        predlog: PredictionLog,
    ) -> None:
        self.settings = settings
        self._repository = repository
        self._feature_service_default = feature_service
        self._features = features
        self._triton = triton
        self._predlog = predlog
        self._models: dict[str, ModelView] = {}
        self._fingerprints: dict[str, tuple[float, ...]] = {}
        self._served = [settings.model]
        self._id_re = re.compile(settings.entity_id_pattern)
        self._entity_batchers: dict[str, Coalescer[Any]] = {}
        self._entities_hists: dict[str, Any] = {}
        self._triton_coalescers: dict[tuple[str, str, str], Coalescer[Any]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._refresh_task: asyncio.Task[None] | None = None
        self._tiers = sorted(settings.risk_tiers.items(), key=lambda kv: kv[1])
        self._policy_cache: dict[tuple[str, ...], scoring.MissingValuePolicy] = {}
        self._median_cache: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
        self._median_cache_owner: dict[tuple[str, tuple[str, ...]], VersionInfo] = {}
        self._metric_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._label_children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._feature_children: dict[tuple[Any, str, tuple[str, ...]], list[Any]] = {}

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the served models (skew guard included), check the feature reader, watch the routing."""
        await self._predlog.start()
        await self.refresh()
        for service in sorted({view.feature_service for view in self._models.values() if not view.problem}):
            await self._features.verify(service)  # a reader that reads wrong values stops the start
        self._refresh_task = asyncio.get_running_loop().create_task(self._watch(), name="routing-watch")

    async def aclose(self) -> None:
        """Stop watching, finish batches in flight, flush the prediction log."""
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            await asyncio.gather(self._refresh_task, return_exceptions=True)
        for c in [
            *self._entity_batchers.values(),
            *self._triton_coalescers.values(),
        ]:
            await c.aclose()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._predlog.aclose()
        await self._triton.aclose()
        await self._features.aclose()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.routing_poll_interval_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("routing refresh failed; keeping the previous routing")

    async def refresh(self, *, force: bool = False) -> None:
        """Re-read the repository config of every served model when it changed."""
        for name in self._served:
            stamp = catalog.fingerprint(self._repository, name)
            if not force and name in self._models and stamp == self._fingerprints.get(name):
                continue
            view = await asyncio.to_thread(self._load_model, name)
            old = self._models.get(name)
            if old is not None and old.routing != view.routing:
                metrics.ROUTING_CHANGES.labels(name).inc()
                log.info("routing of %s changed: %s -> %s", name, old.routing, view.routing)
            if view.routing_generation:
                metrics.ROUTING_GENERATION.labels(name).set(view.routing_generation)
            elif stamp and (old is None or old.routing != view.routing):
                # a config written before the counter existed: the time of its write tells them apart
                metrics.ROUTING_GENERATION.labels(name).set(stamp[0] / 1e9)
            self._models[name] = view
            self._fingerprints[name] = stamp

    def _load_model(self, name: str) -> ModelView:
        try:
            cfg = catalog.read_repository_config(self._repository, name)
        except Exception as e:
            problem = f"model {name!r} has no readable config in the repository {self._repository}: {e}"
            log.warning(problem)
            return ModelView(
                name=name,
                feature_service=self._feature_service_default,
                features=(),
                entity_keys=(),
                routing={},
                problem=problem,
            )
        service = cfg.feature_service or self._feature_service_default
        try:
            features, keys = self._features.describe(service)
            encodings = self._features.encodings(service)
        except GatewayError as e:
            return ModelView(
                name=name,
                feature_service=service,
                features=cfg.features,
                entity_keys=cfg.entity_keys,
                routing=cfg.routing,
                routing_generation=cfg.routing_generation,
                problem=str(e),
            )
        versions: dict[str, VersionInfo] = {}
        for alias, version in cfg.routing.items():
            if version in versions:
                continue
            try:
                info = catalog.read_version_info(self._repository, name, version)
            except (OSError, ValueError, TreeserveError) as e:
                versions[version] = VersionInfo(
                    version=version,
                    task="binary",
                    n_classes=2,
                    features=(),
                    medians={},
                    base_rate=0.0,
                    servable=False,
                    problem=f"version {version} ({alias}) has no readable {contract.VERSION_METADATA_FILE}: {e}",
                )
                metrics.VERSION_SERVABLE.labels(name, version, alias).set(0)
                continue
            problem = catalog.skew_problem(info, tuple(features), service, encodings)
            if problem:
                metrics.SKEW_GUARD_REJECTIONS.labels(name, version).inc()
                log.error("skew guard: %s %s not served: %s", name, version, problem)
                info = VersionInfo(**{**info.__dict__, "servable": False, "problem": problem})
            versions[version] = info
            metrics.VERSION_SERVABLE.labels(name, version, alias).set(1 if info.servable else 0)
        problem = ""
        if contract.ALIAS_CHAMPION not in cfg.routing:
            problem = f"model {name!r} has no champion in its routing {cfg.routing}"
        return ModelView(
            name=name,
            feature_service=service,
            features=tuple(features),
            entity_keys=tuple(keys),
            routing=cfg.routing,
            routing_generation=cfg.routing_generation,
            versions=versions,
            problem=problem,
            encodings=encodings,
        )

    # ---- queries --------------------------------------------------------------------------
    def models(self) -> list[ModelView]:
        """The served models as currently loaded."""
        return [self._models[n] for n in self._served if n in self._models]

    def serves(self, name: str) -> bool:
        """True when ``name`` is a served model (loaded)."""
        return name in self._models

    def model(self, name: str) -> ModelView:
        """One served model, or UnknownModelError."""
        view = self._models.get(name)
        if view is None:
            raise UnknownModelError(name)
        return view

    def _champion(self, view: ModelView) -> VersionInfo:
        if view.problem:
            raise ModelNotServableError(view.problem)
        info = view.version_for(contract.ALIAS_CHAMPION)
        if info is None:
            v = view.routing.get(contract.ALIAS_CHAMPION, "?")
            problem = view.versions[v].problem if v in view.versions else "unknown version"
            raise ModelNotServableError(f"model {view.name!r} champion version {v} is not served: {problem}")
        return info

    def degraded(self) -> dict[str, str]:
        """Triton servers not serving the routed version -> why (the others carry the traffic)."""
        return self._triton.degraded()

    async def readiness(self) -> dict[str, str]:
        """Each readiness check -> 'ok' or the reason it fails (one ready Triton server is enough)."""
        checks: dict[str, str] = {}
        triton_up = await self._triton.server_ready()
        checks["triton"] = "ok" if triton_up else "no Triton server is ready"
        for view in self.models():
            try:
                champion = self._champion(view)
            except GatewayError as e:
                checks[f"contract:{view.name}"] = str(e)
                continue
            checks[f"contract:{view.name}"] = "ok"
            if triton_up:
                ready = await self._triton.model_ready(view.name, champion.version)
                checks[f"model:{view.name}"] = (
                    "ok"
                    if ready
                    else f"version {champion.version} of {view.name!r} is not ready on any Triton server"
                )
            try:
                await self._features.check(view.feature_service)
                checks[f"online_store:{view.feature_service}"] = "ok"
            except GatewayError as e:
                checks[f"online_store:{view.feature_service}"] = str(e)
        problem = await self._predlog.check()
        checks["predlog"] = problem or "ok"
        if not self._served or not self.models():
            checks["models"] = "no model loaded"
        metrics.READY.set(1 if all(v == "ok" for v in checks.values()) else 0)
        return checks

    # ---- validation -----------------------------------------------------------------------
    def entity_keys_of(self, entities: Sequence[Any], view: ModelView) -> list[tuple[str, ...]]:
        """Validate entity objects against the FeatureService's join keys."""
        keys = view.entity_keys
        if not keys:
            raise ModelNotServableError(view.problem or f"model {view.name!r} has no entity keys")
        self._check_count(len(entities), "entities")
        max_len = self.settings.entity_id_max_length
        out: list[tuple[str, ...]] = []
        for i, ent in enumerate(entities):
            if not isinstance(ent, Mapping):
                raise InvalidRequestError(f"entities[{i}] must be an object like {{{keys[0]!r}: '...'}}")
            if len(ent) != len(keys) or any(k not in ent for k in keys):
                raise InvalidRequestError(
                    f"entities[{i}] must have exactly the keys {list(keys)} (got {sorted(map(str, ent))[:5]})"
                )
            row: list[str] = []
            for k in keys:
                v = ent[k]
                if not isinstance(v, str):
                    raise InvalidRequestError(f"entities[{i}].{k} must be a string")
                if not 0 < len(v) <= max_len or not self._id_re.match(v):
                    raise self._bad_id(i, k)
                row.append(v)
            out.append(tuple(row))
        return out

    def check_entity_keys(self, rows: Sequence[tuple[str, ...]], view: ModelView) -> None:
        """Validate rows of join-key values (in ``view.entity_keys`` order) that are already strings."""
        keys = view.entity_keys
        if not keys:
            raise ModelNotServableError(view.problem or f"model {view.name!r} has no entity keys")
        self._check_count(len(rows), "entities")
        max_len = self.settings.entity_id_max_length
        match = self._id_re.match
        for i, row in enumerate(rows):
            for k, v in zip(keys, row, strict=True):
                if not 0 < len(v) <= max_len or not match(v):
                    raise self._bad_id(i, k)

    def _bad_id(self, i: int, key: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"entities[{i}].{key} must be 1-{self.settings.entity_id_max_length} characters "
            f"matching {self.settings.entity_id_pattern}"
        )

    def instance_matrix(self, instances: Sequence[Any], view: ModelView) -> np.ndarray:
        """Validate raw feature objects against the model's feature list; NaN for absent/null."""
        self._check_count(len(instances), "instances")
        features = view.features
        index = {f: j for j, f in enumerate(features)}
        x = np.full((len(instances), len(features)), np.nan, dtype=np.float64)
        for i, inst in enumerate(instances):
            if not isinstance(inst, Mapping):
                raise InvalidRequestError(f"instances[{i}] must be an object of feature -> number")
            for name, v in inst.items():
                j = index.get(name)
                if j is None:
                    raise InvalidRequestError(
                        f"instances[{i}] has unknown feature {str(name)[:64]!r}; the model's features are {list(features)}"
                    )
                if v is None:
                    continue
                enc = view.encodings.get(name)
                if enc is not None and isinstance(v, str):
                    x[i, j] = enc.code(v)  # outside the vocabulary: missing, as when read online
                    continue
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise InvalidRequestError(f"instances[{i}].{name} must be a number or null")
                fv = float(v)
                if not math.isfinite(fv):
                    raise InvalidRequestError(f"instances[{i}].{name} must be finite")
                x[i, j] = fv
        return x

    def check_matrix(self, x: np.ndarray, view: ModelView) -> np.ndarray:
        """Validate a float matrix [n, len(view.features)] (NaN: missing) as ``instance_matrix`` would."""
        self._check_count(len(x), "instances")
        x = np.asarray(x, dtype=np.float64)
        bad = np.isinf(x)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            raise InvalidRequestError(f"instances[{i}].{view.features[j]} must be finite")
        return x

    def _check_count(self, n: int, what: str) -> None:
        if n < 1 or n > self.settings.max_entities:
            raise InvalidRequestError(f"{what} must hold 1 to {self.settings.max_entities} items (got {n})")

    # ---- the pieces explanations reuse (gateway.explain) ---------------------------------------
    def champion(self, view: ModelView) -> VersionInfo:
        """The served champion of ``view``, or ModelNotServableError naming why there is none."""
        return self._champion(view)

    async def fetch_features(self, view: ModelView, keys: list[tuple[str, ...]]) -> np.ndarray:
        """Online features of validated entity keys, float64 [n, n_features] (NaN = missing)."""
        return np.asarray(await self._features.fetch(view.feature_service, keys))

    def prepare(self, view: ModelView, info: VersionInfo, x: np.ndarray) -> scoring.Prepared:
        """The missing-value policy of ``info`` applied to ``x`` (exactly what predict sends to Triton)."""
        return scoring.prepare(
            x,
            self._policy(view.features),
            medians=self._median_vector(info, view.features),
            base_rate=info.base_rate,
        )

    async def infer(self, model: str, version: str, rows: np.ndarray, *, output: str) -> np.ndarray:
        """One coalesced Triton call for ``rows`` (shared with predict's calls to the same output)."""
        return await self._triton_coalescer(model, version, output).submit(rows)  # type: ignore[no-any-return]

    def tier(self, score: float, task: str) -> str | None:
        """Risk tier of a binary classifier's score."""
        return self._tier(score, task)

    # ---- prediction -----------------------------------------------------------------------
    async def predict_entities(
        self, model: str, entities: Sequence[Any], *, request_id: str | None = None
    ) -> PredictionResult:
        """Score entities by id: features come from the online store."""
        t0 = time.perf_counter()
        view = self.model(model)
        self._champion(view)  # refuse before queueing when the version is not served
        keys = self.entity_keys_of(entities, view)
        return await self._predict_keys(view, keys, request_id, t0)

    async def predict_keys(
        self, model: str, keys: list[tuple[str, ...]], *, request_id: str | None = None
    ) -> PredictionResult:
        """Score entities given as rows of join-key strings (``entity_keys`` order; the gRPC path)."""
        t0 = time.perf_counter()
        view = self.model(model)
        self._champion(view)
        self.check_entity_keys(keys, view)
        return await self._predict_keys(view, keys, request_id, t0)

    async def _predict_keys(
        self, view: ModelView, keys: list[tuple[str, ...]], request_id: str | None, t0: float
    ) -> PredictionResult:
        model = view.name
        self._entities_hist(model).observe(len(keys))
        # One coalesced batch of entities: one online read, one policy pass, one Triton call.
        batch: _BatchResult = await self._entity_batcher(model).submit(keys)
        joined = ["|".join(k) for k in keys]
        return await self._finish(
            batch.view, batch.champion, batch.challenger, batch.x, joined, request_id, t0, batch.scored
        )

    async def predict_instances(
        self, model: str, instances: Sequence[Any], *, request_id: str | None = None
    ) -> PredictionResult:
        """Score rows whose features the caller already has."""
        t0 = time.perf_counter()
        view = self.model(model)
        champion = self._champion(view)
        x = self.instance_matrix(instances, view)
        self._entities_hist(model).observe(len(x))
        return await self._score(view, champion, x, None, request_id, t0)

    async def predict_matrix(
        self, model: str, x: np.ndarray, *, request_id: str | None = None
    ) -> PredictionResult:
        """Score a feature matrix [n, n_features] in the model's feature order (the gRPC path)."""
        t0 = time.perf_counter()
        view = self.model(model)
        champion = self._champion(view)
        x = self.check_matrix(x, view)
        self._entities_hist(model).observe(len(x))
        return await self._score(view, champion, x, None, request_id, t0)

    def _triton_coalescer(self, model: str, version: str, output: str) -> Coalescer[Any]:
        key = (model, version, output)
        c = self._triton_coalescers.get(key)
        if c is None:

            async def call(rows: np.ndarray) -> np.ndarray:
                return await self._triton.infer(model, version, rows, output=output)

            c = self._triton_coalescers[key] = Coalescer(
                call,
                window_us=self.settings.coalesce_window_us,
                max_batch=self.settings.coalesce_max_batch,
                stage="triton",
                max_inflight=self.settings.coalesce_max_inflight,
                merge=_concat_rows,
            )
        return c

    def _routes(
        self, n: int, entity_keys: list[str] | None, request_id: str, challenger: VersionInfo | None
    ) -> np.ndarray:
        """True for rows answered by the challenger (sticky by entity hash)."""
        share = self.settings.challenger_share
        if challenger is None or share <= 0 or self.settings.shadow:
            return np.zeros(n, dtype=bool)
        limit = share * 2**32
        if entity_keys is None:
            return np.full(n, zlib.crc32(request_id.encode()) < limit)
        return np.fromiter((zlib.crc32(k.encode()) < limit for k in entity_keys), dtype=bool, count=n)

    def _entity_batcher(self, model: str) -> Coalescer[Any]:
        c = self._entity_batchers.get(model)
        if c is None:

            async def call(keys: list[tuple[str, ...]]) -> _BatchResult:
                view = self.model(model)
                champion = self._champion(view)
                challenger = view.version_for(contract.ALIAS_CHALLENGER)
                x = (await self._features.read_rows(view.feature_service, keys)).values
                joined = ["|".join(k) for k in keys]
                to_challenger = self._routes(len(keys), joined, "", challenger)
                # Already one batch per online read: Triton is called directly, not through the
                # Triton stage's coalescer (one loop pass, one task and one future less per batch).
                scored = await self._score_rows(view, champion, challenger, x, to_challenger, coalesce=False)
                return _BatchResult(x, scored, champion, challenger, view)

            c = self._entity_batchers[model] = Coalescer(
                call,
                window_us=self.settings.coalesce_window_us,
                max_batch=self.settings.coalesce_max_batch,
                stage="features",
                max_inflight=self.settings.coalesce_max_inflight,
            )
        return c

    def _entities_hist(self, model: str) -> Any:
        h = self._entities_hists.get(model)
        if h is None:
            h = self._entities_hists[model] = metrics.ENTITIES_PER_REQUEST.labels(model)
        return h

    async def _score(
        self,
        view: ModelView,
        champion: VersionInfo,
        x: np.ndarray,
        entity_keys: list[str] | None,
        request_id: str | None,
        t0: float,
    ) -> PredictionResult:
        request_id = request_id or new_request_id()
        challenger = view.version_for(contract.ALIAS_CHALLENGER)
        to_challenger = self._routes(len(x), entity_keys, request_id, challenger)
        scored = await self._score_rows(view, champion, challenger, x, to_challenger)
        return await self._finish(view, champion, challenger, x, entity_keys, request_id, t0, scored)

    async def _finish(
        self,
        view: ModelView,
        champion: VersionInfo,
        challenger: VersionInfo | None,
        x: np.ndarray,
        entity_keys: list[str] | None,
        request_id: str | None,
        t0: float,
        scored: _Scored,
    ) -> PredictionResult:
        """Log, start shadow scoring, and build the answer of one request."""
        request_id = request_id or new_request_id()
        now = datetime.now(UTC)
        await self._log(view, request_id, now, x, entity_keys, scored)
        if self.settings.shadow and challenger is not None:
            task = asyncio.get_running_loop().create_task(
                self._shadow(view, challenger, x, entity_keys, request_id)
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        predictions = [
            Prediction(
                score=float(scored.scores[i]),
                risk_tier=self._tier(float(scored.scores[i]), champion.task),
                model_version=scored.versions[i],
                route=scored.routes[i],
                imputed=scored.imputed[i],
                fallback=scored.fallback[i],
                label=int(scored.labels[i]) if scored.labels is not None else None,
            )
            for i in range(len(x))
        ]
        return PredictionResult(
            request_id=request_id,
            model=view.name,
            model_version=champion.version,
            predictions=predictions,
            latency_ms=(time.perf_counter() - t0) * 1000.0,
        )

    async def _score_rows(
        self,
        view: ModelView,
        champion: VersionInfo,
        challenger: VersionInfo | None,
        x: np.ndarray,
        to_challenger: np.ndarray,
        *,
        coalesce: bool = True,
    ) -> _Scored:
        n = x.shape[0]
        groups: list[tuple[VersionInfo, str, np.ndarray | None]] = []
        if challenger is not None and to_challenger.any():
            groups.append((champion, ROUTE_CHAMPION, np.flatnonzero(~to_challenger)))
            groups.append((challenger, ROUTE_CHALLENGER, np.flatnonzero(to_challenger)))
        else:
            groups.append((champion, ROUTE_CHAMPION, None))  # None: every row
        policy = self._policy(view.features)
        prepared = [
            scoring.prepare(
                x if rows is None else x[rows],
                policy,
                medians=self._median_vector(info, view.features),
                base_rate=info.base_rate,
            )
            for info, _, rows in groups
        ]
        calls = [
            self._triton_coalescer(view.name, info.version, scoring.output_name(info.task)).submit(p.inputs)
            if coalesce
            else self._triton.infer(view.name, info.version, p.inputs, output=scoring.output_name(info.task))
            for (info, _, _), p in zip(groups, prepared, strict=True)
            if len(p.inputs)
        ]
        outputs = iter([await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls))
        results = [
            scoring.finish(p, next(outputs) if len(p.inputs) else None, info.task)
            for (info, _, _), p in zip(groups, prepared, strict=True)
        ]
        for (info, route, _), p, r in zip(groups, prepared, results, strict=True):
            self._count(view, info, route, p, r)
        if len(groups) == 1:
            r = results[0]
            return _Scored(
                r.scores, r.labels, [champion.version] * n, [ROUTE_CHAMPION] * n, r.imputed, r.fallback
            )
        scores = np.zeros(n, dtype=np.float64)
        labels = np.full(n, -1, dtype=np.int64) if champion.task == "multiclass" else None
        versions = [""] * n
        routes = [""] * n
        imputed: list[tuple[str, ...]] = [()] * n
        fallback = [""] * n
        for (info, route, rows), r in zip(groups, results, strict=True):
            assert rows is not None
            scores[rows] = r.scores
            if labels is not None and r.labels is not None:
                labels[rows] = r.labels
            for k, i in enumerate(rows):
                versions[i] = info.version
                routes[i] = route
                imputed[i] = r.imputed[k]
                fallback[i] = r.fallback[k]
        return _Scored(scores, labels, versions, routes, imputed, fallback)

    def _count(
        self, view: ModelView, info: VersionInfo, route: str, p: scoring.Prepared, r: scoring.Scores
    ) -> None:
        """Metrics of one scored group: missing values, imputations, fallbacks, rows and scores."""
        child = self._metric_child
        if p.missing is not None:
            self._count_per_feature(metrics.MISSING_FEATURES, view, p.missing.sum(axis=0))
            counts = p.imputed_counts
            if counts is not None:
                self._count_per_feature(metrics.IMPUTATIONS, view, counts)
            for reason in r.fallback:
                if reason:
                    child(metrics.FALLBACKS, view.name, reason.split(":")[0]).inc()
        if len(r.scores):
            counter, hist = self._row_metrics(view.name, info.version, route)
            counter.inc(len(r.scores))
            metrics.observe_many(hist, r.scores)

    def _count_per_feature(self, metric: Any, view: ModelView, counts: np.ndarray) -> None:
        """``metric{model, feature}`` += ``counts[j]`` for the features counted (children by position)."""
        key = (metric, view.name, view.features)
        children = self._feature_children.get(key)
        if children is None:
            children = self._feature_children[key] = [None] * len(view.features)
        values = counts.tolist()
        for j in np.flatnonzero(counts).tolist():
            c = children[j]
            if c is None:  # made on first use: a feature never counted exports no series
                c = children[j] = metric.labels(view.name, view.features[j])
            c.inc(values[j])

    def _metric_child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once (a label lookup per batch and feature adds up)."""
        key = (metric, labels)
        found = self._label_children.get(key)
        if found is None:
            found = metric.labels(*labels)
            if len(self._label_children) < 10_000:
                self._label_children[key] = found
        return found

    def _policy(self, features: tuple[str, ...]) -> scoring.MissingValuePolicy:
        policy = self._policy_cache.get(features)
        if policy is None:
            gw = self.settings
            policy = self._policy_cache[features] = scoring.MissingValuePolicy.build(
                features,
                per_feature=gw.missing_policy,
                default=gw.default_missing_policy,
                unknown_entity=gw.unknown_entity_policy,
            )
        return policy

    def _median_vector(self, info: VersionInfo, features: tuple[str, ...]) -> np.ndarray:
        key = (info.version, features)
        vec = self._median_cache.get(key)
        if vec is None or self._median_cache_owner.get(key) is not info:
            vec = self._median_cache[key] = scoring.median_vector(info.medians, features)
            self._median_cache_owner[key] = info
        return vec

    def _row_metrics(self, model: str, version: str, route: str) -> tuple[Any, Any]:
        key = (model, version, route)
        pair = self._metric_children.get(key)
        if pair is None:
            pair = (metrics.PREDICTIONS.labels(model, version, route), metrics.SCORE.labels(model, version))
            self._metric_children[key] = pair
        return pair

    async def _shadow(
        self,
        view: ModelView,
        challenger: VersionInfo,
        x: np.ndarray,
        entity_keys: list[str] | None,
        request_id: str,
    ) -> None:
        try:
            none = np.zeros(len(x), dtype=bool)
            scored = await self._score_rows(view, challenger, None, x, none)
            scored.routes = [ROUTE_SHADOW] * len(x)
            await self._log(view, request_id, datetime.now(UTC), x, entity_keys, scored)
        except Exception as e:
            log.warning("shadow scoring with version %s failed: %s", challenger.version, e)

    async def _log(
        self,
        view: ModelView,
        request_id: str,
        now: datetime,
        x: np.ndarray,
        entity_keys: list[str] | None,
        scored: _Scored,
    ) -> None:
        await self._predlog.put(
            PredictionBatch(
                request_id=request_id,
                timestamp=now,
                model=view.name,
                features=view.features,
                versions=scored.versions,
                routes=scored.routes,
                entity_keys=list(entity_keys) if entity_keys is not None else [None] * len(x),
                values=x,
                scores=scored.scores,
                imputed=[",".join(t) for t in scored.imputed],
                fallback=scored.fallback,
            )
        )

    def _tier(self, score: float, task: str) -> str | None:
        if task != "binary":
            return None
        tier = self._tiers[0][0] if self._tiers else None
        for name, low in self._tiers:
            if score >= low:
                tier = name
        return tier


_id_prefix = secrets.token_hex(8)
_id_counter = itertools.count()


def _new_id_prefix() -> None:
    global _id_prefix
    _id_prefix = secrets.token_hex(8)


os.register_at_fork(after_in_child=_new_id_prefix)


def new_request_id() -> str:
    """A unique 32-hex-digit request id: a random per-process prefix and a counter (no syscall per id)."""
    return f"{_id_prefix}{next(_id_counter):016x}"


def _concat_rows(chunks: list[np.ndarray]) -> np.ndarray:
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0)
