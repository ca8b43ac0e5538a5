"""The leader's backups: at each cycle, what is due (`domain.backups.next_job`, from the
records in PostgreSQL) is run with pgBackRest — a full, diff or incr backup, a `verify`, or
a restore test — one at a time, and its outcome recorded, fenced by the leader's epoch like
every other leader action, with an event and metrics. A new leader carries on from the
records; whatever a deposed leader had under way is killed with its loop.

pgBackRest copies from a replica when one streams (`backup-standby`); with none, from the
primary. Retention is pgBackRest's (`repoN-retention-*`), applied after each backup.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

import structlog
from prometheus_client import Counter, Gauge

from runnerhub.backup.pgbackrest import (
    BackupInfo,
    PgBackRest,
    PgBackRestError,
    repo_names,
    repo_space,
    schedules,
)
from runnerhub.backup.restore_test import RestoreTest
from runnerhub.context import NodeContext
from runnerhub.control.loop import ControlLoop
from runnerhub.domain.backups import (
    Check,
    Done,
    Job,
    Kind,
    Space,
    archive_behind,
    due_backup,
    due_check,
    kind_or_check,
    next_job,
)
from runnerhub.store import backups as backup_store
from runnerhub.store import events
from runnerhub.store.backups import NewBackup
from runnerhub.store.listener import BACKUP_CHANNEL

log = structlog.get_logger("runnerhub.backups")

LAST_SUCCESS = Gauge(
    "runnerhub_backup_last_success_timestamp_seconds",
    "When the newest good backup of each kind, or check, of each repository finished "
    "(exported by the leader).",
    ["repo", "what"],
)
OVERDUE = Gauge(
    "runnerhub_backup_overdue_seconds",
    "How long what each repository's schedule calls for has been due (0: nothing is).",
    ["repo", "what"],
)
DURATION = Gauge(
    "runnerhub_backup_duration_seconds",
    "How long the newest backup or check of each kind took.",
    ["repo", "what"],
)
SIZE = Gauge(
    "runnerhub_backup_size_bytes",
    "The newest backup of each kind: what it added to the repository.",
    ["repo", "kind"],
)
ARCHIVE_BEHIND = Gauge(
    "runnerhub_backup_archive_behind_segments",
    "WAL segments a repository's archive ends before the newest the primary archived "
    "(above a few: WAL dropped at archive-push-queue-max, or not pushed).",
    ["repo"],
)
REPO_FREE = Gauge(
    "runnerhub_backup_repo_free_bytes",
    "Free space on each watched repository's file system (repos[].path).",
    ["repo"],
)
REPO_SIZE = Gauge(
    "runnerhub_backup_repo_size_bytes",
    "The size of each watched repository's file system (repos[].path).",
    ["repo"],
)
FAILURES = Counter(
    "runnerhub_backup_failures_total",
    "Backups and checks that failed, by repository and what.",
    ["repo", "what"],
)


class Backups(ControlLoop):
    name = "backups"
    notify_channel = BACKUP_CHANNEL  # an operator's request wakes it at once

    def __init__(self, ctx: NodeContext) -> None:
        self.settings = ctx.settings.backup
        super().__init__(self.settings.interval_s)
        self.ctx = ctx
        self.node = ctx.settings.node.id
        self.pgbackrest = PgBackRest(self.settings)
        self.restore_test = RestoreTest(
            self.settings, self.pgbackrest, ctx.settings.database.dsn.get_secret_value()
        )
        self.schedules = schedules(self.settings)
        self.names = repo_names(self.settings)
        self._archive_checked = 0.0
        self.space: dict[int, Space] = {}

    async def cycle(self) -> None:
        if not self.settings.enabled:
            return
        async with self.ctx.db.connection() as conn:
            done = await backup_store.done(conn)
        now = time.time()
        self._export(done, now)
        self.space = repo_space(self.settings)
        for repo, space in self.space.items():
            REPO_FREE.labels(str(repo)).set(space.free)
            REPO_SIZE.labels(str(repo)).set(space.total)
        if now >= self._archive_checked + self.settings.archive_check_s:
            await self.check_archive()
            self._archive_checked = now
        if await self._requested():
            self.wake()  # another request, or the schedule, next
            return
        job = next_job(self.schedules, done, now)
        if job is None:
            return
        self.ctx.ensure_may_act()
        await self._run(job.repo, job.what)
        self.wake()  # something else may be due as well

    async def _run(self, repo: int, what: Kind | Check) -> tuple[bool, str | None]:
        if isinstance(what, Kind):
            return await self._backup(repo, what)
        if what is Check.VERIFY:
            return await self._verify(repo)
        return await self._restore_test(repo)

    async def _requested(self) -> bool:
        """An operator's request first (`runnerhub backups run`), recorded like a scheduled
        one and on the request; False when there is none."""
        async with self.ctx.db.connection() as conn:
            req = await backup_store.next_request(conn)
        if req is None:
            return False
        self.ctx.ensure_may_act()
        async with self.ctx.control_tx() as conn:
            await backup_store.start_request(conn, req.id, self.node)
        log.info("backup requested by an operator", request=req.id, repo=req.repo, what=req.what)
        if req.repo in self.names:
            ok, error = await self._run(req.repo, kind_or_check(req.what))
        else:  # the API checks; the configuration may have changed since
            ok, error = False, f"no repository {req.repo} in this leader's configuration"
        async with self.ctx.control_tx() as conn:
            await backup_store.finish_request(conn, req.id, ok, error)
        return True

    async def check_archive(self) -> None:
        """Each repository's newest WAL against the newest the primary reports archived:
        pgBackRest reports a segment archived when it dropped it too (a queue past
        `archive-push-queue-max`), so only the repositories show what is missing."""
        archiver = self.ctx.state.archiver
        if archiver is None:
            return
        try:
            info = await self.pgbackrest.info()
        except PgBackRestError as exc:
            log.warning("archive check: pgbackrest info failed", error=str(exc)[:300])
            return
        behind = archive_behind(archiver.last_archived_wal, info.wal_max)
        for repo in self.names:
            ARCHIVE_BEHIND.labels(str(repo)).set(behind.get(repo, 0))
        self.ctx.state.archive_behind = behind

    # -- backups ---------------------------------------------------------------------------

    async def _backup(self, repo: int, kind: Kind) -> tuple[bool, str | None]:
        attempt = uuid.uuid4().hex[:12]
        started = datetime.now(UTC)
        space = self.space.get(repo)
        try:
            if space is not None and space.full:
                # pgBackRest would start it and fail later, after a checkpoint and its
                # archive timeout, with a reason that does not say "full".
                where = f"repo{repo} ({self.names.get(repo)})"
                raise PgBackRestError(f"not started: {where}: {space.problem(0)}")
            log.info("backup starting", repo=repo, kind=kind.value, attempt=attempt)
            info, from_standby = await self.pgbackrest.backup(repo, kind, attempt)
        except PgBackRestError as exc:
            failed = NewBackup(repo, kind, False, started, datetime.now(UTC), error=str(exc))
            await self._record_backup(failed, None)
            return False, failed.error
        record = NewBackup(
            repo,
            kind,
            True,
            started,
            datetime.now(UTC),
            label=info.label,
            size_bytes=info.size_bytes,
            repo_bytes=info.repo_bytes,
            wal_start=info.wal_start,
            wal_stop=info.wal_stop,
            lsn_start=info.lsn_start,
            lsn_stop=info.lsn_stop,
        )
        await self._record_backup(record, from_standby)
        return True, None

    async def _record_backup(self, b: NewBackup, from_standby: bool | None) -> None:
        duration = (b.finished_at - b.started_at).total_seconds()
        detail = {
            "repo": b.repo,
            "repo_name": self.names.get(b.repo),
            "type": b.kind.value,
            "label": b.label,
            "duration_s": round(duration, 3),
            "size_bytes": b.size_bytes,
            "repo_bytes": b.repo_bytes,
            "wal": [b.wal_start, b.wal_stop],
            "from_standby": from_standby,
            "error": b.error,
        }
        async with self.ctx.control_tx() as conn:
            await backup_store.record_backup(conn, b, self.node, self.ctx.leadership.epoch)
            kind = "backup.finished" if b.ok else "backup.failed"
            await events.append(conn, self.node, kind, f"repo:{b.repo}", **detail)
        DURATION.labels(str(b.repo), b.kind.value).set(duration)
        if b.ok:
            SIZE.labels(str(b.repo), b.kind.value).set(b.repo_bytes or 0)
            log.info("backup finished", **detail)
        else:
            FAILURES.labels(str(b.repo), b.kind.value).inc()
            log.warning("backup failed", **detail)

    # -- checks ----------------------------------------------------------------------------

    async def _verify(self, repo: int) -> tuple[bool, str | None]:
        started = datetime.now(UTC)
        try:
            result = await self.pgbackrest.verify(repo)
            ok, error = result.ok, "; ".join(result.problems)[:1000] or None
            detail = {"backups_checked": result.backups_checked, "problems": result.problems}
        except PgBackRestError as exc:
            ok, error, detail = False, str(exc), {}
        await self._record_check(repo, Check.VERIFY, ok, started, error, detail, None)
        return ok, error

    async def _restore_test(self, repo: int) -> tuple[bool, str | None]:
        started = datetime.now(UTC)
        try:
            newest = await self._newest_backup(repo)
        except PgBackRestError as exc:
            await self._record_check(repo, Check.RESTORE_TEST, False, started, str(exc), {}, None)
            return False, str(exc)
        if newest is None:
            error = "no backup in the repository to restore"
            await self._record_check(repo, Check.RESTORE_TEST, False, started, error, {}, None)
            return False, error
        log.info("restore test starting", repo=repo, label=newest.label)
        report = await self.restore_test.run(repo, newest, self.ctx.db)
        await self._record_check(
            repo,
            Check.RESTORE_TEST,
            report.ok,
            started,
            report.error,
            report.detail,
            newest.label,
        )
        return report.ok, report.error

    async def _newest_backup(self, repo: int) -> BackupInfo | None:
        found = [b for b in (await self.pgbackrest.info()).backups if b.repo == repo]
        return max(found, key=lambda b: b.stopped_at, default=None)

    async def _record_check(
        self,
        repo: int,
        check: Check,
        ok: bool,
        started: datetime,
        error: str | None,
        detail: Mapping[str, object],
        label: str | None,
    ) -> None:
        finished = datetime.now(UTC)
        async with self.ctx.control_tx() as conn:
            await backup_store.record_check(
                conn,
                repo=repo,
                kind=check,
                ok=ok,
                started_at=started,
                finished_at=finished,
                node=self.node,
                epoch=self.ctx.leadership.epoch,
                label=label,
                error=error,
                detail=dict(detail),
            )
            kind = f"backup.{check.value}_{'passed' if ok else 'failed'}"
            await events.append(
                conn,
                self.node,
                kind,
                f"repo:{repo}",
                label=label,
                error=error,
                duration_s=round((finished - started).total_seconds(), 3),
            )
        DURATION.labels(str(repo), check.value).set((finished - started).total_seconds())
        if not ok:
            FAILURES.labels(str(repo), check.value).inc()
        (log.info if ok else log.warning)(
            f"{check.value.replace('_', ' ')} {'passed' if ok else 'failed'}",
            repo=repo,
            label=label,
            error=error,
        )

    # -- metrics ---------------------------------------------------------------------------

    def _export(self, done: Mapping[int, Done], now: float) -> None:
        for s in self.schedules:
            d = done.get(s.repo, Done({}, {}))
            repo = str(s.repo)
            for kind, at in d.backups.items():
                LAST_SUCCESS.labels(repo, kind.value).set(at)
            for check, at in d.checks.items():
                LAST_SUCCESS.labels(repo, check.value).set(at)
            due: list[Job | None] = [due_backup(s, d, now)]
            due += [due_check(s, d, c, now) for c in Check]
            late = {j.what.value: j.overdue_s for j in due if j is not None}
            for what in (*Kind, *Check):
                OVERDUE.labels(repo, what.value).set(round(late.get(what.value, 0.0), 1))
                # Exported at 0 before the first failure: a series that appears at 1 hides
                # that failure from increase(), and RunnerHubBackupFailing needed a fourth.
                FAILURES.labels(repo, what.value)
