"""Backup and check scheduling (domain.backups): each test is named after the failure it
guards against."""

from __future__ import annotations

from runnerhub.domain.backups import (
    Check,
    Done,
    Job,
    Kind,
    Schedule,
    Space,
    archive_behind,
    due_backup,
    due_check,
    next_job,
    overdue,
    wal_segment,
)

H = 3600.0
S = Schedule(
    1,
    full_every_s=7 * 24 * H,
    diff_every_s=24 * H,
    incr_every_s=H,
    verify_every_s=24 * H,
    restore_test_every_s=7 * 24 * H,
    retry_s=300,
)


def done(**kinds: float) -> Done:
    return Done({Kind(k): v for k, v in kinds.items()}, {})


def test_a_repository_without_a_full_backup_gets_one_before_anything_else() -> None:
    assert due_backup(S, Done({}, {}), now=0) == Job(1, Kind.FULL, 0.0)
    # An incr alone is no base to restore from.
    assert due_backup(S, done(incr=0), now=10).what is Kind.FULL  # type: ignore[union-attr]


def test_a_due_full_is_taken_rather_than_the_diff_and_incr_it_makes_needless() -> None:
    now = 8 * 24 * H
    job = due_backup(S, done(full=0, diff=7 * 24 * H, incr=now - 2 * H), now)
    assert job == Job(1, Kind.FULL, 24 * H)


def test_a_diff_counts_from_the_newer_of_the_last_full_and_diff() -> None:
    assert due_backup(S, done(full=0, diff=20 * H, incr=43.5 * H), 43.9 * H) is None
    job = due_backup(S, done(full=0, diff=20 * H), 44 * H + 1)
    assert job is not None and job.what is Kind.DIFF


def test_an_incr_counts_from_any_backup() -> None:
    assert due_backup(S, done(full=0), 0.5 * H) is None
    assert due_backup(S, done(full=0, incr=2 * H), 2.9 * H) is None
    job = due_backup(S, done(full=0, incr=2 * H), 3 * H)
    assert job == Job(1, Kind.INCR, 0.0)


def test_a_kind_switched_off_is_never_taken() -> None:
    only_full = Schedule(2, full_every_s=24 * H)
    assert due_backup(only_full, done(full=0), 23 * H) is None
    assert due_check(only_full, done(full=0), Check.VERIFY, 100 * H) is None


def test_checks_wait_until_there_is_a_backup_to_check() -> None:
    assert due_check(S, Done({}, {}), Check.RESTORE_TEST, 10**6) is None
    # Never tested: due since the backup it would test exists.
    assert due_check(S, done(full=5), Check.RESTORE_TEST, 5) == Job(1, Check.RESTORE_TEST, 0.0)
    assert due_check(S, done(full=5), Check.RESTORE_TEST, 9) == Job(1, Check.RESTORE_TEST, 4.0)
    tested = Done({Kind.FULL: 0}, {Check.RESTORE_TEST: 10})
    assert due_check(S, tested, Check.RESTORE_TEST, 10 + 7 * 24 * H - 1) is None


def test_a_failing_repository_is_not_hammered_but_tried_again_after_retry_s() -> None:
    failing = Done({}, {}, failed_at=100.0)
    assert next_job([S], {1: failing}, now=100 + 299) is None
    assert next_job([S], {1: failing}, now=100 + 300) == Job(1, Kind.FULL, 0.0)


def test_a_missing_backup_goes_before_any_check_and_the_longest_overdue_first() -> None:
    two = Schedule(2, full_every_s=24 * H, verify_every_s=H)
    now = 30 * H
    checked = {Check.VERIFY: now, Check.RESTORE_TEST: now}
    records = {
        1: Done({Kind.FULL: 0, Kind.DIFF: 24 * H, Kind.INCR: now - 2 * H}, checked),  # incr 1 h
        2: Done({Kind.FULL: 0}, {Check.VERIFY: 0}),  # full 6 h late, verify 29 h late
    }
    assert next_job([S, two], records, now) == Job(2, Kind.FULL, 6 * H)
    records[2] = Done({Kind.FULL: now}, {Check.VERIFY: 0})
    assert next_job([S, two], records, now) == Job(1, Kind.INCR, 1 * H)
    records[1] = Done({Kind.FULL: 0, Kind.DIFF: 24 * H, Kind.INCR: now}, checked)
    assert next_job([S, two], records, now) == Job(2, Check.VERIFY, 29 * H)


def test_overdue_names_what_slipped_past_the_grace_and_a_first_backup_that_failed() -> None:
    now = 30 * H
    records = Done({Kind.FULL: 0, Kind.DIFF: 0}, {Check.VERIFY: now})
    assert overdue(S, records, now, grace_s=H) == ["diff backup", "restore test"]
    assert overdue(S, Done({}, {}, failed_at=now), now, grace_s=H) == ["full backup"]
    assert overdue(S, Done({}, {}), now, grace_s=H) == []  # the first one is under way


# -- a repository's archive against the primary's: WAL dropped, not a full disk ----------


def test_a_wal_name_is_placed_by_log_and_segment_not_by_timeline() -> None:
    assert wal_segment("000000010000000000000016") == 0x16
    assert wal_segment("000000020000000100000003") == 0x103  # log 1, segment 3
    for junk in (None, "", "00000001000000000000001", "00000001000000000000001G", "x" * 24):
        assert wal_segment(junk) is None


def test_a_repository_that_missed_dropped_wal_is_behind_and_one_that_did_not_is_not() -> None:
    primary = "000000010000000000000030"
    repos = {1: "000000010000000000000020", 2: "00000001000000000000002F"}
    assert archive_behind(primary, repos) == {1: 0x10, 2: 1}
    # A repository ahead of the reading (the primary's was read earlier) is not behind.
    assert archive_behind(primary, {1: "000000010000000000000031"}) == {1: 0}
    # After a failover the timeline changes, the stream's place does not.
    assert archive_behind("000000020000000000000030", {1: "000000010000000000000030"}) == {1: 0}
    assert archive_behind(None, repos) == {}  # nothing archived yet: nothing to compare


def test_a_repository_file_system_is_full_below_one_wal_segment_and_low_below_the_share() -> None:
    gib = 1 << 30
    assert Space(0, 300 * 1024).problem(0.1) == "its file system is full (0 B free of 300.0 KiB)"
    assert Space(15 << 20, 100 * gib).full  # a WAL segment no longer fits
    low = Space(5 * gib, 100 * gib)
    assert not low.full
    assert low.problem(0.1) == "its file system is low on space (5.0 GiB free of 100.0 GiB)"
    assert low.problem(0.05) is None and Space(50 * gib, 100 * gib).problem(0.1) is None
