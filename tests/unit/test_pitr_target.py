"""Point-in-time recovery targets (backup.pitr): what a repository can be restored to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from runnerhub.backup.pgbackrest import BackupInfo
from runnerhub.backup.pitr import Target, TargetError, base_backup
from runnerhub.domain.backups import Kind

T0 = datetime(2026, 11, 30, 19, 0, tzinfo=UTC)


def backup(label: str, repo: int, stop: datetime, lsn_stop: str) -> BackupInfo:
    at = stop.timestamp()
    return BackupInfo(label, Kind.FULL, repo, at - 5, at, 1, 1, None, None, "0/1", lsn_stop)


BACKUPS = [
    backup("A", 1, T0, "0/5000100"),
    backup("B", 1, T0 + timedelta(hours=1), "0/9000100"),
    backup("C", 2, T0 + timedelta(minutes=30), "0/7000100"),
]
NOW = T0 + timedelta(hours=2)


def test_the_newest_backup_before_the_target_is_the_base() -> None:
    assert base_backup(BACKUPS, 1, Target(time=T0 + timedelta(minutes=59)), NOW).label == "A"
    assert base_backup(BACKUPS, 1, Target(time=T0 + timedelta(hours=1)), NOW).label == "B"
    assert base_backup(BACKUPS, 2, Target(time=NOW - timedelta(seconds=1)), NOW).label == "C"
    assert base_backup(BACKUPS, 1, Target(lsn="0/8FFFFFF"), NOW).label == "A"
    assert base_backup(BACKUPS, 1, Target(lsn="1/0"), NOW).label == "B"


def test_a_target_before_the_oldest_backup_is_refused_and_says_which_is_oldest() -> None:
    with pytest.raises(TargetError, match=r"before the oldest backup of repo1 \(A, ended"):
        base_backup(BACKUPS, 1, Target(time=T0 - timedelta(seconds=1)), NOW)
    with pytest.raises(TargetError, match="before the oldest backup of repo2"):
        base_backup(BACKUPS, 2, Target(lsn="0/6000000"), NOW)


def test_a_target_in_the_future_or_a_repository_without_backups_is_refused() -> None:
    with pytest.raises(TargetError, match="in the future"):
        base_backup(BACKUPS, 1, Target(time=NOW + timedelta(minutes=1)), NOW)
    with pytest.raises(TargetError, match="repo3 holds no backup"):
        base_backup(BACKUPS, 3, Target(time=T0), NOW)


def test_a_target_is_one_zoned_time_or_one_lsn() -> None:
    with pytest.raises(TargetError, match="exactly one"):
        Target()
    with pytest.raises(TargetError, match="exactly one"):
        Target(time=T0, lsn="0/1")
    with pytest.raises(TargetError, match="with its zone"):
        Target(time=datetime(2026, 11, 30, 19, 0))
    with pytest.raises(TargetError, match="not an LSN"):
        Target(lsn="yesterday")


def test_pgbackrest_is_given_the_time_in_utc_as_it_wants_it() -> None:
    zoned = datetime(2026, 11, 30, 21, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert Target(time=zoned).pgbackrest_options() == [
        "--type=time",
        "--target=2026-11-30 20:00:00.123456+00",
    ]
    assert Target(lsn="0/16B3748").pgbackrest_options() == ["--type=lsn", "--target=0/16B3748"]
