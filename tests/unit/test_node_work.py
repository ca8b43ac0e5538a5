"""A node's background work runs until the node stops: one that ends before is said
(an election loop once ended unseen, its leader's loops running on a dead lease)."""

from __future__ import annotations

import asyncio
import functools

import pytest

from runnerhub.node import _ended_early


async def test_work_that_ends_before_the_node_stops_is_reported_and_after_is_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stop = asyncio.Event()

    async def fails() -> None:
        raise RuntimeError("boom")

    async def returns() -> None:
        return None

    for work in (fails, returns):
        task = asyncio.create_task(work(), name=f"elector-{work.__name__}")
        task.add_done_callback(functools.partial(_ended_early, stop))
        await asyncio.gather(task, return_exceptions=True)  # its callback ran first
    out = capsys.readouterr().out
    assert "background work ended before the node stopped" in out
    assert "elector-fails" in out and "RuntimeError: boom" in out
    assert "elector-returns" in out and "returned" in out

    stop.set()  # the node stops: work ending now is expected
    task = asyncio.create_task(returns(), name="heartbeat")
    task.add_done_callback(functools.partial(_ended_early, stop))
    await asyncio.gather(task)
    assert "background work ended" not in capsys.readouterr().out
