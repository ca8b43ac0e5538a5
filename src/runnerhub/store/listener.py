"""LISTEN for job changes so the scheduler wakes the moment a job is queued.

Intake NOTIFYs in the same transaction that stores the job, so the notification arrives only
once the job is committed. The connection is our own (LISTEN needs a session that stays), and
it reconnects after the database comes back; the scheduler's tick covers the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import psycopg
import structlog

from runnerhub.store.jobs import NOTIFY_CHANNEL

log = structlog.get_logger("runnerhub.store.listener")


async def listen(
    dsn: str, on_notify: Callable[[], None], stop: asyncio.Event, retry_s: float = 1.0
) -> None:
    while not stop.is_set():
        try:
            conn = await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, application_name="runnerhub-listen", connect_timeout=3
            )
            async with conn:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                on_notify()  # anything that happened while we were not listening
                while not stop.is_set():
                    # A short timeout lets us notice `stop`; psycopg keeps what arrives
                    # between two calls in a backlog, so nothing is missed.
                    async for _ in conn.notifies(timeout=0.5):
                        on_notify()
        except psycopg.OperationalError as exc:
            log.warning("job listener lost its connection; retrying", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=retry_s)
