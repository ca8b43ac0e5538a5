"""Connections to PostgreSQL: one async pool per node (psycopg 3 + psycopg_pool).

psycopg 3 is the maintained driver with native async, pipeline mode and libpq multi-host
DSNs (`target_session_attrs=read-write`), which the HA issues need; psycopg_pool gives a
pool that reconnects by itself after the database comes back.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from runnerhub.config import DatabaseSettings

log = structlog.get_logger("runnerhub.store.db")

Conn = psycopg.AsyncConnection[dict[str, Any]]
Pool = AsyncConnectionPool[Conn]

# Errors that mean "the database is not reachable now", as opposed to a bug in a query.
UNAVAILABLE: tuple[type[Exception], ...] = (psycopg.OperationalError, PoolTimeout)
# The same, or no answer within the caller's own deadline.
UNAVAILABLE_OR_SLOW: tuple[type[Exception], ...] = (TimeoutError, *UNAVAILABLE)


def _kwargs(settings: DatabaseSettings, app_name: str) -> dict[str, Any]:
    return {
        "row_factory": dict_row,
        "connect_timeout": max(1, round(settings.connect_timeout_s)),
        "application_name": app_name,
        "options": f"-c statement_timeout={settings.statement_timeout_ms} "
        f"-c idle_in_transaction_session_timeout={settings.idle_in_transaction_timeout_ms}",
    }


def make_pool(settings: DatabaseSettings, app_name: str = "runnerhub") -> Pool:
    """A pool, not yet open (open it inside the event loop with `pool.open(wait=False)`)."""
    return AsyncConnectionPool(
        settings.dsn.get_secret_value(),
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        kwargs=_kwargs(settings, app_name),
        timeout=settings.connect_timeout_s,
        reconnect_timeout=0,  # keep trying for ever; a node outlives a database outage
        check=AsyncConnectionPool.check_connection,
        open=False,
        name=app_name,
    )


async def open_pool(settings: DatabaseSettings, app_name: str = "runnerhub") -> Pool:
    """Open without waiting for the database: a node starts even while it is down."""
    pool = make_pool(settings, app_name)
    await pool.open(wait=False)
    return pool


async def ping(conn: Conn) -> None:
    await conn.execute("SELECT 1")


async def connect(dsn: str, app_name: str = "runnerhub", autocommit: bool = False) -> Conn:
    return await psycopg.AsyncConnection.connect(
        dsn, row_factory=dict_row, autocommit=autocommit, application_name=app_name
    )


class HungServerGuard:
    """Drops the pool's idle connections when the server stops answering (a frozen host:
    its TCP connections stay open, and a query on one waits for ever), so that the next
    ones are made afresh — to the new primary once there is one. At most once per
    `every_s`: a hang shows in many places at once."""

    def __init__(self, pool: Pool, every_s: float = 5.0) -> None:
        self._pool = pool
        self._every_s = every_s
        self._last = float("-inf")
        self.drains = 0

    async def hung(self) -> None:
        now = time.monotonic()
        if now - self._last < self._every_s:
            return
        self._last = now
        self.drains += 1
        log.warning("the database does not answer: dropping the pool's idle connections")
        await self._pool.drain()
