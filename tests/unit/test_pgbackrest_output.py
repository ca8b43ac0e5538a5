"""Reading what pgBackRest says (backup.pgbackrest): its JSON record of backups, its verify
report (which exits 0 whatever it found), and the reason a command failed."""

from __future__ import annotations

from pathlib import Path

from runnerhub.backup.pgbackrest import error_of, parse_info, parse_verify
from runnerhub.domain.backups import Kind

INFO = (Path(__file__).parents[1] / "pgbackrest_info.json").read_text()


def test_info_lists_every_backup_of_both_repositories_with_its_wal_range() -> None:
    info = parse_info(INFO, "runnerhub")
    assert [(b.repo, b.kind, b.label) for b in info.backups] == [
        (1, Kind.FULL, "20261130-190405F"),
        (1, Kind.DIFF, "20261130-190405F_20261130-190411D"),
        (1, Kind.INCR, "20261130-190405F_20261130-190416I"),
        (2, Kind.FULL, "20261130-190421F"),
    ]
    full = info.backups[0]
    assert (full.wal_start, full.wal_stop) == ("00000001000000000000000C",) * 2
    assert (full.lsn_start, full.lsn_stop) == ("0/C000028", "0/C000100")
    assert full.size_bytes == 104475136 and full.repo_bytes == 10166398
    assert full.stopped_at - full.started_at == 3
    assert full.annotation == {"runnerhub-trigger": "proto"}
    assert info.status == "ok" and info.repo_status == {1: "ok", 2: "ok"}
    assert info.wal_max == {1: "000000010000000000000016", 2: "000000010000000000000016"}


def test_another_stanza_is_not_mistaken_for_ours() -> None:
    assert parse_info(INFO, "other").backups == []


GOOD = """stanza: runnerhub
status: ok
  archiveId: 15-1, total WAL checked: 11, total valid WAL: 11
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: 20261130-193213F, status: valid, total files checked: 1333, total valid files: 1333
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
""" + (
    "2026-11-30 19:36:47.224 P00 DETAIL: archiveId: 15-1, "
    "wal start: 000000010000000000000001, wal stop: 00000001000000000000000B\n"
)


def test_a_clean_verify_passes() -> None:
    result = parse_verify(GOOD)
    assert result.ok and result.problems == [] and result.backups_checked == 1


def test_a_corrupted_backup_file_fails_verify_though_pgbackrest_exits_0() -> None:
    corrupt = """stanza: runnerhub
status: error
  archiveId: 15-1, total WAL checked: 37, total valid WAL: 36
    missing: 0, checksum invalid: 0, size invalid: 0, other: 1
  backup: 20261130-182714F, status: invalid, total files checked: 978, total valid files: 977
    missing: 0, checksum invalid: 1, size invalid: 0, other: 0
"""
    result = parse_verify(corrupt)
    assert not result.ok
    assert result.problems == [
        "archiveId: 15-1, total WAL checked: 37, total valid WAL: 36: other: 1",
        "backup: 20261130-182714F, status: invalid, total files checked: 978, total valid "
        "files: 977",
        "backup: 20261130-182714F, status: invalid, total files checked: 978, total valid "
        "files: 977: checksum invalid: 1",
    ]


def test_a_gap_in_the_wal_archive_fails_verify_though_pgbackrest_says_ok() -> None:
    gap = GOOD + (
        "2026-11-30 19:36:47.225 P00 DETAIL: archiveId: 15-1, "
        "wal start: 00000001000000000000000E, wal stop: 000000010000000000000010\n"
    )
    result = parse_verify(gap)
    assert not result.ok
    assert result.problems == [
        "archive 15-1: WAL missing after 00000001000000000000000B until 00000001000000000000000E"
    ]


def test_a_new_timeline_is_no_gap_after_a_failover_or_a_point_in_time_recovery() -> None:
    def ranges(*spans: tuple[str, str]) -> str:
        return GOOD + "".join(
            f"2026-11-30 19:36:47.225 P00 DETAIL: archiveId: 15-1, wal start: {a}, wal stop: {b}\n"
            for a, b in spans
        )

    promoted = ("00000002000000000000000B", "000000020000000000000014")  # where TL 1 stopped
    branched = ("000000030000000000000009", "00000003000000000000000C")  # restored: earlier
    assert parse_verify(ranges(promoted, branched)).ok
    skipped = ("000000040000000000000020", "000000040000000000000021")
    assert parse_verify(ranges(promoted, skipped)).problems == [
        "archive 15-1: WAL missing after 000000020000000000000014 until 000000040000000000000020"
    ]


def test_the_reason_is_pgbackrests_last_error_line() -> None:
    output = (
        "2026-11-30 18:30:00.000 P00   INFO: backup command begin 2.45\n"
        "2026-11-30 18:30:00.010 P00  ERROR: [041]: unable to load info file "
        "'/r/backup/runnerhub/backup.info' or '/r/backup/runnerhub/backup.info.copy':\n"
        "                                    FileOpenError: unable to open file "
        "'/r/backup/runnerhub/backup.info' for read: [13] Permission denied\n"
        "2026-11-30 18:30:00.100 P00   INFO: backup command end: aborted with exception [041]\n"
    )
    message, code = error_of(output)
    assert code == 41 and message.startswith("unable to load info file")
    assert message.endswith(
        "FileOpenError: unable to open file "
        "'/r/backup/runnerhub/backup.info' for read: [13] Permission denied"
    )
    assert error_of("something else went wrong\n") == ("something else went wrong", None)
