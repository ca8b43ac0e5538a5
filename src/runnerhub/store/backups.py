"""Backups and backup checks in PostgreSQL (migration 0004): one row per attempt."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runnerhub.domain.backups import Check, Done, Kind
from runnerhub.store.db import Conn

BACKUP_COLUMNS = """id, repo, kind, label, ok, error, started_at, finished_at, size_bytes,
    repo_bytes, wal_start, wal_stop, lsn_start, lsn_stop, node, epoch, duration_s"""
CHECK_COLUMNS = """id, repo, kind, label, ok, error, started_at, finished_at, detail, node,
    epoch, duration_s"""


@dataclass(frozen=True)
class BackupRow:
    id: int
    repo: int
    kind: str  # full, diff, incr
    label: str | None
    ok: bool
    error: str | None
    started_at: datetime
    finished_at: datetime
    size_bytes: int | None
    repo_bytes: int | None
    wal_start: str | None
    wal_stop: str | None
    lsn_start: str | None
    lsn_stop: str | None
    node: str
    epoch: int | None
    duration_s: float

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> BackupRow:
        return cls(**row)


@dataclass(frozen=True)
class CheckRow:
    id: int
    repo: int
    kind: str  # verify, restore_test
    label: str | None
    ok: bool
    error: str | None
    started_at: datetime
    finished_at: datetime
    detail: dict[str, Any]
    node: str
    epoch: int | None
    duration_s: float

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CheckRow:
        return cls(**row)


@dataclass(frozen=True)
class NewBackup:
    """A backup attempt as it ended (what `record_backup` writes)."""

    repo: int
    kind: Kind
    ok: bool
    started_at: datetime
    finished_at: datetime
    label: str | None = None
    error: str | None = None
    size_bytes: int | None = None
    repo_bytes: int | None = None
    wal_start: str | None = None
    wal_stop: str | None = None
    lsn_start: str | None = None
    lsn_stop: str | None = None


async def record_backup(conn: Conn, b: NewBackup, node: str, epoch: int | None) -> int:
    cur = await conn.execute(
        """INSERT INTO backups (repo, kind, label, ok, error, started_at, finished_at,
                                size_bytes, repo_bytes, wal_start, wal_stop, lsn_start,
                                lsn_stop, node, epoch)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           RETURNING id""",
        (
            *(b.repo, b.kind.value, b.label, b.ok, b.error, b.started_at, b.finished_at),
            *(b.size_bytes, b.repo_bytes, b.wal_start, b.wal_stop, b.lsn_start, b.lsn_stop),
            *(node, epoch),
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def record_check(
    conn: Conn,
    *,
    repo: int,
    kind: Check,
    ok: bool,
    started_at: datetime,
    finished_at: datetime,
    node: str,
    epoch: int | None,
    label: str | None = None,
    error: str | None = None,
    detail: dict[str, Any] | None = None,
) -> int:
    cur = await conn.execute(
        """INSERT INTO backup_checks (repo, kind, label, ok, error, started_at, finished_at,
                                      detail, node, epoch)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (
            *(repo, kind.value, label, ok, error, started_at, finished_at),
            *(json.dumps(detail or {}, default=str), node, epoch),
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def done(conn: Conn) -> dict[int, Done]:
    """Per repository: when the newest good backup of each kind and check finished, and
    when the newest attempt of anything failed (epoch seconds), for `domain.backups`."""
    cur = await conn.execute(
        """SELECT 'backup' AS what, repo, kind, max(extract(epoch FROM finished_at)) AS at
             FROM backups WHERE ok GROUP BY repo, kind
           UNION ALL
           SELECT 'check', repo, kind, max(extract(epoch FROM finished_at))
             FROM backup_checks WHERE ok GROUP BY repo, kind
           UNION ALL
           SELECT 'failed', repo, NULL, max(extract(epoch FROM finished_at)) FROM (
               SELECT repo, finished_at, ok FROM backups
               UNION ALL SELECT repo, finished_at, ok FROM backup_checks) AS a
             WHERE NOT ok GROUP BY repo"""
    )
    backups: dict[int, dict[Kind, float]] = {}
    checks: dict[int, dict[Check, float]] = {}
    failed: dict[int, float] = {}
    for r in await cur.fetchall():
        repo, at = int(r["repo"]), float(r["at"])
        if r["what"] == "backup":
            backups.setdefault(repo, {})[Kind(r["kind"])] = at
        elif r["what"] == "check":
            checks.setdefault(repo, {})[Check(r["kind"])] = at
        else:
            failed[repo] = at
    # A failure counts only until something of that repository succeeds after it.
    out = {}
    for repo in backups.keys() | checks.keys() | failed.keys():
        good = [*backups.get(repo, {}).values(), *checks.get(repo, {}).values()]
        fail = failed.get(repo)
        if fail is not None and good and max(good) > fail:
            fail = None
        out[repo] = Done(backups.get(repo, {}), checks.get(repo, {}), fail)
    return out


async def list_backups(
    conn: Conn, repo: int | None, limit: int, before_id: int | None
) -> list[BackupRow]:
    """Newest first; `before_id` is the keyset cursor."""
    cur = await conn.execute(
        f"""SELECT {BACKUP_COLUMNS} FROM backups
            WHERE (%(repo)s::int IS NULL OR repo = %(repo)s)
              AND (%(before)s::bigint IS NULL OR id < %(before)s)
            ORDER BY id DESC LIMIT %(limit)s""",
        {"repo": repo, "before": before_id, "limit": limit},
    )
    return [BackupRow.from_row(r) for r in await cur.fetchall()]


async def latest_checks(conn: Conn) -> list[CheckRow]:
    """The newest verify and restore test of each repository."""
    cur = await conn.execute(
        f"""SELECT DISTINCT ON (repo, kind) {CHECK_COLUMNS} FROM backup_checks
            ORDER BY repo, kind, finished_at DESC"""
    )
    return [CheckRow.from_row(r) for r in await cur.fetchall()]


@dataclass(frozen=True)
class Failure:
    repo: int
    what: str  # full, diff, incr, verify, restore_test
    error: str | None
    at: datetime


async def failures_since_success(conn: Conn) -> list[Failure]:
    """Per repository and kind, the newest attempt when it failed (nothing has succeeded
    since): what /health and the incident name."""
    cur = await conn.execute(
        """SELECT repo, kind AS what, error, finished_at AS at, ok FROM (
               SELECT DISTINCT ON (repo, kind) repo, kind, error, finished_at, ok
                 FROM backups ORDER BY repo, kind, finished_at DESC) b
           UNION ALL
           SELECT repo, kind, error, finished_at, ok FROM (
               SELECT DISTINCT ON (repo, kind) repo, kind, error, finished_at, ok
                 FROM backup_checks ORDER BY repo, kind, finished_at DESC) c
           ORDER BY repo, what"""
    )
    return [
        Failure(int(r["repo"]), r["what"], r["error"], r["at"])
        for r in await cur.fetchall()
        if not r["ok"]
    ]


# -- operators' requests (migration 0009) ---------------------------------------------------

REQUEST_COLUMNS = """id, repo, what, requested_by, requested_at, started_at, finished_at, ok,
    error, node"""


@dataclass(frozen=True)
class RequestRow:
    id: int
    repo: int
    what: str  # full, diff, incr, verify, restore_test
    requested_by: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    ok: bool | None
    error: str | None
    node: str | None


async def request(conn: Conn, repo: int, what: Kind | Check, by: str) -> RequestRow:
    cur = await conn.execute(
        f"""INSERT INTO backup_requests (repo, what, requested_by) VALUES (%s, %s, %s)
            RETURNING {REQUEST_COLUMNS}""",
        (repo, what.value, by),
    )
    row = await cur.fetchone()
    assert row is not None
    return RequestRow(**row)


async def get_request(conn: Conn, request_id: int) -> RequestRow | None:
    cur = await conn.execute(
        f"SELECT {REQUEST_COLUMNS} FROM backup_requests WHERE id = %s", (request_id,)
    )
    row = await cur.fetchone()
    return RequestRow(**row) if row else None


async def next_request(conn: Conn) -> RequestRow | None:
    """The oldest request not finished (a deposed leader's half-run one included)."""
    cur = await conn.execute(
        f"""SELECT {REQUEST_COLUMNS} FROM backup_requests WHERE finished_at IS NULL
            ORDER BY id LIMIT 1"""
    )
    row = await cur.fetchone()
    return RequestRow(**row) if row else None


async def start_request(conn: Conn, request_id: int, node: str) -> None:
    await conn.execute(
        "UPDATE backup_requests SET started_at = now(), node = %s WHERE id = %s",
        (node, request_id),
    )


async def finish_request(conn: Conn, request_id: int, ok: bool, error: str | None) -> None:
    await conn.execute(
        "UPDATE backup_requests SET finished_at = now(), ok = %s, error = %s WHERE id = %s",
        (ok, error, request_id),
    )
