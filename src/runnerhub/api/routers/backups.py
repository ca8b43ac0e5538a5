"""`/api/v1/backups`: what the leader backed up, where, and what the checks found."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from runnerhub.api.deps import BIGINT_MAX, Admin, Context, Reader, audit, cursor_in, cursor_out
from runnerhub.api.schemas import (
    BackupCheckOut,
    BackupOut,
    BackupPage,
    BackupRequestIn,
    BackupRequestOut,
    BackupStatusOut,
    RepoStatusOut,
)
from runnerhub.backup.pgbackrest import repo_names, schedules
from runnerhub.domain.backups import Done, kind_or_check, overdue
from runnerhub.store import backups as backup_store
from runnerhub.store.listener import BACKUP_CHANNEL, notify

router = APIRouter(tags=["backups"])


@router.get("/backups", response_model=BackupPage, summary="Backups, newest first")
async def list_backups(
    ctx: Context,
    _: Reader,
    repo: int | None = Query(
        None, ge=1, le=256, description="one repository (its pgBackRest index)"
    ),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = None,
) -> BackupPage:
    async with ctx.db.connection() as conn:
        rows = await backup_store.list_backups(conn, repo, limit, cursor_in(cursor))
    return BackupPage(
        items=[BackupOut.model_validate(r) for r in rows], next_cursor=cursor_out(rows, limit)
    )


@router.get(
    "/backups/status", response_model=BackupStatusOut, summary="Each repository at a glance"
)
async def backup_status(ctx: Context, _: Reader) -> BackupStatusOut:
    settings = ctx.settings.backup
    async with ctx.db.connection() as conn:
        done = await backup_store.done(conn)
        checks = await backup_store.latest_checks(conn)
    now, names = time.time(), repo_names(settings)
    repos = []
    for s in schedules(settings):
        d = done.get(s.repo, Done({}, {}))
        last = {k.value: t for k, t in d.backups.items()} | {
            c.value: t for c, t in d.checks.items()
        }
        repos.append(
            RepoStatusOut(
                repo=s.repo,
                name=names[s.repo],
                last={k: datetime.fromtimestamp(t, UTC) for k, t in last.items()},
                overdue=overdue(s, d, now, settings.overdue_grace_s),
                checks=[BackupCheckOut.model_validate(c) for c in checks if c.repo == s.repo],
            )
        )
    return BackupStatusOut(enabled=settings.enabled, repos=repos)


@router.post(
    "/backups/run",
    status_code=202,
    response_model=BackupRequestOut,
    summary="Back up (or verify, or test a restore) now (admin; audited)",
)
async def run_backup(ctx: Context, who: Admin, body: BackupRequestIn) -> BackupRequestOut:
    """Asked of any node: the leader's backup loop runs it before anything the schedule
    calls for, and records it like a scheduled one (so an overdue alert clears). Poll
    `GET /api/v1/backups/requests/{id}` for the outcome."""
    settings = ctx.settings.backup
    if not settings.enabled:
        raise HTTPException(409, "backups are off in this node's configuration (backup.enabled)")
    names = repo_names(settings)
    if body.repo not in names:
        have = ", ".join(f"{n} ({name})" for n, name in sorted(names.items()))
        raise HTTPException(404, f"no repository {body.repo}; this cluster has {have}")
    async with ctx.db.connection() as conn, conn.transaction():
        row = await backup_store.request(conn, body.repo, kind_or_check(body.what), who.name)
        await notify(conn, BACKUP_CHANNEL)
        await audit(
            conn, ctx, who, "backup_requested", f"repo:{body.repo}", what=body.what, request=row.id
        )
    return BackupRequestOut.model_validate(row)


@router.get(
    "/backups/requests/{request_id}",
    response_model=BackupRequestOut,
    summary="An operator's backup request and, once run, its outcome",
)
async def backup_request(
    ctx: Context, _: Reader, request_id: Annotated[int, Path(ge=0, le=BIGINT_MAX)]
) -> BackupRequestOut:
    async with ctx.db.connection() as conn:
        row = await backup_store.get_request(conn, request_id)
    if row is None:
        raise HTTPException(404, f"no backup request {request_id}")
    return BackupRequestOut.model_validate(row)
