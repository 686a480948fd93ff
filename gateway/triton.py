"""Inference adapter: Triton over gRPC (``tritonclient.grpc.aio``).

One persistent channel; every call has a deadline; UNAVAILABLE is retried a bounded number of
times with jittered exponential backoff while the deadline allows; a circuit breaker stops
calling a Triton that keeps failing (503 at once) and lets one probe through after a pause. The
model version is always explicit (pinned from the routing).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Protocol

import numpy as np

from gateway import metrics
from gateway.errors import CircuitOpenError, DeadlineExceededError, TritonUnavailableError
from gateway.settings import GatewayTritonSettings
from treeserve import contract

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

    async def aclose(self) -> None:
        """Close the channel."""
        ...


class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive failures -> half-open after ``reset_s``.

    Half-open lets one probe through; the client closes the breaker only when the probe finds
    the routed version READY (an answering Triton that has not loaded it yet stays open).
    """

    CLOSED, HALF_OPEN, OPEN = 0, 1, 2

    def __init__(self, *, failures: int, reset_s: float, target: str) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.state = self.CLOSED
        self._gauge = metrics.CIRCUIT_STATE.labels(target)
        self._gauge.set(self.CLOSED)

    def allow(self) -> bool:
        """May a call go out now?"""
        return self.admit() is not None

    def admit(self) -> bool | None:
        """None: no call now; False: a normal call; True: this call is the half-open probe."""
        if self.state == self.CLOSED:
            return False
        if self.state == self.OPEN and time.monotonic() - self._opened_at >= self._reset_s:
            self._set(self.HALF_OPEN)
        if self.state == self.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return None

    def success(self) -> None:
        """A call succeeded: close."""
        self._failures = 0
        self._probe_in_flight = False
        if self.state != self.CLOSED:
            self._set(self.CLOSED)

    def probe_done(self) -> None:
        """The probe ended without a verdict (cancelled, or refused before reaching Triton): reopen."""
        if self._probe_in_flight:
            self.failure()

    def failure(self) -> None:
        """A call failed (unavailable or timeout)."""
        self._failures += 1
        self._probe_in_flight = False
        if self.state == self.HALF_OPEN or self._failures >= self._threshold:
            self._opened_at = time.monotonic()
            self._set(self.OPEN)

    def _set(self, state: int) -> None:
        if state != self.state:
            log.warning("circuit breaker towards Triton: %s", ("closed", "half-open", "open")[state])
        self.state = state
        self._gauge.set(state)


_RETRYABLE = {"StatusCode.UNAVAILABLE"}
_TIMEOUT = {"StatusCode.DEADLINE_EXCEEDED"}


class GrpcTritonClient:
    """``InferenceClient`` for Triton's gRPC endpoint."""

    def __init__(self, settings: GatewayTritonSettings) -> None:
        from tritonclient.grpc import aio as grpcclient

        self._settings = settings
        self._client = grpcclient.InferenceServerClient(
            url=settings.grpc_url,
            channel_args=[
                # Reconnect quickly after a Triton restart (the default backoff grows to 120 s).
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        self.breaker = CircuitBreaker(
            failures=settings.breaker_failures, reset_s=settings.breaker_reset_s, target=settings.grpc_url
        )

    async def infer(self, model: str, version: str, features: np.ndarray, *, output: str) -> np.ndarray:
        """One inference call (split into chunks of ``max_batch_size`` rows)."""
        n = features.shape[0]
        step = self._settings.max_batch_size
        if n <= step:
            return await self._infer_one(model, version, features, output)
        parts = [
            await self._infer_one(model, version, features[i : i + step], output) for i in range(0, n, step)
        ]
        return np.concatenate(parts, axis=0)

    async def _infer_one(self, model: str, version: str, features: np.ndarray, output: str) -> np.ndarray:
        probe = self.breaker.admit()
        if probe is None:
            metrics.TRITON_ERRORS.labels(model, version, "circuit_open").inc()
            raise CircuitOpenError(
                f"Triton at {self._settings.grpc_url} failed repeatedly; not calling it for "
                f"{self._settings.breaker_reset_s:g} s (model {model!r} version {version})"
            )
        if not probe:
            return await self._call(model, version, features, output)
        try:
            if not await self.model_ready(model, version):
                metrics.TRITON_ERRORS.labels(model, version, "unavailable").inc()
                raise TritonUnavailableError(
                    f"model {model!r} version {version} is not ready in Triton at {self._settings.grpc_url}"
                )
            return await self._call(model, version, features, output)
        finally:
            self.breaker.probe_done()

    async def _call(self, model: str, version: str, features: np.ndarray, output: str) -> np.ndarray:
        from tritonclient.grpc import aio as grpcclient
        from tritonclient.utils import InferenceServerException

        x = np.ascontiguousarray(features, dtype=np.float32)
        inp = grpcclient.InferInput(contract.INPUT_TENSOR, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        outputs = [grpcclient.InferRequestedOutput(output)]
        t0 = time.monotonic()
        deadline = t0 + self._settings.timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.breaker.failure()
                metrics.TRITON_ERRORS.labels(model, version, "timeout").inc()
                raise DeadlineExceededError(
                    f"Triton did not answer within {self._settings.timeout_s:g} s (model {model!r} version {version})"
                )
            try:
                result = await self._client.infer(
                    model,
                    [inp],
                    model_version=version,
                    outputs=outputs,
                    client_timeout=remaining,
                )
            except InferenceServerException as e:
                status = str(e.status())
                if status in _RETRYABLE and attempt < self._settings.max_retries:
                    attempt += 1
                    metrics.TRITON_RETRIES.labels(model, version).inc()
                    backoff = self._settings.retry_backoff_s * (2 ** (attempt - 1))
                    await asyncio.sleep(min(random.uniform(0, backoff), max(deadline - time.monotonic(), 0)))
                    continue
                if status in _TIMEOUT:
                    self.breaker.failure()
                    metrics.TRITON_ERRORS.labels(model, version, "timeout").inc()
                    raise DeadlineExceededError(
                        f"Triton did not answer within {self._settings.timeout_s:g} s "
                        f"(model {model!r} version {version})"
                    ) from e
                if status in _RETRYABLE:
                    self.breaker.failure()
                    metrics.TRITON_ERRORS.labels(model, version, "unavailable").inc()
                    raise TritonUnavailableError(
                        f"Triton at {self._settings.grpc_url} is unavailable (model {model!r} version "
                        f"{version}): {e.message()}"
                    ) from e
                # The server answered but refused the call (e.g. the version is not loaded): the
                # routed version does not serve, which is what the breaker tracks.
                self.breaker.failure()
                metrics.TRITON_ERRORS.labels(model, version, "error").inc()
                raise TritonUnavailableError(
                    f"Triton refused model {model!r} version {version}: {e.message()}"
                ) from e
            self.breaker.success()
            metrics.TRITON_DURATION.labels(model, version).observe(time.monotonic() - t0)
            out = result.as_numpy(output)
            if out is None:
                raise TritonUnavailableError(f"Triton returned no {output!r} output for model {model!r}")
            return out.reshape(x.shape[0], -1)

    async def server_ready(self) -> bool:
        """Triton's ``ServerReady``."""
        try:
            return bool(await self._client.is_server_ready(client_timeout=self._settings.timeout_s))
        except Exception:
            return False

    async def model_ready(self, model: str, version: str) -> bool:
        """Triton's ``ModelReady`` for the pinned version (READY closes an open breaker: the
        readiness probe and the breaker never disagree about a routed version)."""
        try:
            ready = bool(
                await self._client.is_model_ready(model, version, client_timeout=self._settings.timeout_s)
            )
        except Exception:
            ready = False
        if ready and self.breaker.state != CircuitBreaker.CLOSED:
            self.breaker.success()
        return ready

    async def aclose(self) -> None:
        """Close the gRPC channel."""
        await self._client.close()
