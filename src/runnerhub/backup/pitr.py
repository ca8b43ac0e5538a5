"""Point-in-time recovery: what to restore to, and whether a repository can (docs/dr.md).

pgBackRest picks the backup set and replays WAL up to the target; two edges it does not
guard well, so they are checked here first: a target before the oldest backup (with an
explicit set it would quietly stop at the first commit after that backup instead), and a
target in the future (PostgreSQL would replay everything, then give up without reaching
it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from runnerhub.backup.pgbackrest import BackupInfo


class TargetError(ValueError):
    """The target cannot be restored to; the message says why and what can."""


@dataclass(frozen=True)
class Target:
    time: datetime | None = None
    lsn: str | None = None

    def __post_init__(self) -> None:
        if (self.time is None) == (self.lsn is None):
            raise TargetError("give exactly one of a time and an LSN to restore to")
        if self.time is not None and self.time.tzinfo is None:
            raise TargetError(f"{self.time.isoformat()}: give the time with its zone (e.g. +00:00)")
        if self.lsn is not None and not _is_lsn(self.lsn):
            raise TargetError(f"{self.lsn!r} is not an LSN (like 0/16B3748)")

    def describe(self) -> str:
        return self.time.isoformat() if self.time else f"LSN {self.lsn}"

    def pgbackrest_options(self) -> list[str]:
        """pgBackRest's --type and --target (it wants the time as `YYYY-MM-DD HH:MM:SS+00`)."""
        if self.time is not None:
            at = self.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
            return ["--type=time", f"--target={at}"]
        return ["--type=lsn", f"--target={self.lsn}"]


def _is_lsn(text: str) -> bool:
    high, sep, low = text.partition("/")
    try:
        int(high, 16), int(low, 16)
    except ValueError:
        return False
    return bool(sep)


def _lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def base_backup(backups: list[BackupInfo], repo: int, target: Target, now: datetime) -> BackupInfo:
    """The backup of `repo` a restore to `target` starts from: the newest that ended before
    it. Raises TargetError when there is none, or the target has not happened yet."""
    ours = sorted((b for b in backups if b.repo == repo), key=lambda b: b.stopped_at)
    if not ours:
        raise TargetError(f"repo{repo} holds no backup to restore from")
    if target.time is not None:
        if target.time > now:
            raise TargetError(
                f"{target.describe()} is in the future: no WAL reaches it (now is {now:%H:%M:%S})"
            )
        stamp = target.time.timestamp()
        before = [b for b in ours if b.stopped_at <= stamp]
    else:
        assert target.lsn is not None
        before = [b for b in ours if b.lsn_stop and _lsn(b.lsn_stop) <= _lsn(target.lsn)]
    if not before:
        oldest = ours[0]
        ended = datetime.fromtimestamp(oldest.stopped_at, UTC).isoformat()
        raise TargetError(
            f"{target.describe()} is before the oldest backup of repo{repo} "
            f"({oldest.label}, ended {ended}, LSN {oldest.lsn_stop}): nothing can be restored "
            "to it"
        )
    return before[-1]
