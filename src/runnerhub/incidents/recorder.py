"""Records incidents as this node sees them, in PostgreSQL (`GET /api/v1/incidents`).

What is recorded, and by whom (so that one incident is one row):
- an outage of a shared dependency — PostgreSQL (a failover when the primary changed), etcd,
  Redis (a failover when Sentinel named another primary), GitHub, a backend — from this
  node's health checks, by the leader;
- a leader change, by the new leader (begun at the old leader's last heartbeat);
- a node lost (its heartbeat stopped), by the leader;
- a circuit breaker opened, by the node whose breaker it is.

Writes go through a queue and are retried: an outage of PostgreSQL is recorded once it is
back (its times are kept in memory meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Counter

from runnerhub.breakers import CircuitBreaker
from runnerhub.domain.breaker import BreakerState
from runnerhub.health.model import CheckResult
from runnerhub.incidents.tracker import Incident, OutageTracker
from runnerhub.store import incidents as incident_store
from runnerhub.store.db import UNAVAILABLE_OR_SLOW, Pool

log = structlog.get_logger("runnerhub.incidents")

INCIDENTS = Counter(
    "runnerhub_incidents_total",
    "Incidents this node recorded (counted when seen), by component and kind.",
    ["component", "kind"],
)
# Pending writes beyond this are dropped, oldest first (a very long database outage).
MAX_PENDING = 1000


def utcnow() -> datetime:
    return datetime.now(UTC)


def _redis_up(result: CheckResult) -> bool:
    return bool(result.detail.get("available", result.status == "ok"))


def _not_failing(result: CheckResult) -> bool:
    return result.status != "failing"


# Health check -> (component, is it up?, what names the serving instance). Degraded is up:
# an incident is an outage. An outage after which another instance serves is a failover.
WATCHED: dict[str, tuple[str, Callable[[CheckResult], bool], tuple[str, ...]]] = {
    "database": ("postgres", _not_failing, ("server",)),
    "etcd": ("etcd", _not_failing, ()),
    "redis": ("redis", _redis_up, ("primary",)),
    "github": ("github", _not_failing, ()),
    "backends": ("backends", _not_failing, ()),
    # Backups never fail a node: a failed or overdue backup, restore test or WAL archiving
    # is what degrades the check, and that is the incident.
    "backups": ("backups", lambda r: r.status == "ok", ()),
}


class IncidentRecorder:
    def __init__(
        self,
        db: Pool,
        node: str,
        is_leader: Callable[[], bool],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self.node = node
        self._is_leader = is_leader
        self._clock = clock
        self.tracker = OutageTracker()
        self._before: dict[str, dict[str, Any]] = {}
        self._pending: asyncio.Queue[Incident] = asyncio.Queue(MAX_PENDING)

    # -- what is seen ----------------------------------------------------------------------

    def on_health(self, result: CheckResult) -> None:
        """A health check's result (a HealthMonitor listener)."""
        watched = WATCHED.get(result.name)
        if watched is None:
            return
        component, is_up, keys = watched
        up = is_up(result)
        serving = {k: result.detail.get(k) for k in keys}
        if up and self.tracker.open(component) is None:
            self._before[component] = serving
        change = self.tracker.observe(
            component,
            up,
            self._clock(),
            summary=f"{component} unavailable: {result.message or result.status}",
        )
        if change is None or not self._is_leader():
            return
        what, incident = change
        self.submit(self._classify(incident, serving) if what == "closed" else incident)

    def on_breaker(
        self, breaker: CircuitBreaker, before: BreakerState, after: BreakerState
    ) -> None:
        """A circuit breaker changed state (its `on_change`)."""
        if after is BreakerState.HALF_OPEN:
            return  # a trial: the incident goes on until it closes
        change = self.tracker.observe(
            f"breaker:{breaker.name}",
            after is BreakerState.CLOSED,
            self._clock(),
            kind="breaker_open",
            summary=f"circuit {breaker.name} opened: {breaker.machine.last_error}",
            detail={"failures": breaker.machine.failures},
            action=f"failed fast; one trial call every {breaker.machine.open_s:g} s",
        )
        if change is not None:
            self.submit(change[1])

    def started(self, component: str) -> None:
        """The component is up at the start (a breaker starts closed)."""
        self.tracker.observe(component, True, self._clock())

    def submit(self, incident: Incident, new: bool = False) -> None:
        """Queue a write: a new incident (open, or `new` and already over), or the end of
        one."""
        if self._pending.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._pending.get_nowait()
        self._pending.put_nowait(incident)
        if new or incident.recovered_at is None:
            INCIDENTS.labels(incident.component.split(":")[0], incident.kind).inc()
        if incident.recovered_at is None:
            log.warning("incident", component=incident.component, summary=incident.summary)
        else:
            began = incident.started_at or incident.detected_at
            log.info(
                "incident over",
                component=incident.component,
                kind=incident.kind,
                down_s=round((incident.recovered_at - began).total_seconds(), 3),
            )

    def _classify(self, incident: Incident, after: dict[str, Any]) -> Incident:
        before = self._before.get(incident.component, {})
        if any(before.values()) and any(after.values()) and before != after:
            return replace(
                incident,
                kind="failover",
                summary=f"{incident.component} failed over",
                action=incident.action or "promoted a replica (Patroni / Sentinel); nodes followed",
                detail={**incident.detail, "before": before, "after": after},
            )
        return incident

    # -- writing ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Write what was submitted, in order, retrying while the database is away."""
        while not stop.is_set():
            incident = await self._next(stop)
            if incident is None:
                return
            while not stop.is_set():
                try:
                    await self.write(incident)
                    break
                except UNAVAILABLE_OR_SLOW:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def _next(self, stop: asyncio.Event) -> Incident | None:
        get = asyncio.ensure_future(self._pending.get())
        halt = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({get, halt}, return_when=asyncio.FIRST_COMPLETED)
        halt.cancel()
        if get in done:
            return get.result()
        get.cancel()
        return None

    async def write(self, incident: Incident) -> None:
        async with asyncio.timeout(3), self._db.connection(2.0) as conn:
            await incident_store.record(
                conn,
                key=incident.key,
                component=incident.component,
                kind=incident.kind,
                summary=incident.summary,
                node=self.node,
                detected_at=incident.detected_at,
                started_at=incident.started_at,
                recovered_at=incident.recovered_at,
                action=incident.action,
                detail=incident.detail,
            )
