"""Epoch fencing in PostgreSQL (I4): a deposed leader's writes are refused, and none that
passed the check can commit after a newer epoch is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from runnerhub import metrics
from runnerhub.config import Settings
from runnerhub.context import NodeContext
from runnerhub.ha.dcs import LeaderRecord
from runnerhub.store import leadership
from runnerhub.store.db import Pool
from runnerhub.store.leadership import StaleLeader


@dataclass
class FakeLeadership:
    epoch: int | None
    acting: bool = True
    resign_reasons: list[str] = field(default_factory=list)

    @property
    def is_leader(self) -> bool:
        return self.acting

    def may_act(self) -> bool:
        return self.acting

    def request_resign(self, reason: str) -> None:
        self.resign_reasons.append(reason)

    async def request_handoff(self, target: str | None) -> LeaderRecord:
        raise AssertionError("not used by these tests")


def fenced(check: str) -> float:
    return metrics.FENCED_WRITES.labels(check)._value.get()


async def record(db: Pool, epoch: int, node: str) -> bool:
    async with db.connection() as conn, conn.transaction():
        return await leadership.record_epoch(conn, epoch, node)


async def test_the_epoch_only_moves_up(db: Pool) -> None:
    assert await record(db, 5, "a")
    assert not await record(db, 4, "b")
    assert not await record(db, 5, "b")
    assert await record(db, 9, "c")
    async with db.connection() as conn:
        current = await leadership.current(conn)
        assert current is not None and current.epoch == 9


async def test_a_stale_leaders_write_is_refused_counted_and_makes_it_resign(
    db: Pool, settings_factory: Callable[..., Settings]
) -> None:
    await record(db, 7, "new-leader")
    old = FakeLeadership(epoch=6)
    ctx = NodeContext(settings_factory(), db, leadership=old)
    before = fenced("epoch")
    with pytest.raises(StaleLeader):
        async with ctx.control_tx() as conn:
            await conn.execute("INSERT INTO events (node, kind) VALUES ('old', 'write')")
    assert fenced("epoch") == before + 1
    assert old.resign_reasons and "newer leader" in old.resign_reasons[0]
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM events WHERE kind = 'write'")
        assert (await cur.fetchone() or {})["n"] == 0
    current = NodeContext(settings_factory(), db, leadership=FakeLeadership(epoch=7))
    async with current.control_tx() as conn:
        await conn.execute("INSERT INTO events (node, kind) VALUES ('new', 'write')")


async def test_a_leader_past_its_lease_does_not_even_try(
    db: Pool, settings_factory: Callable[..., Settings]
) -> None:
    await record(db, 3, "me")
    ctx = NodeContext(settings_factory(), db, leadership=FakeLeadership(epoch=3, acting=False))
    before = fenced("lease")
    with pytest.raises(StaleLeader):
        async with ctx.control_tx():
            pass
    with pytest.raises(StaleLeader):
        ctx.ensure_may_act()
    assert fenced("lease") == before + 2


async def test_a_write_that_passed_the_check_commits_before_a_new_epoch_lands(
    db: Pool, settings_factory: Callable[..., Settings]
) -> None:
    await record(db, 10, "old")
    ctx = NodeContext(settings_factory(), db, leadership=FakeLeadership(epoch=10))
    checked = asyncio.Event()
    release = asyncio.Event()

    async def old_leader_write() -> None:
        async with ctx.control_tx() as conn:
            checked.set()
            await release.wait()  # hold the transaction open past the check
            await conn.execute("INSERT INTO events (node, kind) VALUES ('old', 'late')")

    writer = asyncio.create_task(old_leader_write())
    await checked.wait()
    recording = asyncio.create_task(record(db, 11, "new"))
    done, _ = await asyncio.wait({recording}, timeout=0.5)
    assert not done, "the new epoch must wait for the open write to finish"
    release.set()
    await writer
    assert await recording
    with pytest.raises(StaleLeader):  # and from now on the old epoch writes nothing
        async with ctx.control_tx():
            pass
