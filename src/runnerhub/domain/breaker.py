"""A circuit breaker as a state machine: pure, no I/O, the clock passed in.

closed: calls go through; `failure_threshold` failures in a row open the circuit.
open: calls are refused (the caller fails fast and keeps its work for later) until
      `open_s` has passed since it opened.
half_open: one trial call at a time goes through; success closes the circuit, failure
      opens it again (for `open_s` again).

Why not a library: pybreaker runs async calls only through Tornado, aiobreaker (its asyncio
fork) has had no release since 2021, and both hide the state in the object that wraps the
call. RunnerHub needs the state on its own — to show in metrics, /health and a job's
waiting reason, and to test with a fake clock — and the machine is twenty lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class Breaker:
    failure_threshold: int = 5
    open_s: float = 30.0
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0  # in a row
    opened_at: float | None = None
    trial_in_flight: bool = False
    last_error: str | None = None

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.open_s <= 0:
            raise ValueError("open_s must be positive")

    def allow(self, now: float) -> bool:
        """May a call go through now? (In half-open, True makes it the one trial.)"""
        if self.state is BreakerState.OPEN:
            assert self.opened_at is not None
            if now - self.opened_at < self.open_s:
                return False
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN:
            if self.trial_in_flight:
                return False
            self.trial_in_flight = True
        return True

    def retry_in(self, now: float) -> float:
        """Seconds until a call may be tried (0 when one may go now)."""
        if self.state is BreakerState.OPEN and self.opened_at is not None:
            return max(0.0, self.open_s - (now - self.opened_at))
        return 0.0

    def succeeded(self) -> BreakerState:
        """Record a success; the state before it (CLOSED after a trial means: recovered)."""
        before = self.state
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = None
        self.trial_in_flight = False
        return before

    def failed(self, now: float, error: str) -> bool:
        """Record a failure; True when this failure opened the circuit."""
        self.last_error = error
        self.failures += 1
        self.trial_in_flight = False
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.failures >= self.failure_threshold
        ):
            was_closed = self.state is BreakerState.CLOSED
            self.state = BreakerState.OPEN
            self.opened_at = now
            return was_closed
        return False
