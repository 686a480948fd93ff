"""Inference adapter: one or many Triton servers, over HTTP/1.1 or gRPC.

The transport is ``gateway.triton.protocol`` (``auto``: gRPC when only gRPC addresses are
configured, else HTTP): ``gateway.triton_http`` (kept-alive HTTP/1.1 connections, the
binary-tensor extension: the default, cheaper per call; the sync loads models over gRPC because a
load over Triton's HTTP API pauses its HTTP endpoint) or ``gateway.triton_grpc`` (one ``grpc.aio``
channel).

One channel per server (``*_url``, ``*_urls``, or every address of ``*_dns``, re-resolved while
the gateway runs). Each call goes to the server with the fewest outstanding
requests among those whose breaker is closed (ties in turn); every call has a deadline; an
UNAVAILABLE or not-found answer is retried on another server (bounded, jittered backoff once every
server was tried) while the deadline allows. A breaker per server stops calling one that keeps
failing; it closes again only when a readiness probe finds the routed version READY there. The
model version is always explicit (pinned from the routing). Both transports report a failed call
as a ``TritonCallError`` carrying the gRPC status name; it is mapped here, by that name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from gateway import metrics
from gateway.breaker import READY_RECHECK_S, CircuitBreaker
from gateway.errors import CircuitOpenError, DeadlineExceededError, TritonCallError, TritonUnavailableError
from gateway.settings import GatewayTritonSettings
from gateway.triton_grpc import GrpcTritonChannel, InferRequestTemplate
from gateway.triton_http import HttpInferRequestTemplate, HttpTritonChannel
from treeserve.endpoints import resolve

log = logging.getLogger(__name__)


class InferenceClient(Protocol):
    """Scores feature rows with one pinned model version."""

    async def infer(self, model: str, version: str, features: np.ndarray, *, output: str) -> np.ndarray:
        """Run ``features`` (float32 [n, n_features], NaN missing) and return ``output`` [n, k]."""
        ...

    async def server_ready(self) -> bool:
        """True when the inference server answers ready."""
        ...

    async def model_ready(self, model: str, version: str) -> bool:
        """True when ``model`` version ``version`` is loaded and ready."""
        ...

    def degraded(self) -> dict[str, str]:
        """Servers that are not serving the routed version -> why (empty when all are)."""
        ...

    async def aclose(self) -> None:
        """Close the channel."""
        ...


class TritonChannel(Protocol):
    """The calls the gateway makes on one Triton server, either transport (tests fake it: no network).

    Failures raise ``gateway.errors.TritonCallError``.
    """

    async def infer(self, request: Any, *, output: str, timeout_s: float) -> np.ndarray | None:
        """Run a request built by the transport's template; ``output`` (None when absent)."""
        ...

    async def model_ready(self, model: str, version: str, *, timeout_s: float) -> bool:
        """Is this version loaded and ready?"""
        ...

    async def server_ready(self, *, timeout_s: float) -> bool:
        """Is the server ready?"""
        ...

    async def close(self) -> None:
        """Close the connections."""
        ...


class RequestTemplate(Protocol):
    """Builds a transport's request for one (model, version, output); only the rows vary."""

    def request(self, x: np.ndarray) -> Any:
        """The request for ``x`` (float32 [n, n_features])."""
        ...


_TRANSPORTS: dict[str, tuple[Callable[[str], TritonChannel], Callable[[str, str, str], RequestTemplate]]] = {
    "http": (HttpTritonChannel, HttpInferRequestTemplate),
    "grpc": (GrpcTritonChannel, InferRequestTemplate),
}
"""protocol -> (channel per server URL, request template per (model, version, output))."""

_RETRYABLE = {"UNAVAILABLE", "NOT_FOUND"}
"""Another server may answer: this one is down, restarting, or has not loaded the version."""
_TIMEOUT = {"DEADLINE_EXCEEDED"}
_ROUTED_TTL_S = 30.0
"""A version called within this long counts as routed for the readiness probes."""


class TritonServerChannel:
    """One Triton server: its channel, its breaker, the calls in flight and its last verdict."""

    def __init__(self, url: str, settings: GatewayTritonSettings, channel: TritonChannel) -> None:
        self.url = url
        self.channel = channel
        self.breaker = CircuitBreaker(
            failures=settings.breaker_failures, reset_s=settings.breaker_reset_s, target=url
        )
        self.outstanding = 0
        self.problem = ""
        """Why this server does not serve (empty when it does), from the last probe or call."""


class _Retryable(Exception):
    def __init__(self, error: TritonUnavailableError) -> None:
        self.error = error


class TritonClient:
    """``InferenceClient`` over one or many Triton servers (HTTP/1.1 or gRPC)."""

    def __init__(
        self,
        settings: GatewayTritonSettings,
        *,
        channel_factory: Callable[[str], TritonChannel] | None = None,
    ) -> None:
        """``channel_factory(url)`` replaces the channel of each server (tests: no network)."""
        self._settings = settings
        self.protocol = settings.transport()
        channel, self._template = _TRANSPORTS[self.protocol]
        self._factory: Callable[[str], TritonChannel] = channel_factory or channel
        self._dns = settings.dns()
        self._servers: dict[str, TritonServerChannel] = {}
        self._routed: dict[tuple[str, str], float] = {}
        self._templates: dict[tuple[str, str, str], RequestTemplate] = {}
        self._turn = 0
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[Any]] = set()
        self._set_servers(resolve(self._dns) if self._dns else settings.endpoints())

    @property
    def servers(self) -> list[TritonServerChannel]:
        """The servers in use."""
        return list(self._servers.values())

    def _set_servers(self, urls: list[str]) -> None:
        for url in urls:
            if url not in self._servers:
                log.info("Triton server added (%s): %s", self.protocol, url)
                self._servers[url] = TritonServerChannel(url, self._settings, self._factory(url))
        for url in [u for u in self._servers if u not in urls]:
            log.info("Triton server removed: %s", url)
            gone = self._servers.pop(url)
            gone.breaker.forget()
            with contextlib.suppress(RuntimeError):  # no loop (construction in a test): nothing to close
                task = asyncio.get_running_loop().create_task(gone.channel.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    # ---- inference ------------------------------------------------------------------------
    async def infer(self, model: str, version: str, features: np.ndarray, *, output: str) -> np.ndarray:
        """One inference call (split into chunks of ``max_batch_size`` rows)."""
        self._start_watch()
        self._routed[(model, version)] = time.monotonic()
        n = features.shape[0]
        step = self._settings.max_batch_size
        if n <= step:
            return await self._infer_one(model, version, features, output)
        parts = [
            await self._infer_one(model, version, features[i : i + step], output) for i in range(0, n, step)
        ]
        return np.concatenate(parts, axis=0)

    def _pick(self, exclude: set[str]) -> tuple[TritonServerChannel, bool] | None:
        """(server, is the half-open probe) with the fewest calls in flight, or None."""
        servers = [s for s in self._servers.values() if s.url not in exclude]
        closed = [s for s in servers if s.breaker.state == CircuitBreaker.CLOSED]
        if closed:
            fewest = min(s.outstanding for s in closed)
            ties = [s for s in closed if s.outstanding == fewest]
            self._turn += 1
            return ties[self._turn % len(ties)], False
        for s in sorted(servers, key=lambda s: s.outstanding):
            probe = s.breaker.admit()
            if probe is not None:
                return s, probe
        return None

    async def _infer_one(self, model: str, version: str, features: np.ndarray, output: str) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        template = self._templates.get((model, version, output))
        if template is None:
            template = self._templates[(model, version, output)] = self._template(model, version, output)
        request = template.request(x)  # built once, sent to whichever server answers
        t0 = time.monotonic()
        deadline = t0 + self._settings.timeout_s
        tried: set[str] = set()
        attempt = 0
        last: TritonUnavailableError | None = None
        while True:
            picked = self._pick(tried)
            if picked is None:
                if last is None:
                    metrics.TRITON_ERRORS.labels(model, version, "circuit_open").inc()
                    raise CircuitOpenError(
                        f"every Triton server ({', '.join(self._servers) or 'none resolved'}) failed "
                        f"repeatedly; not calling them for {self._settings.breaker_reset_s:g} s "
                        f"(model {model!r} version {version})"
                    )
                metrics.TRITON_ERRORS.labels(model, version, "unavailable").inc()
                raise last
            server, probe = picked
            try:
                out = await self._call(server, probe, model, version, request, output, deadline)
            except _Retryable as e:
                last = e.error
                tried.add(server.url)
                attempt += 1
                left = deadline - time.monotonic()
                if attempt > self._settings.max_retries or left <= 0:
                    metrics.TRITON_ERRORS.labels(model, version, "unavailable").inc()
                    raise e.error from None
                metrics.TRITON_RETRIES.labels(model, version).inc()
                if len(tried) >= len(self._servers):  # every server failed once: pause, then again
                    tried.clear()
                    backoff = self._settings.retry_backoff_s * (2 ** (attempt - 1))
                    await asyncio.sleep(min(random.uniform(0, backoff), max(left, 0)))
                continue
            metrics.TRITON_DURATION.labels(model, version).observe(time.monotonic() - t0)
            return out.reshape(x.shape[0], -1)

    async def _call(
        self,
        server: TritonServerChannel,
        probe: bool,
        model: str,
        version: str,
        request: bytes,
        output: str,
        deadline: float,
    ) -> np.ndarray:
        """One attempt on one server; _Retryable when another server may answer."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if probe:
                server.breaker.probe_done()
            metrics.TRITON_ERRORS.labels(model, version, "timeout").inc()
            raise DeadlineExceededError(
                f"Triton did not answer within {self._settings.timeout_s:g} s (model {model!r} version {version})"
            )
        server.outstanding += 1
        try:
            if probe and not await self._probe(server, model, version):
                server.breaker.probe_done()
                raise _Retryable(
                    TritonUnavailableError(
                        f"model {model!r} version {version} is not ready in Triton at {server.url}"
                    )
                )
            out = await server.channel.infer(request, output=output, timeout_s=remaining)
        except TritonCallError as e:
            # Refused calls count too: the breaker tracks whether the routed version serves there.
            server.breaker.failure()
            status, details = e.code, e.details
            if status in _TIMEOUT:
                metrics.TRITON_ERRORS.labels(model, version, "timeout").inc()
                raise DeadlineExceededError(
                    f"Triton at {server.url} did not answer within {self._settings.timeout_s:g} s "
                    f"(model {model!r} version {version})"
                ) from e
            server.problem = f"{status.lower()}: {details}"
            error = TritonUnavailableError(
                f"Triton at {server.url} is unavailable or refused model {model!r} version {version}: "
                f"{details}"
            )
            if status in _RETRYABLE:
                raise _Retryable(error) from e
            metrics.TRITON_ERRORS.labels(model, version, "error").inc()
            raise error from e
        except BaseException:
            if probe:
                server.breaker.probe_done()
            raise
        finally:
            server.outstanding -= 1
        server.breaker.success()
        server.problem = ""
        if out is None:
            raise TritonUnavailableError(f"Triton returned no {output!r} output for model {model!r}")
        return out

    # ---- health -----------------------------------------------------------------------------
    async def _probe(self, server: TritonServerChannel, model: str, version: str) -> bool:
        """Is ``version`` READY on ``server``? READY closes its breaker (probe and breaker agree)."""
        try:
            ready = await server.channel.model_ready(model, version, timeout_s=self._settings.timeout_s)
            why = "" if ready else f"version {version} of {model!r} is not ready"
        except TritonCallError as e:
            ready, why = False, f"unreachable: [{e.code}] {e.details}"
        except Exception as e:
            ready, why = False, f"unreachable: {e}"
        server.problem = why
        if server.breaker.state != CircuitBreaker.CLOSED:
            if ready:
                server.breaker.success()
            elif why.startswith("unreachable"):
                server.breaker.failure()  # not answering: the next probe after the full reset_s
            else:
                server.breaker.not_ready()  # answering, loading: probed again shortly
        return ready

    async def server_ready(self) -> bool:
        """At least one server answers ``ServerReady``."""

        async def one(server: TritonServerChannel) -> bool:
            try:
                up = await server.channel.server_ready(timeout_s=self._settings.timeout_s)
            except Exception:
                up = False
            if not up:
                server.problem = "not ready (unreachable or starting)"
            return up

        return any(await asyncio.gather(*(one(s) for s in self.servers)))

    async def model_ready(self, model: str, version: str) -> bool:
        """``version`` is READY on at least one server (each server's verdict is kept for ``degraded``)."""
        return any(await asyncio.gather(*(self._probe(s, model, version) for s in self.servers)))

    def degraded(self) -> dict[str, str]:
        """Servers not serving -> why: a failed probe or call, or a breaker that is not closed."""
        if not self._servers:
            return {self._dns or "triton": "no Triton server resolved"}
        out: dict[str, str] = {}
        for s in self._servers.values():
            if s.problem or s.breaker.state != CircuitBreaker.CLOSED:
                out[s.url] = s.problem or "circuit breaker open"
        return out

    def _start_watch(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="triton-watch")

    async def _watch(self) -> None:
        """Re-resolve ``*_dns``; probe servers whose breaker is open for the routed versions."""
        settings = self._settings
        interval_s = max(0.05, min(settings.breaker_reset_s, 1.0, READY_RECHECK_S))
        next_dns = time.monotonic() + settings.dns_refresh_s
        while True:
            await asyncio.sleep(interval_s)
            try:
                if self._dns and time.monotonic() >= next_dns:
                    next_dns = time.monotonic() + settings.dns_refresh_s
                    urls = await asyncio.to_thread(resolve, self._dns)
                    if urls:  # no answer at all: keep the servers we know (they fail over anyway)
                        self._set_servers(urls)
                cutoff = time.monotonic() - _ROUTED_TTL_S
                self._routed = {k: t for k, t in self._routed.items() if t >= cutoff}
                for server in self.servers:
                    if server.breaker.probe_due() and self._routed:
                        checks = [self._probe(server, m, v) for m, v in self._routed]
                        if all(await asyncio.gather(*checks)):
                            server.breaker.success()
            except Exception:
                log.exception("Triton watch failed; retrying")

    async def aclose(self) -> None:
        """Close every channel."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(
            *(s.channel.close() for s in self.servers), *self._closing, return_exceptions=True
        )
