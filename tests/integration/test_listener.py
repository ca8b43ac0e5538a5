"""The leader's LISTEN connection (store/listener.py) against real PostgreSQL: each channel
wakes its own loop, and an operator's "reconcile now" asked of any node reaches it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import psycopg

from runnerhub.dev.waiting import wait_until
from runnerhub.store.jobs import NOTIFY_CHANNEL
from runnerhub.store.listener import RECONCILE_CHANNEL, listen

ADMIN = {"Authorization": "Bearer admin-token-0123456789"}


async def test_each_channel_wakes_its_own_loop_and_reconcile_reaches_the_leader(
    client: httpx.AsyncClient, dsn: str
) -> None:
    woken = {"scheduler": 0, "reconciler": 0}

    def wake(what: str) -> Callable[[], None]:
        return lambda: woken.__setitem__(what, woken[what] + 1)

    stop = asyncio.Event()
    task = asyncio.create_task(
        listen(
            dsn, {NOTIFY_CHANNEL: wake("scheduler"), RECONCILE_CHANNEL: wake("reconciler")}, stop
        )
    )
    try:
        # Once each on connecting: for what happened while nobody listened.
        await wait_until(lambda: woken == {"scheduler": 1, "reconciler": 1}, 10, "connected")
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
        await wait_until(lambda: woken["scheduler"] == 2, 5, "the scheduler woken")
        assert woken["reconciler"] == 1

        # The API node here is not the leader: its answer reaches the listener all the same.
        r = await client.post("/api/v1/reconcile", headers=ADMIN)
        assert r.status_code == 202, r.text
        await wait_until(lambda: woken["reconciler"] == 2, 5, "the reconciler woken")
        assert woken["scheduler"] == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    events = (await client.get("/api/v1/events?kind=operator.", headers=ADMIN)).json()["items"]
    assert [(e["kind"], e["detail"]["by"]) for e in events] == [
        ("operator.reconcile_requested", "root")
    ]
