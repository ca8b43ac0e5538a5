"""`/api/v1/backups`: what the leader backed up, where, and what the checks found."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter, Query

from runnerhub.api.deps import Context, Reader, cursor_in, cursor_out
from runnerhub.api.schemas import (
    BackupCheckOut,
    BackupOut,
    BackupPage,
    BackupStatusOut,
    RepoStatusOut,
)
from runnerhub.backup.pgbackrest import repo_names, schedules
from runnerhub.domain.backups import Done, overdue
from runnerhub.store import backups as backup_store

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
