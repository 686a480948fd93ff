"""The circuit breaker in front of one Triton server.

Closed means the routed version is READY on that server: the client closes an open breaker only
when a readiness probe finds the version READY (an answering Triton that has not loaded it yet
stays open). A server that answered the probe without the version READY (restarted, loading) is
probed again after ``READY_RECHECK_S`` rather than ``reset_s``: it rejoins within a fraction of a
second of the load instead of up to ``reset_s`` later, for one cheap readiness call per interval.
"""

from __future__ import annotations

import contextlib
import logging
import time

from gateway import metrics

log = logging.getLogger(__name__)

READY_RECHECK_S = 0.1
"""Seconds between readiness probes of a server that answers but lacks the version (capped by
``reset_s``); a server that does not answer waits the full ``reset_s``."""


class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive failures -> half-open after ``reset_s``.

    Half-open lets one probe through; the client closes the breaker only when the probe finds
    the routed version READY (an answering Triton that has not loaded it yet stays open, and is
    probed again after ``READY_RECHECK_S``: see :meth:`not_ready`).
    """

    CLOSED, HALF_OPEN, OPEN = 0, 1, 2

    def __init__(self, *, failures: int, reset_s: float, target: str) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self.target = target
        self._failures = 0
        self._opened_at = 0.0
        self._retry_s = reset_s
        """Seconds after opening before the next probe: ``reset_s``, shorter after :meth:`not_ready`."""
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
        if self.state == self.OPEN and time.monotonic() - self._opened_at >= self._retry_s:
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
        """Not closed, and open long enough (``reset_s``, or ``READY_RECHECK_S`` after
        :meth:`not_ready`): a readiness probe may close it."""
        return self.state != self.CLOSED and time.monotonic() - self._opened_at >= self._retry_s

    def not_ready(self) -> None:
        """A probe reached the server, which answered without the version READY (it restarted or
        is loading): stay open, and probe again after ``READY_RECHECK_S`` rather than ``reset_s``."""
        if self.state == self.CLOSED:
            return  # a closed breaker is opened by failed calls only
        self._probe_in_flight = False
        self._opened_at = time.monotonic()
        self._retry_s = min(self._reset_s, READY_RECHECK_S)
        self._set(self.OPEN)

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
            self._retry_s = self._reset_s
            self._set(self.OPEN)

    def _set(self, state: int) -> None:
        if state != self.state:
            # The probe cycle of a server still loading (half-open, open again every
            # READY_RECHECK_S) is debug detail; opening and closing are what an operator reads.
            cycle = state == self.HALF_OPEN or (self.state == self.HALF_OPEN and state == self.OPEN)
            log.log(
                logging.DEBUG if cycle else logging.WARNING,
                "circuit breaker towards Triton at %s: %s",
                self.target,
                ("closed", "half-open", "open")[state],
            )
        self.state = state
        self._gauge.set(state)
