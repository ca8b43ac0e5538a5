"""Circuit breakers around the GitHub API and each runner backend (the state machine is
`domain.breaker`): after repeated failures calls fail fast with `CircuitOpen` instead of
each waiting for its own timeout; a trial call now and then finds out when the service is
back. Callers already treat these errors as "try later", so while a circuit is open jobs
wait (their waiting reason says why) and nothing is lost.

A failure is what says the service itself is in trouble: no answer, or a 5xx. A 4xx is an
answer (the service works; the request was refused) and counts as a success.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from prometheus_client import Counter, Gauge

from runnerhub.domain.breaker import Breaker, BreakerState

log = structlog.get_logger("runnerhub.breakers")

T = TypeVar("T")

STATE_CODE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}

BREAKER_STATE = Gauge(
    "runnerhub_circuit_breaker_state",
    "Each circuit breaker's state: 0 closed, 1 half-open (trying), 2 open (failing fast).",
    ["breaker"],
)
BREAKER_OPENED = Counter(
    "runnerhub_circuit_breaker_opened_total", "Times each circuit breaker opened.", ["breaker"]
)
BREAKER_REFUSED = Counter(
    "runnerhub_circuit_breaker_refused_total",
    "Calls refused because their circuit was open.",
    ["breaker"],
)


class CircuitOpen(Exception):
    """Not called: the circuit is open. `retry_in_s` says when a trial call may go."""

    def __init__(self, name: str, failures: int, last_error: str | None, retry_in_s: float):
        self.breaker = name
        self.retry_in_s = retry_in_s
        super().__init__(
            f"{name} circuit open after {failures} failures in a row "
            f"(last: {last_error or 'unknown'}); next try in {retry_in_s:.0f} s"
        )


BreakerListener = Callable[["CircuitBreaker", BreakerState, BreakerState], None]


class CircuitBreaker:
    """One named breaker, with its metrics and log lines."""

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        open_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: BreakerListener | None = None,
    ) -> None:
        self.name = name
        self.machine = Breaker(failure_threshold, open_s)
        self._clock = clock
        self._on_change = on_change
        BREAKER_STATE.labels(name).set(0)

    @property
    def state(self) -> BreakerState:
        return self.machine.state

    def before(self) -> None:
        """Raise CircuitOpen unless a call may go now."""
        before = self.machine.state
        if not self.machine.allow(self._clock()):
            BREAKER_REFUSED.labels(self.name).inc()
            raise CircuitOpen(
                self.name,
                self.machine.failures,
                self.machine.last_error,
                self.machine.retry_in(self._clock()),
            )
        self._changed(before)

    def succeeded(self) -> None:
        before = self.machine.state
        self.machine.succeeded()
        self._changed(before)

    def failed(self, error: str) -> None:
        before = self.machine.state
        if self.machine.failed(self._clock(), error):
            BREAKER_OPENED.labels(self.name).inc()
        self._changed(before)

    def release(self) -> None:
        """The call ended without a verdict (cancelled, or failed on our side)."""
        self.machine.trial_in_flight = False

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        failure: Callable[[Exception], str | None] = lambda exc: f"{type(exc).__name__}: {exc}",
    ) -> T:
        """`fn` through this breaker: CircuitOpen, not called, while it is open. What `fn`
        raises is raised again, counted a failure when `failure` names one, or a success
        when it returns None (the service answered; the request was refused)."""
        self.before()
        try:
            result = await fn()
        except asyncio.CancelledError:
            self.release()
            raise
        except Exception as exc:
            reason = failure(exc)
            if reason is None:
                self.succeeded()
            else:
                self.failed(reason[:200])
            raise
        self.succeeded()
        return result

    def status(self) -> dict[str, Any]:
        m = self.machine
        return {
            "state": m.state.value,
            "failures": m.failures,
            "last_error": m.last_error,
            "retry_in_s": round(m.retry_in(self._clock()), 1),
        }

    def _changed(self, before: BreakerState) -> None:
        after = self.machine.state
        if after is before:
            return
        BREAKER_STATE.labels(self.name).set(STATE_CODE[after])
        if after is BreakerState.OPEN:
            log.warning(
                "circuit opened",
                breaker=self.name,
                failures=self.machine.failures,
                error=self.machine.last_error,
                open_s=self.machine.open_s,
            )
        elif after is BreakerState.CLOSED:
            log.info("circuit closed", breaker=self.name)
        if self._on_change is not None:
            self._on_change(self, before, after)
