"""What a restore test asks of a restored copy of RunnerHub's database, and of the primary
to compare with: the database's own integrity checks, and how many rows each table held
before a moment (the statements live here with the rest of RunnerHub's SQL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from runnerhub.store.db import Conn

# Tables and the column that says when each row was first written (rows are never deleted
# from these: an old row missing from a restore is data lost).
WRITTEN_AT = {
    "jobs": "first_seen_at",
    "runners": "created_at",
    "events": "at",
    "incidents": "detected_at",
}


@dataclass(frozen=True)
class Integrity:
    data_checksums: bool
    checksum_failures: int
    indexes_checked: int  # every btree index, with amcheck's bt_index_check (heapallindexed)
    tables_checked: int  # every table, with amcheck's verify_heapam
    heap_corruptions: int


async def superuser(conn: Conn) -> str | None:
    cur = await conn.execute(
        "SELECT rolname FROM pg_roles WHERE rolsuper AND rolcanlogin ORDER BY oid LIMIT 1"
    )
    row = await cur.fetchone()
    return row["rolname"] if row else None


async def in_recovery(conn: Conn) -> bool:
    cur = await conn.execute("SELECT pg_is_in_recovery() AS r")
    row = await cur.fetchone()
    return bool(row and row["r"])


async def integrity(conn: Conn) -> Integrity:
    """Run as a superuser, on a writable copy (amcheck is installed into it)."""
    await conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    cur = await conn.execute(
        """SELECT current_setting('data_checksums') = 'on' AS on,
                  coalesce(sum(checksum_failures), 0)::bigint AS failures
             FROM pg_stat_database"""
    )
    sums = await cur.fetchone()
    assert sums is not None
    cur = await conn.execute(
        """SELECT count(bt_index_check(c.oid, true)) AS n
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace ns ON ns.oid = c.relnamespace
            WHERE a.amname = 'btree' AND c.relpersistence = 'p' AND i.indisready
              AND ns.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"""
    )
    indexes = await cur.fetchone()
    cur = await conn.execute(
        """SELECT count(*) AS tables,
                  coalesce(sum((SELECT count(*) FROM verify_heapam(c.oid))), 0) AS corrupt
             FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
            WHERE c.relkind = 'r' AND c.relpersistence = 'p'
              AND ns.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"""
    )
    heap = await cur.fetchone()
    assert indexes is not None and heap is not None
    return Integrity(
        bool(sums["on"]),
        int(sums["failures"]),
        int(indexes["n"]),
        int(heap["tables"]),
        int(heap["corrupt"]),
    )


async def rows_written_before(conn: Conn, before: datetime) -> dict[str, int]:
    """Per table, the rows first written before `before`."""
    counts = {}
    for table, column in WRITTEN_AT.items():
        cur = await conn.execute(
            f"SELECT count(*) AS n FROM {table} WHERE {column} < %s", (before,)
        )
        row = await cur.fetchone()
        counts[table] = int(row["n"]) if row else 0
    return counts
