"""LISTEN on the leader: job changes wake the scheduler the moment a job is queued, and an
operator's "reconcile now" (asked of any node) wakes the reconciler.

Intake NOTIFYs in the same transaction that stores the job, so the notification arrives only
once the job is committed. The connection is our own (LISTEN needs a session that stays), and
it reconnects after the database comes back; the scheduler's tick covers the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

import psycopg
import structlog

from runnerhub.store.db import Conn

log = structlog.get_logger("runnerhub.store.listener")

RECONCILE_CHANNEL = "runnerhub_reconcile"  # "reconcile now", asked of any node
BACKUP_CHANNEL = "runnerhub_backups"  # an operator's backup request


async def notify(conn: Conn, channel: str) -> None:
    """Delivered to the leader's listener when the caller's transaction commits."""
    await conn.execute("SELECT pg_notify(%s, '')", (channel,))


async def listen(
    dsn: str,
    on_notify: Mapping[str, Callable[[], None]],
    stop: asyncio.Event,
    retry_s: float = 1.0,
) -> None:
    """Call `on_notify[channel]` for each notification on that channel (and each once on
    every (re)connection: for anything that happened while nobody listened)."""
    while not stop.is_set():
        try:
            conn = await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, application_name="runnerhub-listen", connect_timeout=3
            )
            async with conn:
                for channel, wake in on_notify.items():
                    await conn.execute(f"LISTEN {channel}")
                    wake()
                while not stop.is_set():
                    # A short timeout lets us notice `stop`; psycopg keeps what arrives
                    # between two calls in a backlog, so nothing is missed.
                    async for n in conn.notifies(timeout=0.5):
                        if (heard := on_notify.get(n.channel)) is not None:
                            heard()
        except psycopg.OperationalError as exc:
            log.warning("listener lost its connection; retrying", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=retry_s)
