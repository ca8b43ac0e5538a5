"""Taking and leaving the leader's office: what a node does when the election makes it the
leader (record its epoch, adopt runners, catch up with GitHub, start the control loops) and
when it steps down (stop them first)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import structlog

from runnerhub import metrics
from runnerhub.context import NodeContext
from runnerhub.control.loop import ControlLoop
from runnerhub.control.scheduler import Scheduler
from runnerhub.ha.dcs import Term
from runnerhub.incidents.recorder import IncidentRecorder
from runnerhub.incidents.tracker import Incident
from runnerhub.store import events, leadership, nodes
from runnerhub.store.db import UNAVAILABLE
from runnerhub.store.leadership import LeaderRow
from runnerhub.store.listener import listen

log = structlog.get_logger("runnerhub.node")

# A new leader reconciles with GitHub before it provisions, but not for longer than this:
# provisioning is idempotent on its own, and failover has a time budget.
TAKEOVER_RECONCILE_S = 5.0
# A loop mid-cycle is cancelled after this: every step is idempotent, and a clean handover
# should not wait for a reconciler sweep to finish.
LOOP_STOP_GRACE_S = 0.05


class LeaderOffice:
    """The leader's duties on this node: `take` and `leave` are the election's callbacks;
    `start_loops` alone serves a node without an election (it always leads)."""

    def __init__(
        self,
        ctx: NodeContext,
        loops: Sequence[ControlLoop],
        scheduler: Scheduler,
        first_steps: Sequence[tuple[str, Callable[[], Awaitable[None]]]],
        incidents: IncidentRecorder,
    ) -> None:
        self.ctx = ctx
        self.loops = list(loops)
        self.scheduler = scheduler
        # Run before any loop starts, each under TAKEOVER_RECONCILE_S: adopt runners,
        # learn GitHub's queued jobs.
        self.first_steps = list(first_steps)
        self.incidents = incidents
        self.node = ctx.settings.node.id
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._term: Term | None = None  # the term taken and not yet left
        # Read at each scrape, not set on taking and leaving office: a leader whose lease ran
        # out says 0 at once, even before it has stopped its loops.
        metrics.IS_LEADER.set_function(lambda: float(self.acting()))

    def acting(self) -> bool:
        """Runs the leader's loops and may act now."""
        return bool(self._tasks) and self.ctx.leadership.may_act()

    async def take(self, term: Term, vacancy_seen: float) -> None:
        self._term = term
        async with self.ctx.db.connection() as conn, conn.transaction():
            previous = await leadership.current(conn)
            if not await leadership.record_epoch(conn, term.epoch, self.node):
                newer = previous and previous.epoch
                raise RuntimeError(
                    f"epoch {term.epoch} is older than the recorded {newer} (was etcd reset?)"
                )
        await self.start_loops(term)
        takeover_s = max(0.0, time.monotonic() - vacancy_seen)
        seen_at = datetime.now(UTC) - timedelta(seconds=takeover_s)
        metrics.ELECTIONS.inc()
        metrics.LEADER_EPOCH.set(term.epoch)
        metrics.TAKEOVER.observe(takeover_s)
        with contextlib.suppress(*UNAVAILABLE):
            async with self.ctx.control_tx() as conn:
                await events.append(
                    conn,
                    self.node,
                    "leader.elected",
                    "cluster",
                    epoch=term.epoch,
                    previous_leader=previous and previous.node,
                    previous_epoch=previous and previous.epoch,
                    vacancy_detected_at=seen_at.isoformat(),
                    acting_at=datetime.now(UTC).isoformat(),
                    takeover_s=round(takeover_s, 3),
                )
        log.info("acting as leader", epoch=term.epoch, takeover_s=round(takeover_s, 3))
        await self._record_change(term, previous, seen_at)

    async def _record_change(
        self, term: Term, previous: LeaderRow | None, seen_at: datetime
    ) -> None:
        """A leader change as an incident: begun at the old leader's last heartbeat (it may
        have died any time after), noticed when this node saw the seat empty, over now."""
        if previous is None:
            return  # the cluster's first leader: nothing failed
        old = previous.node
        last_seen: datetime | None = None
        if old != self.node:
            with contextlib.suppress(*UNAVAILABLE, TimeoutError):
                async with asyncio.timeout(1.0), self.ctx.db.connection() as conn:
                    last_seen = await nodes.last_seen(conn, old)
        started = min(last_seen, seen_at) if last_seen else None
        self.incidents.submit(
            Incident(
                key=f"leader:{term.epoch}",
                component="leader",
                kind="leader_change",
                summary=f"{self.node} leads (epoch {term.epoch}) after {old}",
                detected_at=seen_at,
                started_at=started,
                recovered_at=datetime.now(UTC),
                action="elected; adopted runners, caught up with GitHub, resumed the loops",
                detail={"previous_leader": old, "epoch": term.epoch},
            ),
            new=True,
        )

    async def leave(self, term: Term, reason: str) -> None:
        self._term = None
        metrics.STEP_DOWNS.labels(reason.split(":")[0].split(" (")[0]).inc()
        await self.stop_loops()
        # Not fenced: a record of what happened, which even a deposed leader may write.
        with contextlib.suppress(*UNAVAILABLE, TimeoutError):
            async with asyncio.timeout(1.0), self.ctx.db.connection() as conn, conn.transaction():
                await events.append(
                    conn,
                    self.node,
                    "leader.stepped_down",
                    "cluster",
                    epoch=term.epoch,
                    reason=reason,
                )

    async def start_loops(self, term: Term | None = None) -> None:
        """Adopt and reconcile first, then provision: a new leader must see every runner
        the old one started before it decides a job lacks one (I5). With a `term`, no loop
        starts once that term was left (the election does not wait on a slow take-over)."""
        self._stop = stop = asyncio.Event()
        for name, first in self.first_steps:
            try:
                await asyncio.wait_for(first(), timeout=TAKEOVER_RECONCILE_S)
            except Exception as exc:  # the loop retries; provisioning stays idempotent
                log.warning(
                    "takeover step did not finish", step=name, error=f"{type(exc).__name__}: {exc}"
                )
        if stop.is_set() or (term is not None and self._term is not term):
            return  # left office meanwhile: no loops
        dsn = self.ctx.settings.database.dsn.get_secret_value()
        self._tasks = [asyncio.create_task(loop.run(stop), name=loop.name) for loop in self.loops]
        # Notifications wake the loops they concern (a queued job, "reconcile now", "back
        # up now"): at once, not at their next tick.
        wakes = {
            loop.notify_channel: loop.wake
            for loop in [*self.loops, self.scheduler]
            if loop.notify_channel is not None
        }
        self._tasks.append(asyncio.create_task(listen(dsn, wakes, stop), name="listener"))
        live = self.ctx.live
        if self.ctx.settings.redis.enabled and live is not None:
            # Without Redis each node reads the events itself; with it the leader publishes.
            self._tasks.append(asyncio.create_task(live.publish(stop), name="live-publisher"))

    async def stop_loops(self) -> None:
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=LOOP_STOP_GRACE_S)
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.scheduler.cancel_in_flight()
