"""The leader's retention: deliveries and events older than their configured age, and the
replication-lag chart's samples older than two days (the chart reaches back one), are
deleted, a batch per short transaction (`store.retention`), at most `max_batches` per table
and cycle, so a large backlog is worked off over several cycles and never in the hot path.
What went is counted (`runnerhub_retention_deleted_total`) and recorded as one event."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog

from runnerhub import metrics
from runnerhub.context import NodeContext
from runnerhub.control.loop import ControlLoop
from runnerhub.store import events
from runnerhub.store.retention import Table, delete_batch

log = structlog.get_logger("runnerhub.retention")

LAG_SAMPLES_KEPT = timedelta(days=2)


class Retention(ControlLoop):
    name = "retention"
    cycle_deadline_s = 300.0

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx.settings.retention.interval_s)
        self.ctx = ctx

    def _ages(self) -> dict[Table, timedelta]:
        r = self.ctx.settings.retention
        ages: dict[Table, timedelta] = {"replication_lag": LAG_SAMPLES_KEPT}
        if r.deliveries_days is not None:
            ages["webhook_deliveries"] = timedelta(days=r.deliveries_days)
        if r.events_days is not None:
            ages["events"] = timedelta(days=r.events_days)
        return ages

    async def cycle(self) -> None:
        r = self.ctx.settings.retention
        deleted: dict[str, int] = {}
        for table, age in self._ages().items():
            cutoff = datetime.now(UTC) - age
            total = 0
            for _ in range(r.max_batches):
                self.ctx.ensure_may_act()  # a deposed leader stops between batches
                async with self.ctx.db.connection() as conn:
                    n = await delete_batch(conn, table, cutoff, r.batch_size)
                total += n
                metrics.RETENTION_DELETED.labels(table).inc(n)
                if n < r.batch_size:
                    break
                await asyncio.sleep(0)  # let the intake's queries in between batches
            if total:
                deleted[table] = total
        if deleted:
            log.info("retention: old rows deleted", **deleted)
            async with self.ctx.db.connection() as conn:
                await events.append(
                    conn, self.ctx.settings.node.id, "retention.deleted", "cluster", **deleted
                )
