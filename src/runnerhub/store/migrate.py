"""Versioned SQL migrations, safe when several nodes run them at once.

Each file `NNNN_name.sql` is applied once, in its own transaction, under a session advisory
lock; a node that waits for the lock finds the work done and applies nothing. A migration
edited after it was applied is refused (its checksum no longer matches).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import structlog

from runnerhub.store.db import UNAVAILABLE, connect

log = structlog.get_logger("runnerhub.node")

# Any constant will do, as long as every node uses the same one.
MIGRATION_LOCK = 0x52554E4E  # "RUNN"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    found = []
    for entry in resources.files("runnerhub.store.migrations").iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return found


async def migrate(dsn: str) -> list[Migration]:
    """Apply what is missing; return what this call applied (empty when up to date)."""
    applied_now: list[Migration] = []
    conn = await connect(dsn, app_name="runnerhub-migrate", autocommit=True)
    async with conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            cur = await conn.execute("SELECT version, checksum FROM schema_migrations")
            done = {row["version"]: row["checksum"] for row in await cur.fetchall()}
            for mig in available():
                if mig.version in done:
                    if done[mig.version] != mig.checksum:
                        raise MigrationError(
                            f"migration {mig.version:04d}_{mig.name} was changed after it was "
                            "applied; add a new migration instead of editing an old one"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(mig.sql.encode())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (mig.version, mig.name, mig.checksum),
                    )
                applied_now.append(mig)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied_now


async def current_version(dsn: str) -> int:
    conn = await connect(dsn, app_name="runnerhub-migrate", autocommit=True)
    async with conn:
        cur = await conn.execute("SELECT to_regclass('schema_migrations') AS t")
        row = await cur.fetchone()
        if row is None or row["t"] is None:
            return 0
        cur = await conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")
        row = await cur.fetchone()
        return int(row["v"]) if row else 0


async def migrate_when_reachable(dsn: str, stop: asyncio.Event, retry_s: float = 2.0) -> bool:
    """Migrate once the database answers (a node starts while it is down); False if `stop`
    came first."""
    while not stop.is_set():
        try:
            applied = await migrate(dsn)
            if applied:
                log.info("database migrated", applied=[m.version for m in applied])
            return True
        except UNAVAILABLE as exc:
            log.warning("database not reachable for migrations; retrying", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=retry_s)
    return False
