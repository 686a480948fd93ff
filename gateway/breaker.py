"""The circuit breaker in front of one Triton server.

Closed means the routed version is READY on that server: the client closes an open breaker only
when a readiness probe finds the version READY (an answering Triton that has not loaded it yet
stays open).
"""

from __future__ import annotations

import contextlib
import logging
import time

from gateway import metrics

log = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive failures -> half-open after ``reset_s``.

    Half-open lets one probe through; the client closes the breaker only when the probe finds
    the routed version READY (an answering Triton that has not loaded it yet stays open).
    """

    CLOSED, HALF_OPEN, OPEN = 0, 1, 2

    def __init__(self, *, failures: int, reset_s: float, target: str) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self.target = target
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

    def probe_due(self) -> bool:
        """Not closed, and open for at least ``reset_s``: a readiness probe may close it."""
        return self.state != self.CLOSED and time.monotonic() - self._opened_at >= self._reset_s

    def forget(self) -> None:
        """The server left the set (DNS): drop its gauge."""
        with contextlib.suppress(KeyError):
            metrics.CIRCUIT_STATE.remove(self.target)

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
            log.warning(
                "circuit breaker towards Triton at %s: %s",
                self.target,
                ("closed", "half-open", "open")[state],
            )
        self.state = state
        self._gauge.set(state)
