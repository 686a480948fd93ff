"""``treeserve sync --watch``: the reconcile loop plus the webhook receiver in one process.

The loop (main thread) runs a pass when a verified alias webhook arrives, when a Triton server is
found without a routed version (restarted, new, or back: checked every ``health_interval_s``), or
when the poll interval has passed, whichever comes first. The receiver (uvicorn in a thread) serves
``POST /webhooks/mlflow``, ``GET /healthz``, ``GET /metrics`` and ``GET /status``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from exporter.settings import SyncConfig
from exporter.sync.errors import SyncBusyError, WebhookRejectedError
from exporter.sync.metrics import SyncMetrics
from exporter.sync.reconcile import Installer, PassResult, TritonClientFactory, reconcile_once
from exporter.sync.status import read_status
from exporter.sync.webhook import AliasEvent, DeliveryDeduper, parse_alias_event, verify
from treeserve.registry import fail_fast_registry

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/mlflow"

DOWN_RECHECK_S = 0.2
"""Seconds between health checks while a Triton server does not answer (capped by
``health_interval_s``): its restart is noticed within this rather than ``health_interval_s``, for
one refused connection per check."""


class SyncService:
    """Wake-ups in, passes out: the state shared by the loop and the receiver."""

    def __init__(
        self,
        settings: SyncConfig,
        *,
        metrics: SyncMetrics | None = None,
        registry: Any = None,
        triton_client: TritonClientFactory | None = None,
        installer: Installer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``registry``, ``triton_client`` and ``installer`` are the outside systems (None: the real
        ones); ``clock`` (monotonic seconds) spaces repeated health wake-ups."""
        self.settings = settings
        self.metrics = metrics or SyncMetrics()
        self.registry = registry
        self.triton_client = triton_client
        self.installer = installer
        self._clock = clock
        self.deduper = DeliveryDeduper()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._hints: dict[str, float] = {}
        self._health_seen: dict[str, float] = {}
        self._server_down = False
        """The last pass or health check found a Triton server that does not answer."""
        self.last_result: PassResult | None = None

    # ---- receiver side ---------------------------------------------------------------------
    def accept(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """Handle one delivery: (HTTP status, JSON body). Wakes the loop for watched models."""
        sync = self.settings.sync
        try:
            delivery_id = verify(headers, body, secret=sync.webhook_secret, max_age_s=sync.webhook_max_age_s)
        except WebhookRejectedError as e:
            self.metrics.webhooks.labels(outcome="rejected").inc()
            log.warning("decision=webhook-rejected reason=%s", e.reason)
            return 401, {"error": e.reason}
        if not self.deduper.first_time(delivery_id):
            self.metrics.webhooks.labels(outcome="duplicate").inc()
            return 200, {"accepted": False, "duplicate": True}
        event = parse_alias_event(delivery_id, headers, body)
        if event is None or event.model not in sync.models:
            self.metrics.webhooks.labels(outcome="ignored").inc()
            return 200, {"accepted": False, "ignored": True}
        self.metrics.webhooks.labels(outcome="accepted").inc()
        self.notify(event)
        return 200, {"accepted": True}

    def notify(self, event: AliasEvent) -> None:
        """Remember when the alias moved and wake the loop."""
        log.info(
            "decision=wake model=%s alias=%s version=%s action=%s delivery=%s",
            event.model,
            event.alias,
            event.version,
            event.action,
            event.delivery_id,
        )
        if event.version is not None and event.alias:
            with self._lock:
                self._hints[f"{event.model}:{event.alias}={event.version}"] = event.sent_at
        self._wake.set()

    # ---- loop side ---------------------------------------------------------------------------
    def run_pass(self, trigger: str) -> PassResult | None:
        """One pass; None when another sync held the lock for too long."""
        with self._lock:
            hints = dict(self._hints)
        try:
            result = reconcile_once(
                self.settings,
                trigger=trigger,
                metrics=self.metrics,
                alias_hints=hints,
                lock_timeout_s=max(self.settings.sync.lock_timeout_s, 30.0),
                client=self.registry,
                triton_client=self.triton_client,
                installer=self.installer,
            )
        except SyncBusyError as e:
            log.warning("decision=skip reason=busy error=%s", e)
            return None
        with self._lock:
            cutoff = time.time() - 3600
            self._hints = {k: t for k, t in self._hints.items() if t > cutoff}
        self.last_result = result
        self._server_down = bool(result.servers_down)
        return result

    def run(self, stop: threading.Event) -> None:
        """Pass at start, then on every wake-up or poll interval, until ``stop`` is set."""
        trigger = "start"
        while not stop.is_set():
            self._wake.clear()
            try:
                self.run_pass(trigger)
            except Exception:  # keep serving: the next pass retries
                log.exception("decision=pass-crashed")
            trigger = self._wait(stop)

    def _wait(self, stop: threading.Event) -> str:
        """Block until the next pass is due; its trigger: webhook, health or poll."""
        sync = self.settings.sync
        deadline = time.monotonic() + sync.poll_interval_s
        next_health = time.monotonic() + self._health_every()
        while not stop.is_set():
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                return "poll"
            if now >= next_health:
                reason = self.needs_pass()
                next_health = time.monotonic() + self._health_every()
                if reason is not None:
                    return "health"
            if self._wake.wait(timeout=max(0.01, min(left, next_health - time.monotonic(), 0.5))):
                return "webhook"
        return "poll"

    def _health_every(self) -> float:
        """``health_interval_s``; ``DOWN_RECHECK_S`` while a server does not answer."""
        every = self.settings.sync.health_interval_s
        return min(every, DOWN_RECHECK_S) if self._server_down else every

    def needs_pass(self) -> str | None:
        """Why a pass is needed now: an up server lacks a version the routing names (restarted,
        started empty, new behind the DNS name, back after an outage); None when all are in line.

        The same reason does not trigger again within ``poll_interval_s`` (a server that refuses a
        load is retried by the poll, not every second).
        """
        from exporter.sync import adapters
        from exporter.sync.reconcile import open_fleet

        sync = self.settings.sync
        repo = self.settings.path(self.settings.exporter.repository)
        routed: dict[str, set[str]] = {}
        for model in sync.models:
            try:
                current = adapters.read_current(repo, model)
            except Exception:  # an unreadable config is the pass's to report
                continue
            if current is not None and current.routing:
                routed[model] = set(current.routing.values())
        if not routed:
            return None
        fleet = open_fleet(
            self.settings,
            timeout_s=max(1.0, min(5.0, sync.health_interval_s * 2)),
            triton_client=self.triton_client,
        )
        down = False
        try:
            for url, client in fleet.clients.items():
                if not client.live():
                    down = True
                    continue
                for model, versions in routed.items():
                    try:
                        missing = versions - client.ready_versions(model)
                    except Exception:
                        continue
                    if missing:
                        reason = f"{url} lacks {model} {','.join(sorted(missing, key=int))}"
                        now = self._clock()
                        if now - self._health_seen.get(reason, -1e9) < sync.poll_interval_s:
                            continue
                        self._health_seen[reason] = now
                        self.metrics.health_wakeups.labels(server=url).inc()
                        log.info("decision=wake reason=health server=%s detail=%s", url, reason)
                        return reason
        finally:
            fleet.close()
            self._server_down = down
        return None


def create_app(service: SyncService) -> Starlette:
    """The receiver: webhook, health, metrics and the status file as JSON."""

    async def webhook(request: Request) -> Response:
        body = await request.body()
        code, payload = service.accept(dict(request.headers), body)
        return JSONResponse(payload, status_code=code)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def status(_: Request) -> Response:
        st = read_status(service.settings.path(service.settings.sync.status_file))
        return JSONResponse(st.to_json())

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, webhook, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Route("/status", status),
        ]
    )


def serve(settings: SyncConfig, *, stop: threading.Event | None = None) -> None:
    """Run the receiver in a thread and the loop in this one until ``stop`` (SIGTERM, Ctrl-C)."""
    import uvicorn

    stop = stop or threading.Event()
    fail_fast_registry()  # a registry outage fails a pass in seconds; health checks keep running
    if threading.current_thread() is threading.main_thread():
        # a pass in progress finishes before the loop stops
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    service = SyncService(settings)
    config = uvicorn.Config(
        create_app(service),
        host=settings.sync.webhook_host,
        port=settings.sync.webhook_port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="sync-webhook", daemon=True)
    thread.start()
    log.info(
        "sync service listening on http://%s:%d%s poll_interval_s=%s",
        settings.sync.webhook_host,
        settings.sync.webhook_port,
        WEBHOOK_PATH,
        settings.sync.poll_interval_s,
    )
    try:
        service.run(stop)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
