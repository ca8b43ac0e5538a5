"""A control loop: observe, decide, act; woken early by events, otherwise on a tick."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod

import structlog

from runnerhub import metrics

log = structlog.get_logger("runnerhub.control")


class ControlLoop(ABC):
    name: str = "loop"
    # A cycle not done by then is cancelled and counts as failed (None: no limit). A hung
    # database answers nothing and keeps its TCP connections open: without a limit a cycle
    # would wait for ever; cancelled, psycopg drops the connection it waited on.
    cycle_deadline_s: float | None = None
    # A PostgreSQL NOTIFY channel that wakes this loop on the leader (store/listener.py).
    notify_channel: str | None = None

    def __init__(self, interval_s: float, min_gap_s: float = 0.0) -> None:
        self.interval_s = interval_s
        # Under a burst of wake-ups, cycles run at most this often (they coalesce).
        self.min_gap_s = min_gap_s
        self.wakeup = asyncio.Event()
        self.last_cycle_at: float | None = None  # monotonic
        self.last_error: str | None = None
        self.cycles = 0

    def wake(self) -> None:
        self.wakeup.set()

    @abstractmethod
    async def cycle(self) -> None:
        """One pass. Raise to report failure; the loop goes on."""

    async def run(self, stop: asyncio.Event) -> None:
        log.info("control loop started", loop=self.name)
        while not stop.is_set():
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.cycle(), self.cycle_deadline_s)
                self.last_error = None
                metrics.LOOP_RUNS.labels(self.name, "ok").inc()
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                self.last_error = f"no end within {self.cycle_deadline_s:g} s (a hung database?)"
                metrics.LOOP_RUNS.labels(self.name, "error").inc()
                log.error("control loop cycle cut short", loop=self.name, error=self.last_error)
            except Exception as exc:  # a bad cycle must not end the loop
                self.last_error = f"{type(exc).__name__}: {exc}"
                metrics.LOOP_RUNS.labels(self.name, "error").inc()
                log.error("control loop cycle failed", loop=self.name, error=self.last_error)
            self.cycles += 1
            self.last_cycle_at = time.monotonic()
            await self._pause(stop)
        log.info("control loop stopped", loop=self.name)

    async def _pause(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(self.wakeup.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=self.interval_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
