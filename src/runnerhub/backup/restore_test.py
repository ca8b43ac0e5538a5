"""A restore test: restore a backup into a scratch directory, start PostgreSQL on it, check
it, stop it. A backup is only as good as the last time it was restored.

The copy starts with a configuration of its own, not the one in the backup (that one is
Patroni's: it names the live member's files and port, archives to the repository and waits
on a synchronous replica that is not there): no TCP at all (a socket in the scratch
directory), no archiving, local connections trusted. pgBackRest restores it to the end of
the backup (`--type=immediate`) and promotes it, so amcheck can be installed into it.

The checks: the page checksums PostgreSQL saw while recovering, amcheck over every btree
index (`bt_index_check` with the heap) and every table (`verify_heapam`), and, table by
table, the rows written on the primary before the backup ended (less a margin no
transaction of RunnerHub's outlives) against the rows the copy holds from before then.
"""

from __future__ import annotations

import asyncio
import contextlib
import pwd
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from runnerhub.backup.command import CommandError, base_env, run
from runnerhub.backup.pgbackrest import BackupInfo, PgBackRest, PgBackRestError
from runnerhub.config import BackupSettings
from runnerhub.store import restore_checks
from runnerhub.store.db import Conn, Pool

# A transaction of RunnerHub's lasts seconds (statement_timeout, idle_in_transaction);
# rows stamped this long before the backup ended have certainly committed before it.
COMMIT_MARGIN = timedelta(seconds=30)
SOCKET_PORT = 5499  # names the socket file only: the copy listens on no TCP port
DEFAULT_DIR = Path("/var/tmp/runnerhub-restore-test")


class RestoreTestFailed(Exception):
    pass


@dataclass
class RestoreReport:
    label: str
    ok: bool
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def pg_bin_dir(settings: BackupSettings) -> Path:
    if settings.pg_bin_dir is not None:
        return settings.pg_bin_dir
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RestoreTestFailed("no PostgreSQL server binaries (set backup.pg_bin_dir)")
    return found[-1].parent


def copy_config(scratch: Path) -> str:
    """The restored copy's postgresql.conf: nothing of the live cluster's."""
    return "\n".join(
        [
            "listen_addresses = ''",
            f"port = {SOCKET_PORT}",
            f"unix_socket_directories = '{scratch / 'sock'}'",
            f"hba_file = '{scratch / 'hba.conf'}'",
            f"ident_file = '{scratch / 'data' / 'pg_ident.conf'}'",
            "archive_mode = off",
            "archive_command = ''",
            "primary_conninfo = ''",
            "primary_slot_name = ''",
            "synchronous_standby_names = ''",
            "hot_standby = off",
            "logging_collector = off",
            "shared_buffers = 32MB",
            "max_connections = 20",
            "max_wal_senders = 0",
            "max_replication_slots = 0",
            "wal_level = replica",
            "fsync = off",
            "autovacuum = off",
            "cluster_name = 'runnerhub-restore-test'",
            "",
        ]
    )


class RestoreTest:
    def __init__(self, settings: BackupSettings, pgbackrest: PgBackRest, dsn: str) -> None:
        self.settings = settings
        self.pgbackrest = pgbackrest
        self.user = pwd.getpwnam(settings.user) if settings.user else None
        target = conninfo_to_dict(dsn)
        self.dbname = str(target.get("dbname") or "postgres")
        self.role = str(target.get("user") or "postgres")

    async def run(self, repo: int, backup: BackupInfo, db: Pool) -> RestoreReport:
        """Restore `backup` of `repo`, start it, check it against the primary (read through
        `db` only for the comparison: a restore may take hours), stop and remove it."""
        scratch = (self.settings.restore_test_dir or DEFAULT_DIR) / f"repo{repo}"
        report = RestoreReport(backup.label, ok=False)
        timings: dict[str, float] = {}
        report.detail["seconds"] = timings
        try:
            began = time.monotonic()
            await self._restore(repo, backup, scratch)
            timings["restore"] = round(time.monotonic() - began, 3)
            began = time.monotonic()
            await self._start(scratch)
            timings["start"] = round(time.monotonic() - began, 3)
            began = time.monotonic()
            report.detail |= await self._check(scratch, backup, db)
            timings["checks"] = round(time.monotonic() - began, 3)
            report.ok = not report.detail["problems"]
            report.error = "; ".join(report.detail["problems"]) or None
        except (RestoreTestFailed, PgBackRestError, CommandError, psycopg.Error) as exc:
            report.error = str(exc)[:1000]
        finally:
            await self._stop(scratch)
        return report

    def _own(self, path: Path, mode: int = 0o700) -> None:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        if self.user is not None:
            shutil.chown(path, self.user.pw_uid, self.user.pw_gid)

    async def _restore(self, repo: int, backup: BackupInfo, scratch: Path) -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        for d in (scratch.parent, scratch, scratch / "data", scratch / "sock", scratch / "spool"):
            self._own(d)
        await self.pgbackrest.restore(
            repo,
            backup.label,
            str(scratch / "data"),
            f"--spool-path={scratch / 'spool'}",
            "--type=immediate",
            "--target-action=promote",
            "--archive-mode=off",
            # Its own restore_command, without prefetching: the copy asks once for the
            # segment after the backup, which is not there yet, and asynchronous
            # archive-get would wait archive-timeout for it.
            f"--recovery-option=restore_command={self._restore_command(repo, scratch)}",
        )
        for name, text in (
            ("copy.conf", copy_config(scratch)),
            ("hba.conf", "local all all trust\n"),
        ):
            (scratch / name).write_text(text)
            if self.user is not None:
                shutil.chown(scratch / name, self.user.pw_uid, self.user.pw_gid)

    def _restore_command(self, repo: int, scratch: Path) -> str:
        argv = self.pgbackrest.argv(
            "archive-get",
            f"--repo={repo}",
            f"--pg1-path={scratch / 'data'}",
            "--no-archive-async",
        )
        return " ".join(argv) + ' %f "%p"'

    async def _pg_ctl(self, scratch: Path, *args: str, timeout_s: float) -> tuple[int, str]:
        argv = [str(pg_bin_dir(self.settings) / "pg_ctl"), "-D", str(scratch / "data"), *args]
        return await run(argv, user=self.user, env=base_env(self.user), timeout_s=timeout_s)

    async def _start(self, scratch: Path) -> None:
        log = scratch / "server.log"
        code, out = await self._pg_ctl(
            scratch,
            "-l",
            str(log),
            "-w",
            "-t",
            str(int(self.settings.timeout_s)),
            "-o",
            f"-c config_file={scratch / 'copy.conf'}",
            "start",
            timeout_s=self.settings.timeout_s,
        )
        if code != 0:
            raise RestoreTestFailed(f"the restored copy did not start: {_tail(log) or out}")
        # pg_ctl returns once connections are accepted; recovery to the backup's end, then
        # the promotion, may still be under way.
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            try:
                async with await self._connect(scratch, self.role) as conn:
                    if not await restore_checks.in_recovery(conn):
                        return
            except psycopg.OperationalError:
                if not (scratch / "data" / "postmaster.pid").exists():
                    raise RestoreTestFailed(
                        f"the restored copy stopped while recovering: {_tail(log)}"
                    ) from None
            if time.monotonic() > deadline:
                raise RestoreTestFailed("the restored copy did not finish recovering in time")
            await asyncio.sleep(0.2)

    async def _connect(self, scratch: Path, role: str) -> Conn:
        return await psycopg.AsyncConnection.connect(
            host=str(scratch / "sock"),
            port=SOCKET_PORT,
            dbname=self.dbname,
            user=role,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=5,
        )

    async def _check(self, scratch: Path, backup: BackupInfo, db: Pool) -> dict[str, Any]:
        before = datetime.fromtimestamp(backup.stopped_at, UTC) - COMMIT_MARGIN
        async with await self._connect(scratch, self.role) as conn:
            role = await restore_checks.superuser(conn) or self.role
            restored = await restore_checks.rows_written_before(conn, before)
        async with await self._connect(scratch, role) as conn:
            found = await restore_checks.integrity(conn)
        async with db.connection() as primary:
            expected = await restore_checks.rows_written_before(primary, before)
        problems = [
            f"{table}: {restored[table]} rows written before {before:%H:%M:%S} in the copy, "
            f"{expected[table]} on the primary"
            for table in expected
            if restored.get(table) != expected[table]
        ]
        if found.checksum_failures:
            problems.append(f"{found.checksum_failures} page checksum failures")
        if found.heap_corruptions:
            problems.append(f"amcheck found {found.heap_corruptions} corrupt tuples")
        return {
            "problems": problems,
            "data_checksums": found.data_checksums,
            "indexes_checked": found.indexes_checked,
            "tables_checked": found.tables_checked,
            "rows": {t: {"copy": restored.get(t), "primary": expected[t]} for t in expected},
            "rows_before": before.isoformat(),
        }

    async def _stop(self, scratch: Path) -> None:
        if (scratch / "data" / "postmaster.pid").exists():
            with contextlib.suppress(CommandError):  # on a timeout it is killed anyway
                await self._pg_ctl(scratch, "-m", "immediate", "-w", "stop", timeout_s=60)
        shutil.rmtree(scratch, ignore_errors=True)


def _tail(path: Path, lines: int = 6) -> str:
    try:
        return " / ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
