"""One reconcile pass: make the Triton repository and Triton itself match the registry aliases.

Per model, in this order (each step safe to repeat, so a crash anywhere converges next pass):

1. clean staging folders left by dead exports;
2. desired = ``champion`` + ``challenger`` + the last N champions (``desired``), plus up to
   ``prestage_max`` registry versions newer than the champion, staged ahead of their promotion;
3. install missing versions (export -> validation -> atomic move; ``exporter.install``);
4. write ``config.pbtxt`` with the old *and* new versions (routing unchanged) and load it in
   Triton: serving versions stay loaded while the new ones come up;
5. canary every newly loaded version against its ``reference.npz`` (and its explainer companion,
   installed and loaded with it, against the companion's);
6. switch the routing parameters to the versions that passed (a failed version never replaces
   the serving one);
7. after a short grace, rewrite the config without the retired versions, reload (Triton unloads
   them, and holds the new routing so the next promotion only loads the added version) and
   delete their directories.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from exporter.canary import run_canary
from exporter.errors import CanaryError, TritonControlError
from exporter.settings import SyncConfig
from exporter.sync import adapters
from exporter.sync.decide import choose_routing, explain
from exporter.sync.desired import DesiredState, compute_desired
from exporter.sync.fleet import TritonFleet, triton_endpoints
from exporter.sync.lock import sync_lock
from exporter.sync.metrics import SyncMetrics
from exporter.sync.status import ModelStatus, SyncStatus, VersionFailure, read_status, write_status
from exporter.triton_admin import TritonAdminClient
from treeserve import contract
from treeserve.errors import NotFoundError, ServiceUnavailableError, TreeserveError, ValidationFailedError
from treeserve.registry import mlflow_client, newest_versions, read_model_state, record_champion
from treeserve.repository import explainer_name, explainer_versions, read_reference

log = logging.getLogger(__name__)

_STICKY_REASONS = ("validation", "canary", "contract")
"""Failures that would repeat on retry: not re-attempted before ``retry_failed_after_s``."""

_RECHECK_REASONS = ("canary", "triton")
"""Failures of a routed version that every pass checks again (load + canary, no export)."""


@dataclass
class PassResult:
    """The outcome of one pass over every configured model."""

    result: str
    """ok | degraded (a desired version is not served) | failed (the pass was aborted)."""
    trigger: str
    duration_s: float
    models: dict[str, ModelStatus] = field(default_factory=dict)
    error: str = ""
    servers_down: list[str] = field(default_factory=list)
    """Triton servers that did not answer in this pass."""

    @property
    def ok(self) -> bool:
        """True when everything desired is served."""
        return self.result == "ok"


TritonClientFactory = Callable[[str, float], Any]
"""(url, timeout_s) -> a Triton admin client (``TritonAdminClient`` or a fake with its methods)."""

Installer = Callable[[Any, Any, str, str, Path], None]
"""(settings, registry client, model, version, repository) -> the version installed in the repository."""


def _admin_client(url: str, timeout_s: float) -> Any:
    return TritonAdminClient(url, timeout_s=timeout_s)


@dataclass
class _Context:
    settings: SyncConfig
    client: Any
    triton: TritonFleet
    repo: Path
    metrics: SyncMetrics | None
    alias_hints: Mapping[str, float]
    install: Installer


def open_fleet(
    settings: SyncConfig, *, timeout_s: float, triton_client: TritonClientFactory | None = None
) -> TritonFleet:
    """Admin clients for every Triton server of the settings (``triton_dns`` resolved now)."""
    make = triton_client or _admin_client
    return TritonFleet(
        triton_endpoints(settings),
        client_factory=lambda url: make(url, timeout_s),
        source=settings.sync.triton_dns,
    )


def reconcile_once(
    settings: SyncConfig,
    *,
    client: Any = None,
    trigger: str = "manual",
    metrics: SyncMetrics | None = None,
    alias_hints: Mapping[str, float] | None = None,
    lock_timeout_s: float | None = None,
    triton_client: TritonClientFactory | None = None,
    installer: Installer | None = None,
) -> PassResult:
    """Run one pass under the sync lock, write the status file and return what happened.

    ``alias_hints`` maps ``"<model>:<alias>=<version>"`` to the unix time the alias was set
    (from webhooks), for the promotion-latency metric. Raises SyncBusyError when another sync
    holds the lock; every other failure is reported in the result and the status file.
    """
    timeout_s = settings.sync.lock_timeout_s if lock_timeout_s is None else lock_timeout_s
    with sync_lock(settings.path(settings.sync.lock_file), timeout_s=timeout_s):
        return _pass(
            settings,
            client=client,
            trigger=trigger,
            metrics=metrics,
            alias_hints=alias_hints or {},
            triton_client=triton_client,
            install=installer or adapters.install,
        )


def _pass(
    settings: SyncConfig,
    *,
    client: Any,
    trigger: str,
    metrics: SyncMetrics | None,
    alias_hints: Mapping[str, float],
    triton_client: TritonClientFactory | None,
    install: Installer,
) -> PassResult:
    started = time.time()
    status_path = settings.path(settings.sync.status_file)
    previous = read_status(status_path)
    repo = settings.path(settings.exporter.repository)
    if client is None:
        client = mlflow_client(settings.mlflow_tracking_uri)
    triton = open_fleet(settings, timeout_s=settings.triton.load_timeout_s, triton_client=triton_client)
    triton.check()
    ctx = _Context(settings, client, triton, repo, metrics, alias_hints, install)
    models: dict[str, ModelStatus] = {}
    errors: list[str] = []
    try:
        adapters.cleanup_staging(repo)
        for model in settings.sync.models:
            mstatus = previous.models.get(model) or ModelStatus()
            try:
                _reconcile_model(ctx, model, mstatus)
            except TreeserveError as e:
                reason = _abort_reason(e)
                mstatus.in_sync = False
                mstatus.message = f"pass aborted: {e}"
                errors.append(f"{model}: {e}")
                _count_failure(ctx, model, reason)
                log.warning("decision=abort model=%s reason=%s error=%s", model, reason, e)
            models[model] = mstatus
    finally:
        triton.close()
    servers = triton.report()
    ended = time.time()
    down = {u: v["error"] for u, v in servers.items() if not v["up"]}
    if errors:
        result = "failed"
    elif all(m.in_sync for m in models.values()) and not down:
        result = "ok"
    else:
        result = "degraded"
    if down and not errors:
        # Served by the others; the first pass that finds a server back brings it in line.
        errors_text = "; ".join(f"Triton {u} is down ({e})" for u, e in down.items())
        log.warning("decision=degraded servers_down=%s", ",".join(down))
    else:
        errors_text = ""
    status = SyncStatus(
        updated_at=ended,
        trigger=trigger,
        result=result,
        error="; ".join(errors) or errors_text,
        duration_s=round(ended - started, 3),
        models=models,
        servers=servers,
    )
    write_status(status_path, status)
    if metrics is not None:
        metrics.record_pass(result, trigger, ended - started, ended)
        metrics.record_servers(servers)
    log.info("decision=pass-done result=%s trigger=%s duration_s=%.2f", result, trigger, ended - started)
    return PassResult(
        result=result,
        trigger=trigger,
        duration_s=ended - started,
        models=models,
        error=status.error,
        servers_down=sorted(down),
    )


def _reconcile_model(ctx: _Context, model: str, st: ModelStatus) -> None:
    """Bring one model to its desired state, updating ``st`` in place."""
    restored = _load_routed_first(ctx, model)
    now = time.time()
    state = read_model_state(ctx.client, model)
    aliases = state.aliases
    _note_alias_times(ctx, model, aliases, st, now)
    current = adapters.read_current(ctx.repo, model)
    old_routing = dict(current.routing) if current else {}
    old_versions = [str(v) for v in current.versions] if current else []
    desired = compute_desired(
        model, aliases, state.champion_history, keep_champions=ctx.settings.sync.keep_champions
    )
    st.desired_aliases = dict(desired.aliases)
    st.retained = list(desired.retained)
    st.desired_versions = list(desired.versions)
    prestage = _prestage_targets(ctx, model, desired, st.prestaged)
    wanted = [*desired.versions, *prestage]
    # Forget failures of versions nobody wants any more.
    st.failures = {v: f for v, f in st.failures.items() if v in wanted}

    # 3. install what is missing (pre-staged versions too: a promotion to one is a routing switch).
    installed = adapters.installed(ctx.repo, model)
    for v in wanted:
        if v in installed or _still_failing(ctx, st, v, now):
            continue
        adapters.prepare_install()
        log.info("decision=install model=%s version=%s", model, v)
        try:
            ctx.install(ctx.settings, ctx.client, model, v, ctx.repo)
        except ValidationFailedError as e:
            _fail(ctx, st, model, v, "validation", str(e))
            continue
        except ServiceUnavailableError:
            raise
        except TreeserveError as e:
            _fail(ctx, st, model, v, "export", str(e))
            continue
        st.failures.pop(v, None)
        installed.add(v)

    keep_serving = [v for v in old_routing.values() if v in installed]
    # A routed version that failed its canary or did not come up (a Triton restarted mid-load, a
    # server answering wrongly for a while) is checked again by every pass: its files are kept and
    # no export is repeated, so the check is cheap, and serving heals without waiting out
    # ``retry_failed_after_s`` (level-triggered, like everything else the pass does).
    recheck = {v for v in keep_serving if v in st.failures and st.failures[v].reason in _RECHECK_REASONS}
    for v in recheck:
        log.info("decision=recheck model=%s version=%s reason=%s", model, v, st.failures.pop(v).reason)
    # One Triton model serves one contract: the serving version's, or (nothing served yet) the
    # first wanted version's — the champion before a challenger or a staged version.
    usable = [v for v in wanted if v in installed and v not in st.failures]
    reference = keep_serving[0] if keep_serving else (usable[0] if usable else None)
    for v in usable:
        if reference is not None:
            why = adapters.contract_mismatch(ctx.repo, model, v, reference, serving=bool(keep_serving))
            if why:
                _fail(ctx, st, model, v, "contract", why)
    candidates = [v for v in wanted if v in installed and v not in st.failures]
    # Versions loaded now stay in the config until after the switch (step 7 retires them): a
    # promotion to a loaded version then changes nothing in Triton before the routing moves.
    still_loaded = [v for v in old_versions if v in installed]
    load_set = _ordered({*candidates, *keep_serving, *still_loaded})
    if not load_set:
        st.installed_versions = sorted(installed, key=int)
        st.routing, st.served_versions, st.prestaged = old_routing, [], []
        _finish(ctx, model, st, desired.aliases)
        return

    # 4. config with old + new versions, routing unchanged; load.
    ready_before = ctx.triton.ready_versions(model)
    staged_routing = {a: v for a, v in old_routing.items() if v in load_set}
    spec = adapters.build_spec(ctx.settings, ctx.repo, model, versions=load_set, routing=staged_routing)
    if (
        sorted(load_set, key=int) != sorted(old_versions, key=int)
        or current is None
        or staged_routing != old_routing
    ):
        adapters.write_config(ctx.settings, ctx.repo, spec)
    per_server = ctx.triton.ready_by_server(model)
    if any(ready_on != set(load_set) for ready_on in per_server.values()):
        log.info("decision=load model=%s versions=%s", model, ",".join(load_set))
        # After a routed-first load Triton holds that config and takes an unchanged file for
        # loaded: the full set then goes as an override too.
        override = adapters.config_override(ctx.repo, model, set(load_set)) if restored else None
        _load(ctx, model, unless_ready=set(load_set), config=override)
    ready = ctx.triton.ready_versions(model)

    # 5. canary what was (re)loaded.
    for v in candidates:
        if v not in ready:
            _fail(ctx, st, model, v, "triton", f"version {v} did not become ready in Triton")
        elif v not in ready_before or v in recheck or v in restored:
            try:
                _canary(ctx, model, v, spec.output_names)
            except CanaryError as e:
                _fail(ctx, st, model, v, "canary", str(e))

    # 6. switch routing.
    new_routing = choose_routing(desired.aliases, old_routing, ready, st.failures)
    for alias, had in old_routing.items():
        # The last version serving an alias is never dropped (nor deleted below): failing to load
        # it now (a restarted Triton, a canary) leaves the alias unserved until a pass succeeds.
        still_wanted = alias in desired.aliases or alias == contract.ALIAS_CHAMPION
        if still_wanted and alias not in new_routing and had in installed:
            log.error("decision=keep-unserved model=%s alias=%s version=%s", model, alias, had)
            new_routing[alias] = had
    if new_routing != staged_routing:
        spec = spec.with_routing(new_routing)
        adapters.write_config(ctx.settings, ctx.repo, spec)
        log.info("decision=switch model=%s routing=%s previous=%s", model, new_routing, old_routing)
        _observe_latency(ctx, model, new_routing, old_routing, st)

    # 7. retire what is no longer wanted.
    final = _ordered(
        {v for v in candidates if v in ready and v not in st.failures} | set(new_routing.values())
    )
    retired = set(load_set) - set(final)
    if retired or new_routing != staged_routing:
        if retired and new_routing != old_routing and ctx.settings.sync.unload_grace_s > 0:
            time.sleep(ctx.settings.sync.unload_grace_s)  # gateways re-read the routing first
        spec = spec.with_routing(new_routing, tuple(int(v) for v in final))
        adapters.write_config(ctx.settings, ctx.repo, spec)
        # Reload even for a routing-only change: Triton then holds the file's config, so the next
        # promotion changes only version_policy and Triton loads just the new version instead of
        # reloading every version (measured: ~3 s instead of ~6 s with three versions).
        log.info(
            "decision=%s model=%s keep=%s retired=%s",
            "unload" if retired else "reload-config",
            model,
            ",".join(final),
            ",".join(sorted(retired, key=int)),
        )
        _load(ctx, model)
        ready = ctx.triton.ready_versions(model)
    for v in sorted(installed - set(final), key=int):
        log.info("decision=remove model=%s version=%s", model, v)
        adapters.remove_version(ctx.repo, model, v)
        installed.discard(v)

    st.routing = new_routing
    served_champion = new_routing.get(contract.ALIAS_CHAMPION)
    if served_champion is not None and served_champion == aliases.get(contract.ALIAS_CHAMPION):
        # A champion moved outside the gate is recorded once served, so rollback can return to it.
        try:
            record_champion(ctx.client, state, served_champion)
        except ServiceUnavailableError as e:
            log.warning(
                "decision=history-not-recorded model=%s version=%s error=%s", model, served_champion, e
            )
    st.served_versions = sorted(ready, key=int)
    st.installed_versions = sorted(installed, key=int)
    st.prestaged = [v for v in prestage if v in ready and v not in st.failures]
    _finish(ctx, model, st, desired.aliases)


def _load_routed_first(ctx: _Context, model: str) -> set[str]:
    """On servers lacking a routed version (restarted, started empty), load the routed versions
    alone, before the registry is read and before the kept and staged versions (step 4 loads those
    next), then the explainer companion: the served version is READY seconds sooner.

    Returns the versions loaded so; this pass canaries them like any newly loaded version. Only a
    head start: a failure here is logged and left to step 4.
    """
    try:
        current = adapters.read_current(ctx.repo, model)
    except TreeserveError:
        return set()  # an unreadable config is the pass's to report
    routed = set(current.routing.values()) if current is not None else set()
    if not routed:
        return set()
    lacking = [url for url, ready in ctx.triton.ready_by_server(model).items() if not routed <= ready]
    if not lacking:
        return set()
    log.info(
        "decision=load-routed-first model=%s versions=%s servers=%s",
        model,
        ",".join(_ordered(routed)),
        ",".join(lacking),
    )
    try:
        ctx.triton.load(model, config=adapters.config_override(ctx.repo, model, routed), servers=lacking)
    except TreeserveError as e:
        log.warning("decision=load-routed-first-failed model=%s error=%s", model, e)
    return routed


def _prestage_targets(
    ctx: _Context, model: str, desired: DesiredState, staged_before: list[str]
) -> list[str]:
    """Registry versions newer than the champion to stage ahead of a promotion, newest first.

    Up to ``sync.prestage_max`` beyond the desired (served and kept) versions. Staging is a head
    start, not a duty: a registry that cannot list versions now keeps what was staged before and
    leaves the rest to the next pass.
    """
    limit = ctx.settings.sync.prestage_max
    champion = desired.champion
    if limit <= 0 or champion is None:
        return []
    try:
        newest = newest_versions(ctx.client, model, limit=limit + len(desired.versions))
    except ServiceUnavailableError as e:
        log.warning("decision=prestage-skipped model=%s error=%s", model, e)
        newest = list(staged_before)
    targets = [v for v in newest if int(v) > int(champion) and v not in desired.versions][:limit]
    if targets:
        log.info("decision=prestage model=%s versions=%s", model, ",".join(targets))
    return targets


def _finish(ctx: _Context, model: str, st: ModelStatus, desired: Mapping[str, str]) -> None:
    """Work out in_sync and the human explanation; publish gauges."""
    st.in_sync, st.message = explain(st, desired)
    if ctx.metrics is not None:
        ctx.metrics.versions_desired.labels(model=model).set(len(st.desired_versions))
        ctx.metrics.versions_served.labels(model=model).set(len(st.served_versions))
        ctx.metrics.in_sync.labels(model=model).set(1.0 if st.in_sync else 0.0)
    log.info("decision=status model=%s in_sync=%s message=%s", model, st.in_sync, st.message)


def _note_alias_times(
    ctx: _Context, model: str, aliases: Mapping[str, str], st: ModelStatus, now: float
) -> None:
    """Remember when each current alias target was first known (webhook time when we have it)."""
    keep: dict[str, float] = {}
    for alias, v in aliases.items():
        key = f"{alias}={v}"
        hint = ctx.alias_hints.get(f"{model}:{key}")
        seen = st.alias_seen_at.get(key)
        keep[key] = min(x for x in (seen, hint, now) if x is not None)
    st.alias_seen_at = keep


def _observe_latency(
    ctx: _Context, model: str, new: Mapping[str, str], old: Mapping[str, str], st: ModelStatus
) -> None:
    now = time.time()
    for alias, v in new.items():
        if old.get(alias) == v:
            continue
        seen = st.alias_seen_at.get(f"{alias}={v}")
        if seen is None:
            continue
        latency_s = max(0.0, now - seen)
        log.info("decision=promoted model=%s alias=%s version=%s latency_s=%.3f", model, alias, v, latency_s)
        if ctx.metrics is not None:
            ctx.metrics.promotion_latency.labels(model=model, alias=alias).observe(latency_s)


def _still_failing(ctx: _Context, st: ModelStatus, version: str, now: float) -> bool:
    f = st.failures.get(version)
    return bool(f and f.reason in _STICKY_REASONS and now - f.at < ctx.settings.sync.retry_failed_after_s)


def _fail(ctx: _Context, st: ModelStatus, model: str, version: str, reason: str, message: str) -> None:
    st.failures[version] = VersionFailure(reason=reason, message=message, at=time.time())
    _count_failure(ctx, model, reason)
    log.warning("decision=reject model=%s version=%s reason=%s message=%s", model, version, reason, message)


def _count_failure(ctx: _Context, model: str, reason: str) -> None:
    if ctx.metrics is not None:
        ctx.metrics.failures.labels(model=model, reason=reason).inc()


def _load(
    ctx: _Context, model: str, *, unless_ready: set[str] | None = None, config: str | None = None
) -> None:
    try:
        ctx.triton.load(model, unless_ready=unless_ready, config=config)
    except TritonControlError as e:
        # A version that fails to load makes the whole load call fail; what did come up is read
        # back afterwards, so only Triton being unreachable aborts the pass.
        if not ctx.triton.live():
            raise
        log.warning("decision=load-partial model=%s error=%s", model, e)


def _canary(ctx: _Context, model: str, version: str, outputs: tuple[str, ...]) -> None:
    """Triton's answer for the stored reference inputs must match the stored outputs."""
    ex = ctx.settings.exporter
    reference = read_reference(ctx.repo, model, version)
    for url, server in ctx.triton.each():  # every server answers the same, or the version is refused
        infer: Callable[[Any, Any], Any] = partial(server.infer, model, version)
        try:
            run_canary(
                infer,
                reference,
                model=model,
                version=version,
                outputs=outputs,
                batch_rows=min(256, ex.max_batch_size),
                atol=ex.proba_atol,
                rtol=ex.regression_rtol,
            )
        except CanaryError as e:
            raise CanaryError(f"on Triton {url}: {e}") from e
    if int(version) not in explainer_versions(ctx.repo, model):
        return  # installed before explanations existed: predictions only
    explained = read_reference(ctx.repo, explainer_name(model), version)
    for url, server in ctx.triton.each():
        try:
            server.explainer_canary(model, version, explained, batch_rows=min(256, ex.max_batch_size))
        except CanaryError as e:
            raise CanaryError(f"on Triton {url}: {e}") from e


def _abort_reason(e: TreeserveError) -> str:
    if isinstance(e, TritonControlError):
        return "triton"
    if isinstance(e, NotFoundError | ServiceUnavailableError):
        return "registry"
    return "repository"


def _ordered(versions: set[str] | list[str]) -> list[str]:
    return sorted(set(versions), key=int)
