"""Runs every health check in the background and keeps the latest result of each.

Each check runs on its own interval under its own timeout. A check that does not answer
in time is recorded as failing at once, and its call is left to finish on its own instead
of being waited for (a socket to a SIGSTOPped server does not always let go when
cancelled); until it does, that check is not started again. Readers take `snapshot()`,
which awaits nothing: every health endpoint answers from memory (I8).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import Gauge, Histogram

from runnerhub.aio import forget
from runnerhub.health.model import STATUS_CODE, CheckResult, Outcome, Status, aged, overall

log = structlog.get_logger("runnerhub.health")

CHECK_STATUS = Gauge(
    "runnerhub_health_check_status",
    "Each health check's last result: 0 ok, 1 degraded, 2 failing.",
    ["check"],
)
CHECK_SECONDS = Histogram(
    "runnerhub_health_check_duration_seconds",
    "How long health checks took (a check that timed out counts its timeout).",
    ["check"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
HEALTH_STATUS = Gauge(
    "runnerhub_health_status", "This node's overall health: 0 ok, 1 degraded, 2 failing."
)

CheckFn = Callable[[], Awaitable[Outcome]]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    run: CheckFn
    interval_s: float
    timeout_s: float
    critical: bool = False

    @property
    def stale_after_s(self) -> float:
        # Two missed rounds: one slow round is not news, two are.
        return 2 * self.interval_s + self.timeout_s


@dataclass(frozen=True)
class HealthReport:
    status: Status
    checks: list[CheckResult]
    now: float

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "checks": {c.name: c.as_json(self.now) for c in self.checks},
        }

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


class HealthMonitor:
    def __init__(
        self,
        specs: Sequence[CheckSpec] = (),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.specs: dict[str, CheckSpec] = {}
        self._clock = clock
        self._wall = wall_clock
        self._results: dict[str, CheckResult] = {}
        self._hung: dict[str, tuple[asyncio.Task[Outcome], float]] = {}
        # Told every new result (e.g. the incident recorder); must not block.
        self.listeners: list[Callable[[CheckResult], None]] = []
        self.add(specs)

    def add(self, specs: Sequence[CheckSpec]) -> None:
        """Register checks (before `run`). A node builds its monitor first and adds the
        checks once their subjects exist: some of those read the monitor themselves."""
        names = [*self.specs, *(s.name for s in specs)]
        if len(set(names)) != len(names):
            raise ValueError(f"health check names must be unique: {names}")
        started = self._clock()
        for s in specs:
            self.specs[s.name] = s
            self._results[s.name] = CheckResult(
                s.name, "degraded", s.critical, started, self._wall(), None, {}, "not checked yet"
            )

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self) -> HealthReport:
        now = self._clock()
        results = [
            aged(r, now, self.specs[name].stale_after_s) for name, r in self._results.items()
        ]
        status = overall(results)
        HEALTH_STATUS.set(STATUS_CODE[status])
        return HealthReport(status, results, now)

    def result(self, name: str) -> CheckResult | None:
        r = self._results.get(name)
        return None if r is None else aged(r, self._clock(), self.specs[name].stale_after_s)

    # -- running ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._loop(spec, stop), name=f"health-{spec.name}")
            for spec in self.specs.values()
        ]
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            for hung, _ in self._hung.values():
                hung.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def run_once(self, name: str) -> CheckResult:
        """One round of one check (its timeout applies); the stored result is updated."""
        spec = self.specs[name]
        began = self._clock()
        hung = self._hung.get(name)
        if hung is not None:
            task, since = hung
            if not task.done():
                return self._store(
                    spec,
                    Outcome("failing", message=f"no answer for {began - since:.1f} s"),
                    None,
                )
            del self._hung[name]
        task = asyncio.ensure_future(spec.run())
        done, _ = await asyncio.wait({task}, timeout=spec.timeout_s)
        elapsed = self._clock() - began
        CHECK_SECONDS.labels(name).observe(elapsed)
        if not done:
            # Left running (see the module docstring); its result, if any, is dropped.
            self._hung[name] = (task, began)
            task.add_done_callback(forget)  # stale by then
            return self._store(
                spec, Outcome("failing", message=f"no answer within {spec.timeout_s:g} s"), None
            )
        try:
            outcome = task.result()
        except Exception as exc:  # a check that raises reports a failing dependency
            outcome = Outcome("failing", message=_describe(exc))
        return self._store(spec, outcome, elapsed * 1000)

    async def _loop(self, spec: CheckSpec, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.run_once(spec.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=spec.interval_s)

    def _store(self, spec: CheckSpec, outcome: Outcome, latency_ms: float | None) -> CheckResult:
        previous = self._results.get(spec.name)
        result = CheckResult(
            spec.name,
            outcome.status,
            spec.critical,
            self._clock(),
            self._wall(),
            latency_ms,
            outcome.detail,
            outcome.message,
        )
        self._results[spec.name] = result
        CHECK_STATUS.labels(spec.name).set(STATUS_CODE[outcome.status])
        for listen in self.listeners:
            try:
                listen(result)
            except Exception:  # a listener's bug must not stop the health checks
                log.exception("health listener failed", check=spec.name)
        if previous is not None and previous.status != result.status:
            level = log.info if result.status == "ok" else log.warning
            level(
                "health check changed",
                check=spec.name,
                status=result.status,
                was=previous.status,
                message=result.message,
            )
        return result
