"""pgBackRest's commands, run as a subprocess: `backup`, `info`, `verify`, `restore`.

pgBackRest is the tool (the Debian package); this module only starts it, bounded in time,
as the user that owns the database files, with each repository's cipher pass handed over
in its environment (read from the file the settings name, at each call: never logged,
never in argv, never kept), and reads back what it says. Its `--output=json` is the record
of a backup; its `ERROR: [code]: message` line is the reason a command failed.
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
from dataclasses import dataclass, field
from typing import Any

from runnerhub.backup.command import CommandError, base_env, run
from runnerhub.config import BackupSettings
from runnerhub.domain.backups import Kind, Schedule, Space, wal_segment

# How much of a failing command's output is kept for the reason (the tail says why).
OUTPUT_TAIL = 4000


class PgBackRestError(Exception):
    """pgBackRest failed, could not be started, or did not finish in time."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code  # pgBackRest's error code (e.g. 103 no archive, 045 cipher)


@dataclass(frozen=True)
class BackupInfo:
    """One backup as `pgbackrest info --output=json` lists it."""

    label: str
    kind: Kind
    repo: int
    started_at: float  # epoch seconds
    stopped_at: float
    size_bytes: int  # the database
    repo_bytes: int  # what it takes in the repository
    wal_start: str | None
    wal_stop: str | None
    lsn_start: str | None
    lsn_stop: str | None
    annotation: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StanzaInfo:
    backups: list[BackupInfo]
    status: str  # "ok", or what pgBackRest says is wrong
    repo_status: dict[int, str]  # per repository: "ok" or its error
    wal_max: dict[int, str]  # newest archived WAL segment per repository


def parse_info(text: str, stanza: str) -> StanzaInfo:
    """The stanza's part of `pgbackrest info --output=json` (pure)."""
    data = json.loads(text)
    found = next((s for s in data if s.get("name") == stanza), None)
    if found is None:
        return StanzaInfo([], f"no stanza {stanza!r}", {}, {})
    backups = [_backup(b) for b in found.get("backup", [])]
    repos = {
        int(r["key"]): (r.get("status") or {}).get("message", "unknown")
        for r in found.get("repo", [])
    }
    wal_max = {
        int(a["database"]["repo-key"]): a["max"]
        for a in found.get("archive", [])
        if a.get("max") and "database" in a
    }
    status = (found.get("status") or {}).get("message", "unknown")
    return StanzaInfo(backups, status, repos, wal_max)


def _backup(b: dict[str, Any]) -> BackupInfo:
    info, ts = b.get("info", {}), b.get("timestamp", {})
    archive, lsn = b.get("archive") or {}, b.get("lsn") or {}
    return BackupInfo(
        label=b["label"],
        kind=Kind(b["type"]),
        repo=int(b["database"]["repo-key"]),
        started_at=float(ts.get("start", 0)),
        stopped_at=float(ts.get("stop", 0)),
        size_bytes=int(info.get("size", 0)),
        repo_bytes=int((info.get("repository") or {}).get("delta", 0)),
        wal_start=archive.get("start"),
        wal_stop=archive.get("stop"),
        lsn_start=lsn.get("start"),
        lsn_stop=lsn.get("stop"),
        annotation={str(k): str(v) for k, v in (b.get("annotation") or {}).items()},
    )


NO_STANDBY = 56  # pgBackRest: "unable to find standby cluster"


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    problems: list[str]  # the report's lines about what is invalid or missing
    backups_checked: int


def parse_verify(text: str) -> VerifyResult:
    """`pgbackrest verify --output=text --verbose --log-level-console=detail` (pure).
    `status: error` anywhere, a line counting missing or invalid files, or a gap in the WAL
    archive (two ranges of one archive: pgBackRest itself says "ok") is a failure: a
    restore cannot replay past a gap."""
    problems: list[str] = []
    status_error = False
    backups = 0
    context = ""
    ranges: dict[str, list[tuple[str, str]]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        _, found, wal = line.partition("DETAIL: archiveId: ")
        if found and "wal start: " in wal:
            archive, _, rest = wal.partition(", wal start: ")
            start, _, stop = rest.partition(", wal stop: ")
            ranges.setdefault(archive, []).append((start.strip(), stop.strip()))
            continue
        if line.startswith("status:"):
            status_error = status_error or line != "status: ok"
        elif line.startswith(("archiveId:", "backup:")):
            context = line
            backups += line.startswith("backup:")
            if "status: invalid" in line or "status: error" in line:
                problems.append(line)
        elif line.startswith("missing:") or "invalid:" in line or line.startswith("other:"):
            counts = [p.strip() for p in line.split(",")]
            bad = [c for c in counts if not c.endswith(": 0")]
            if bad:
                problems.append(f"{context}: {', '.join(bad)}")
        elif line.startswith(("No usable", "no ")):
            problems.append(line)
    for archive, spans in ranges.items():
        # Sorted by timeline, then place. A new timeline starts a new range without a gap
        # (at the segment where the old one ended, or earlier after a point-in-time
        # recovery); only a range that starts past where the one before it stopped does.
        spans.sort()
        for (_, stop), (start, _) in itertools.pairwise(spans):
            first, last = wal_segment(start), wal_segment(stop)
            if first is not None and last is not None and first > last + 1:
                problems.append(f"archive {archive}: WAL missing after {stop} until {start}")
    return VerifyResult(not status_error and not problems, problems, backups)


def error_of(output: str) -> tuple[str, int | None]:
    """pgBackRest's reason, from its last `ERROR: [NNN]: ...` line and the indented lines
    that go on from it (the cause), or else the output's tail."""
    lines = output.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        _, sep, rest = lines[i].partition("ERROR: [")
        if not sep:
            continue
        code, _, message = rest.partition("]: ")
        more = []
        for line in lines[i + 1 :]:
            if not line[:1].isspace():
                break
            more.append(line.strip())
        text = " / ".join([message.strip(), *more]) if message else rest.strip()
        try:
            return text, int(code)
        except ValueError:
            return text, None
    tail = output.strip().splitlines()[-3:]
    return (" / ".join(tail) or "no output"), None


class PgBackRest:
    def __init__(self, settings: BackupSettings) -> None:
        self.settings = settings
        self._user = pwd.getpwnam(settings.user) if settings.user else None

    def argv(self, command: str, *args: str) -> list[str]:
        s = self.settings
        base = [s.pgbackrest, f"--stanza={s.stanza}"]
        if s.config_path is not None:
            base.append(f"--config-path={s.config_path}")
        return [*base, *args, command]

    def _env(self) -> dict[str, str]:
        """Only what pgBackRest needs: no DSN, no token (RunnerHub's own environment holds
        them); each repository's cipher pass from its file."""
        env = base_env(self._user)
        if self.settings.pgpass_file is not None:
            env["PGPASSFILE"] = str(self.settings.pgpass_file)
        for repo in self.settings.repos:
            if repo.cipher_pass_file is not None:
                try:
                    secret = repo.cipher_pass_file.read_text().strip()
                except OSError as exc:
                    raise PgBackRestError(
                        f"repo{repo.index}: cannot read the cipher pass file "
                        f"{repo.cipher_pass_file}: {exc.strerror}"
                    ) from None
                env[f"PGBACKREST_REPO{repo.index}_CIPHER_PASS"] = secret
        return env

    async def run(self, command: str, *args: str, timeout_s: float | None = None) -> str:
        """Run one command; its output, or PgBackRestError with pgBackRest's reason."""
        try:
            code, text = await run(
                self.argv(command, *args),
                user=self._user,
                env=self._env(),
                timeout_s=timeout_s or self.settings.timeout_s,
            )
        except CommandError as exc:
            raise PgBackRestError(f"{command}: {exc}") from None
        if code != 0:
            message, pgbr_code = error_of(text[-OUTPUT_TAIL:])
            if not text.strip():  # nothing said: at least how it ended
                message = f"killed by signal {-code}" if code < 0 else f"exit {code}, no output"
            raise PgBackRestError(f"{command}: {message}", pgbr_code)
        return text

    async def info(self) -> StanzaInfo:
        return parse_info(await self.run("info", "--output=json"), self.settings.stanza)

    async def backup(self, repo: int, kind: Kind, attempt: str) -> tuple[BackupInfo, bool]:
        """Take a backup and return pgBackRest's record of it (found by the annotation that
        names this attempt), and whether it was copied from a replica. With no replica to
        copy from (pgBackRest's error 56), it is taken from the primary instead."""
        args = [
            f"--repo={repo}",
            f"--type={kind.value}",
            f"--annotation=runnerhub-attempt={attempt}",
        ]
        from_standby = True
        try:
            await self.run("backup", *args)
        except PgBackRestError as exc:
            if exc.code != NO_STANDBY:
                raise
            from_standby = False
            await self.run("backup", "--no-backup-standby", *args)
        for b in (await self.info()).backups:
            if b.repo == repo and b.annotation.get("runnerhub-attempt") == attempt:
                return b, from_standby
        raise PgBackRestError(f"backup of repo{repo} finished but is not listed by info")

    async def verify(self, repo: int) -> VerifyResult:
        """`verify` exits 0 whatever it finds: its text report says what is wrong."""
        text = await self.run(
            "verify", f"--repo={repo}", "--output=text", "--verbose", "--log-level-console=detail"
        )
        return parse_verify(text)

    async def restore(self, repo: int, label: str, pg_path: str, *options: str) -> str:
        return await self.run(
            "restore", f"--repo={repo}", f"--set={label}", f"--pg1-path={pg_path}", *options
        )


def schedules(settings: BackupSettings) -> list[Schedule]:
    """Each repository's schedule, as `domain.backups` takes it."""
    return [
        Schedule(
            r.index,
            full_every_s=r.full_every_s,
            diff_every_s=r.diff_every_s,
            incr_every_s=r.incr_every_s,
            verify_every_s=r.verify_every_s,
            restore_test_every_s=r.restore_test_every_s,
            retry_s=settings.retry_s,
        )
        for r in settings.repos
    ]


def repo_names(settings: BackupSettings) -> dict[int, str]:
    return {r.index: r.name or f"repo{r.index}" for r in settings.repos}


def repo_space(settings: BackupSettings) -> dict[int, Space]:
    """The file system of each repository whose path this node sees (`repos[].path`), as
    an unprivileged user sees it (pgBackRest does not run as root). A path that cannot be
    read is left out: pgBackRest's own error says why."""
    out = {}
    for r in settings.repos:
        if r.path is None:
            continue
        try:
            fs = os.statvfs(r.path)
        except OSError:
            continue
        out[r.index] = Space(fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize)
    return out
