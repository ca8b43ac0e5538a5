"""What `runnerhub doctor` asks PostgreSQL: who it is, its clock, how far the schema is
migrated, where its files are. One connection of its own, bounded in time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from runnerhub.store.db import Conn


@dataclass(frozen=True)
class ServerFacts:
    version_num: int  # server_version_num: 150004 is 15.4
    version: str
    schema_version: int  # newest migration applied; 0: none
    data_directory: str | None  # None: this role may not see it
    host: str  # where this connection went (a multi-host DSN names several)
    port: str
    dbname: str


async def connect(dsn: str, timeout_s: float) -> Conn:
    # libpq counts connect_timeout in whole seconds, per host tried, and at least 2.
    return await psycopg.AsyncConnection.connect(
        dsn,
        row_factory=dict_row,
        autocommit=True,
        application_name="runnerhub-doctor",
        connect_timeout=max(2, round(timeout_s)),
    )


async def server_clock(conn: Conn) -> datetime:
    """The server's wall clock now (clock_timestamp: now() is the transaction's start)."""
    cur = await conn.execute("SELECT clock_timestamp() AS t")
    row = await cur.fetchone()
    assert row is not None
    return row["t"]  # type: ignore[no-any-return]


async def server_facts(conn: Conn) -> ServerFacts:
    cur = await conn.execute(
        "SELECT current_setting('server_version_num')::int AS num, "
        "current_setting('server_version') AS version, "
        "to_regclass('schema_migrations') IS NOT NULL AS migrated"
    )
    row = await cur.fetchone()
    assert row is not None
    schema_version = 0
    if row["migrated"]:
        cur = await conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")
        found = await cur.fetchone()
        schema_version = int(found["v"]) if found else 0
    try:  # superusers and pg_read_all_settings only
        cur = await conn.execute("SELECT current_setting('data_directory') AS d")
        found = await cur.fetchone()
        data_directory = str(found["d"]) if found else None
    except psycopg.errors.InsufficientPrivilege:
        data_directory = None
    info = conn.info
    return ServerFacts(
        int(row["num"]),
        str(row["version"]),
        schema_version,
        data_directory,
        info.host,
        str(info.port),
        info.dbname,
    )
