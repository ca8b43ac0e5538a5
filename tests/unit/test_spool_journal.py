"""The spool's journal without a database: format, crash safety, bounds, group commit,
and the drainer's bookkeeping with a stand-in for PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pydantic import ValidationError

from runnerhub.dev.waiting import wait_until
from runnerhub.intake.drainer import SpoolDrainer
from runnerhub.intake.spool import (
    MAGIC,
    Spool,
    SpoolError,
    SpoolFull,
    VerifiedDelivery,
    decode,
    encode,
    iter_segment,
    parse_frame,
    segment_path,
    spool_dir,
)
from runnerhub.store.deliveries import Recorded
from tests.conftest import make_settings
from tests.metrics import sample


def delivery(n: int, size: int = 100) -> VerifiedDelivery:
    body = (b'{"n": %d, "pad": "' % n) + b"x" * size + b'"}'
    return VerifiedDelivery(f"guid-{n}", "workflow_job", 7, body, 1_700_000_000.0 + n, "node-a")


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    s = Spool(tmp_path / "spool")
    yield s
    await s.close()


async def reopen(s: Spool, **kw: int) -> Spool:
    await s.close()
    again = Spool(s.directory, **kw)
    await again.open()
    return again


async def contents(s: Spool) -> list[VerifiedDelivery | None]:
    return await s.read(s.peek(10_000, max_bytes=1 << 40))


# -- format --------------------------------------------------------------------------------


@given(
    guid=st.text(min_size=1, max_size=40),
    event=st.text(min_size=1, max_size=20),
    hook_id=st.none() | st.integers(min_value=0, max_value=2**53),
    body=st.binary(max_size=2000),
)
def test_a_record_decodes_to_exactly_what_was_encoded(
    guid: str, event: str, hook_id: int | None, body: bytes
) -> None:
    d = VerifiedDelivery(guid, event, hook_id, body, 1234.5, "node-a")
    assert parse_frame(encode(d)) == d


def test_a_flipped_bit_fails_the_checksum() -> None:
    frame = bytearray(encode(delivery(1)))
    frame[-5] ^= 0x01
    assert parse_frame(bytes(frame)) is None
    assert parse_frame(encode(delivery(1))[:-1]) is None  # cut short


def test_bad_metadata_is_refused() -> None:
    with pytest.raises(ValueError):
        decode(b"\x00\x00\x00\x02{}body")


async def test_appended_records_read_back_in_order_and_after_reopening(spool: Spool) -> None:
    sent = [delivery(n) for n in range(5)]
    for d in sent:
        await spool.append(d)
    assert await contents(spool) == sent
    stats = spool.stats()
    assert stats.entries == 5
    assert stats.bytes == sum(len(encode(d)) for d in sent)
    assert stats.oldest_age_s > 0
    again = await reopen(spool)
    try:
        assert await contents(again) == sent
        await again.append(delivery(5))
        assert len(segments(again.directory)) == 2  # never appends to an old segment
        assert await contents(again) == [*sent, delivery(5)]
    finally:
        await again.close()


async def test_a_torn_last_record_is_ignored_and_never_half_read(spool: Spool) -> None:
    for n in range(3):
        await spool.append(delivery(n))
    await spool.close()
    (seg,) = segments(spool.directory)
    with seg.open("r+b") as f:  # a crash in the middle of writing the third record
        f.truncate(seg.stat().st_size - 7)
    before = sample("runnerhub_spool_unreadable_total")
    again = await reopen(spool)
    try:
        assert await contents(again) == [delivery(0), delivery(1)]
        assert sample("runnerhub_spool_unreadable_total") == before + 1
        await again.append(delivery(3))
        assert await contents(again) == [delivery(0), delivery(1), delivery(3)]
    finally:
        await again.close()


async def test_a_checksum_mismatch_stops_reading_the_segment(spool: Spool) -> None:
    for n in range(3):
        await spool.append(delivery(n))
    second = spool.peek(3)[1]
    await spool.close()
    (seg,) = segments(spool.directory)
    with seg.open("r+b") as f:
        f.seek(second.end - 3)
        f.write(b"!")
    again = await reopen(spool)
    try:
        assert await contents(again) == [delivery(0)]
    finally:
        await again.close()


async def test_segments_rotate_at_the_size_limit(tmp_path: Path) -> None:
    s = Spool(tmp_path / "spool", segment_bytes=1000)
    try:
        sent = [delivery(n, size=300) for n in range(10)]
        for d in sent:
            await s.append(d)
        files = segments(s.directory)
        assert len(files) >= 4
        for f in files:
            assert f.read_bytes().startswith(MAGIC)
            assert f.stat().st_size <= 1000
        assert [d for f in files for d in iter_segment(f)] == sent
        await s.append(delivery(99, size=3000))  # bigger than a segment: one of its own
        assert list(iter_segment(segments(s.directory)[-1])) == [delivery(99, size=3000)]
    finally:
        await s.close()


async def test_a_second_owner_of_the_directory_is_refused(spool: Spool) -> None:
    await spool.append(delivery(1))
    other = Spool(spool.directory)
    with pytest.raises(SpoolError, match="another process"):
        await other.open()
    assert not other.writable
    await spool.close()
    await other.open()
    assert other.writable
    await other.close()


# -- bounds --------------------------------------------------------------------------------


async def test_past_max_bytes_appends_are_refused_until_drained(tmp_path: Path) -> None:
    size = len(encode(delivery(0)))
    s = Spool(tmp_path / "spool", max_bytes=3 * size + 10, headroom=size)
    try:
        for n in range(3):
            await s.append(delivery(n))
        assert not s.writable
        rejected = sample("runnerhub_spool_rejected_total")
        with pytest.raises(SpoolFull):
            await s.append(delivery(3))
        assert sample("runnerhub_spool_rejected_total") == rejected + 1
        assert await contents(s) == [delivery(n) for n in range(3)]  # nothing lost
        await s.commit(s.peek(1))
        assert s.writable
        await s.append(delivery(3))
    finally:
        await s.close()


async def test_concurrent_appends_cannot_overshoot_the_bound(tmp_path: Path) -> None:
    size = len(encode(delivery(0)))
    s = Spool(tmp_path / "spool", max_bytes=5 * size)
    try:
        results = await asyncio.gather(
            *(s.append(delivery(n)) for n in range(20)), return_exceptions=True
        )
        assert sum(r is None for r in results) == 5
        assert all(isinstance(r, SpoolFull) for r in results if r is not None)
        assert s.stats().bytes == 5 * size
    finally:
        await s.close()


async def test_disabled_spool_refuses(tmp_path: Path) -> None:
    s = Spool(tmp_path / "spool", enabled=False)
    assert not s.writable
    with pytest.raises(SpoolError, match="disabled"):
        await s.append(delivery(1))
    assert not s.directory.exists()


# -- group commit --------------------------------------------------------------------------


async def test_appends_that_arrive_together_share_one_fsync(tmp_path: Path) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            gate.wait(10)  # hold the first group on the disk while a burst queues up
        os.fsync(fd)

    s = Spool(tmp_path / "spool", fsync=fsync)
    s.directory.mkdir()
    await s.open()
    assert calls == []
    try:
        first = asyncio.create_task(s.append(delivery(0)))
        await wait_until(lambda: calls, what="the first group's fsync")
        burst = [asyncio.create_task(s.append(delivery(n))) for n in range(1, 51)]
        await wait_until(lambda: len(s._pending) == 50, what="the burst to queue")
        gate.set()
        await asyncio.gather(first, *burst)
        # First group: the new segment's directory entry, then the file; the burst: one.
        assert len(calls) == 3
        assert await contents(s) == [delivery(n) for n in range(51)]
    finally:
        gate.set()
        await s.close()


async def test_a_failed_fsync_refuses_the_group_and_continues_in_a_new_segment(
    tmp_path: Path,
) -> None:
    fail = [False]

    def fsync(fd: int) -> None:
        if fail[0]:
            raise OSError(5, "Input/output error")
        os.fsync(fd)

    s = Spool(tmp_path / "spool", fsync=fsync)
    try:
        await s.append(delivery(0))
        fail[0] = True
        with pytest.raises(SpoolError, match="Input/output error"):
            await s.append(delivery(1))
        assert not s.writable
        fail[0] = False
        await s.append(delivery(2))
        assert s.writable
        assert len(segments(s.directory)) == 2
        assert await contents(s) == [delivery(0), delivery(2)]
    finally:
        await s.close()


async def test_a_slow_disk_shows_in_the_write_histogram_and_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A spooled delivery's answer waits for the disk: a slow one is measured and said."""
    slow = [False]
    now = [0.0]  # the spool's clock: a slow fsync moves it on instead of taking the time

    def fsync(fd: int) -> None:
        if slow[0]:
            now[0] += 0.12  # an fsync that takes 120 ms
        os.fsync(fd)

    count = "runnerhub_spool_write_seconds_count"
    fast_bucket = ("runnerhub_spool_write_seconds_bucket", {"le": "0.1"})
    s = Spool(tmp_path / "spool", fsync=fsync, clock=lambda: now[0])
    try:
        await s.append(delivery(0))
        written, fast = sample(count), sample(*fast_bucket)
        assert "spool write slow" not in capsys.readouterr().out
        slow[0] = True
        await s.append(delivery(1))
        assert sample(count) == written + 1
        assert REGISTRY.get_sample_value(*fast_bucket) == fast  # not within 0.1 s
        assert "spool write slow" in capsys.readouterr().out
    finally:
        await s.close()


# -- checkpoint and the drainer ------------------------------------------------------------


class FakeDatabase:
    """Stands in for `WebhookIntake.replay`: records GUIDs, or fails as told."""

    def __init__(self) -> None:
        self.recorded: list[str] = []
        self.fail: dict[str, Exception] = {}

    async def replay(self, batch: Sequence[VerifiedDelivery]) -> list[Recorded | Exception]:
        out: list[Recorded | Exception] = []
        for d in batch:
            exc = self.fail.get(d.guid)
            if isinstance(exc, psycopg.OperationalError):
                return out + [exc] * (len(batch) - len(out))
            if exc is not None:
                out.append(exc)
                continue
            self.recorded.append(d.guid)
            out.append(Recorded("created"))
        return out


async def test_checkpoint_resumes_after_a_restart_and_drained_segments_go(
    tmp_path: Path,
) -> None:
    s = Spool(tmp_path / "spool", segment_bytes=1000)
    sent = [delivery(n, size=300) for n in range(8)]
    for d in sent:
        await s.append(d)
    db = FakeDatabase()
    drainer = SpoolDrainer(s, db.replay, batch_size=3)
    assert await drainer.drain(max_batches=1) == 3
    assert db.recorded == ["guid-0", "guid-1", "guid-2"]
    again = await reopen(s, segment_bytes=1000)
    try:
        assert await contents(again) == sent[3:]
        first_left = again.peek(1)[0].segment
        assert all(int(p.stem) >= first_left for p in segments(again.directory))
        drained = sample("runnerhub_spool_drained_total")
        assert await SpoolDrainer(again, db.replay, batch_size=3).drain() == 5
        assert sample("runnerhub_spool_drained_total") == drained + 5
        assert db.recorded == [d.guid for d in sent]
        assert again.stats().entries == 0 and again.stats().oldest_age_s == 0
        assert segments(again.directory) == []
    finally:
        await again.close()


async def test_an_interrupted_deletion_is_finished_on_open(tmp_path: Path) -> None:
    s = Spool(tmp_path / "spool", segment_bytes=1000)
    for n in range(6):
        await s.append(delivery(n, size=300))
    files = segments(s.directory)
    kept = {p.name: p.read_bytes() for p in files}
    await SpoolDrainer(s, FakeDatabase().replay, batch_size=3).drain(max_batches=1)
    await s.close()
    for name, data in kept.items():  # as if the process died before deleting
        (s.directory / name).write_bytes(data)
    again = await reopen(s)
    try:
        assert [d.guid for d in await contents(again) if d] == [f"guid-{n}" for n in range(3, 6)]
        assert len(segments(again.directory)) < len(files)
    finally:
        await again.close()


async def test_the_drain_pauses_while_the_database_is_away(spool: Spool) -> None:
    for n in range(5):
        await spool.append(delivery(n))
    db = FakeDatabase()
    db.fail["guid-2"] = psycopg.OperationalError("connection refused")
    drainer = SpoolDrainer(spool, db.replay)
    assert await drainer.drain() == 2
    assert spool.stats().entries == 3
    del db.fail["guid-2"]
    assert await drainer.drain() == 3
    assert db.recorded == [f"guid-{n}" for n in range(5)]


async def test_a_record_the_database_refuses_is_quarantined_not_blocking(spool: Spool) -> None:
    for n in range(3):
        await spool.append(delivery(n))
    db = FakeDatabase()
    db.fail["guid-1"] = psycopg.ProgrammingError("no such table")
    quarantined = sample("runnerhub_spool_quarantined_total")
    assert await SpoolDrainer(spool, db.replay).drain() == 3
    assert db.recorded == ["guid-0", "guid-2"]
    (kept,) = (spool.directory / "quarantine").iterdir()
    assert list(iter_segment(kept)) == [delivery(1)]
    assert sample("runnerhub_spool_quarantined_total") == quarantined + 1


async def test_a_record_damaged_after_it_was_acknowledged_is_skipped(spool: Spool) -> None:
    for n in range(3):
        await spool.append(delivery(n))
    damaged = spool.peek(3)[1]
    with segment_path(spool.directory, damaged.segment).open("r+b") as f:
        f.seek(damaged.end - 2)
        f.write(b"?")
    db = FakeDatabase()
    assert await SpoolDrainer(spool, db.replay).drain() == 3
    assert db.recorded == ["guid-0", "guid-2"]


async def test_the_background_drainer_starts_and_stops(spool: Spool) -> None:
    db = FakeDatabase()
    drainer = SpoolDrainer(spool, db.replay, interval_s=0.05)
    drainer.start()
    try:
        await spool.append(delivery(1))
        await wait_until(lambda: db.recorded == ["guid-1"], what="the drain")
    finally:
        await drainer.close()
    assert drainer._task is None


# -- settings ------------------------------------------------------------------------------


def test_spool_settings_default_to_the_state_dir_and_are_bounded() -> None:
    settings = make_settings("host=x", node={"id": "n", "state_dir": "/var/lib/rh"})
    assert settings.spool.enabled and settings.spool.max_bytes == 256 * 1024 * 1024
    assert spool_dir(settings) == Path("/var/lib/rh/spool")
    small = make_settings("host=x", spool={"dir": "/srv/spool", "max_bytes": 2 * 1024 * 1024})
    s = Spool.from_settings(small)
    assert s.directory == Path("/srv/spool") and s.segment_bytes == 2 * 1024 * 1024
    with pytest.raises(ValidationError, match="max_bytes"):
        make_settings("host=x", spool={"max_bytes": 1000})
