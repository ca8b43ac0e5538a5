"""What every node reads now and then of the data services around it, for
`/api/v1/cluster`, `/readyz`, `/health` and the metrics: PostgreSQL's replication and WAL
archiving (on the primary) and Redis's replication. A failed read only marks the last
reading unknown."""

from __future__ import annotations

import asyncio
import contextlib
import time

import psycopg
import structlog

from runnerhub import metrics
from runnerhub.context import NodeContext
from runnerhub.domain.replicas import LagMinutes, ReplicationStatus
from runnerhub.store import replication
from runnerhub.store.db import UNAVAILABLE

log = structlog.get_logger("runnerhub.node")

# Reading replication state may fail for want of a database or of the pg_monitor role.
MONITORING_ERRORS: tuple[type[Exception], ...] = (*UNAVAILABLE, psycopg.Error)
CHART_ERRORS: tuple[type[Exception], ...] = (*MONITORING_ERRORS, TimeoutError)


async def watch_replication(ctx: NodeContext, stop: asyncio.Event) -> None:
    db = ctx.settings.database
    chart = LagMinutes()
    while not stop.is_set():
        try:
            async with ctx.db.connection(2.0) as conn:
                status = await replication.read_status(conn, db.replica_lag_alert_s)
                archiver = await replication.read_archiver(conn)
                standby = await replication.read_standby(conn)
            ctx.state.replication = status
            ctx.state.archiver = archiver
            ctx.state.standby = standby
            metrics.record_replication(status)
            metrics.record_archiver(archiver)
            metrics.record_standby(standby)
        except MONITORING_ERRORS as exc:
            # Unreachable, or a role without pg_monitor: monitoring is lost, nothing else.
            ctx.state.replication = ctx.state.archiver = ctx.state.standby = None
            log.debug("replication state not read", error=type(exc).__name__)
        else:
            await _chart_lag(ctx, chart, status)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=db.replication_check_s)


async def _chart_lag(ctx: NodeContext, chart: LagMinutes, status: ReplicationStatus) -> None:
    """The dashboard's replication-lag chart, written by every node that reads the primary
    (the chart outlives any one node; a lost write only leaves a gap in it)."""
    minute = int(time.time() // 60)
    due = [] if status.in_recovery else chart.due(minute, status.replicas)
    if not due:
        return
    try:
        async with asyncio.timeout(2.0), ctx.db.connection(2.0) as conn:  # never hold reads up
            await replication.record_lag(conn, minute, due)
        chart.written(minute, due)
    except CHART_ERRORS as exc:
        log.debug("replication lag not charted", error=type(exc).__name__)


async def watch_cache(ctx: NodeContext, stop: asyncio.Event) -> None:
    """Redis's primary (as Sentinel names it) and its replicas' offset lag. Never blocks
    anything: the cache swallows its own failures (I7)."""
    while not stop.is_set():
        ctx.state.cache_replication = await ctx.cache.replication()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=ctx.settings.redis.check_s)
