"""When to back up, verify and test a restore, per repository: pure decisions, no I/O.

pgBackRest keeps three kinds of backup: a **full** copy, a **diff** (what changed since the
last full) and an **incr** (what changed since the last backup of any kind). Each
repository has its own schedule; the decision takes the biggest kind that is due (a full
also serves as the diff and incr it makes unnecessary), and one job at a time: pgBackRest
backs up one repository at a time per stanza.

A job that failed is not tried again before `retry_s`, so a broken repository is reported
(the health check, the incident) rather than hammered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    FULL = "full"
    DIFF = "diff"
    INCR = "incr"


class Check(StrEnum):
    VERIFY = "verify"  # pgbackrest verify: every file of the repository is readable and whole
    RESTORE_TEST = "restore_test"  # restore the newest backup, start it, check it


def kind_or_check(text: str) -> Kind | Check:
    """ "full", "diff", "incr", "verify" or "restore_test" as what it names (ValueError else)."""
    return Kind(text) if text in {k.value for k in Kind} else Check(text)


@dataclass(frozen=True)
class Schedule:
    """One repository's schedule; None: never (for that kind or check)."""

    repo: int
    full_every_s: float
    diff_every_s: float | None = None
    incr_every_s: float | None = None
    verify_every_s: float | None = None
    restore_test_every_s: float | None = None
    retry_s: float = 300.0


@dataclass(frozen=True)
class Done:
    """What a repository's records say: when the newest good one of each kind and check
    finished, and when the newest attempt of anything failed (all on one clock)."""

    backups: Mapping[Kind, float]
    checks: Mapping[Check, float]
    failed_at: float | None = None


@dataclass(frozen=True)
class Job:
    repo: int
    what: Kind | Check
    overdue_s: float  # how long it has been due (0: just now)


def due_backup(s: Schedule, done: Done, now: float) -> Job | None:
    """The backup this repository needs now, the biggest first; None: nothing is due."""
    last = done.backups
    full = last.get(Kind.FULL)
    if full is None:
        return Job(s.repo, Kind.FULL, 0.0)
    if now - full >= s.full_every_s:
        return Job(s.repo, Kind.FULL, now - full - s.full_every_s)
    since_diff = max(full, last.get(Kind.DIFF, full))
    if s.diff_every_s is not None and now - since_diff >= s.diff_every_s:
        return Job(s.repo, Kind.DIFF, now - since_diff - s.diff_every_s)
    since_any = max(since_diff, last.get(Kind.INCR, since_diff))
    if s.incr_every_s is not None and now - since_any >= s.incr_every_s:
        return Job(s.repo, Kind.INCR, now - since_any - s.incr_every_s)
    return None


def due_check(s: Schedule, done: Done, check: Check, now: float) -> Job | None:
    """A verify or restore test, once the repository holds a backup to check."""
    every = s.verify_every_s if check is Check.VERIFY else s.restore_test_every_s
    if every is None or not done.backups:
        return None
    last = done.checks.get(check)
    if last is None:  # due since there was something to check
        return Job(s.repo, check, max(0.0, now - min(done.backups.values())))
    return Job(s.repo, check, now - last - every) if now - last >= every else None


def next_job(schedules: Iterable[Schedule], done: Mapping[int, Done], now: float) -> Job | None:
    """What to run now across every repository: backups before checks (a check of an old
    backup can wait; a missing backup is data at risk), the longest overdue first, and
    nothing for a repository whose last attempt failed less than `retry_s` ago."""
    backups: list[Job] = []
    checks: list[Job] = []
    for s in schedules:
        d = done.get(s.repo, Done({}, {}))
        if d.failed_at is not None and now - d.failed_at < s.retry_s:
            continue
        if (b := due_backup(s, d, now)) is not None:
            backups.append(b)
        checks.extend(c for c in (due_check(s, d, k, now) for k in Check) if c is not None)
    for jobs in (backups, checks):
        if jobs:
            return max(jobs, key=lambda j: (j.overdue_s, -j.repo))
    return None


def overdue(s: Schedule, done: Done, now: float, grace_s: float) -> list[str]:
    """What a repository has let slip by more than `grace_s`, for /health and the alerts."""
    late = []
    b = due_backup(s, done, now)
    if b is not None and (b.overdue_s > grace_s or (not done.backups and done.failed_at)):
        late.append(f"{b.what.value} backup")
    for check in Check:
        c = due_check(s, done, check, now)
        if c is not None and c.overdue_s > grace_s:
            late.append(check.value.replace("_", " "))
    return late


ARCHIVE_BEHIND_SEGMENTS = 4  # asynchronous pushing may trail by a segment or two
# Less than one WAL segment free: nothing more can be pushed or backed up.
FULL_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Space:
    """A repository's file system, as its user sees it."""

    free: int  # bytes
    total: int

    def problem(self, low_fraction: float) -> str | None:
        """What is wrong with it: full (every backup and WAL push into it fails), or low;
        None when neither."""
        said = f"{_size(self.free)} free of {_size(self.total)}"
        if self.free < FULL_BYTES:
            return f"its file system is full ({said})"
        if self.total and self.free / self.total < low_fraction:
            return f"its file system is low on space ({said})"
        return None

    @property
    def full(self) -> bool:
        return self.free < FULL_BYTES


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"


def wal_segment(name: str | None) -> int | None:
    """A WAL file's place in the WAL stream (its timeline aside): log * 256 + segment, for
    16 MiB segments. None for what is not a WAL segment's name."""
    if not name or len(name) != 24:
        return None
    try:
        return int(name[8:16], 16) * 0x100 + int(name[16:24], 16)
    except ValueError:
        return None


def archive_behind(primary_last: str | None, repo_max: Mapping[int, str]) -> dict[int, int]:
    """Per repository, how many WAL segments its archive ends before the newest one the
    primary reports archived. pgBackRest reports a segment archived once it is in every
    repository, or when it dropped it (`archive-push-queue-max`, a repository that cannot
    be written): a repository far behind is missing WAL, and cannot restore past the gap."""
    newest = wal_segment(primary_last)
    if newest is None:
        return {}
    out = {}
    for repo, last in repo_max.items():
        segment = wal_segment(last)
        out[repo] = max(0, newest - segment) if segment is not None else newest
    return out


@dataclass(frozen=True)
class Archiver:
    """`pg_stat_archiver` on the primary: how WAL archiving (to pgBackRest) goes."""

    archived_count: int
    last_archived_wal: str | None
    last_archived_at: float | None  # epoch seconds
    failed_count: int
    last_failed_wal: str | None
    last_failed_at: float | None

    @property
    def failing(self) -> bool:
        """The newest attempt failed (a success since clears it)."""
        return self.last_failed_at is not None and (
            self.last_archived_at is None or self.last_failed_at > self.last_archived_at
        )
