"""Retention: deliveries and events past their age go, in batches; the rest stays, and the
events table stays append-only for everything but the retention's own deletes."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from runnerhub.config import Settings
from runnerhub.context import NodeContext
from runnerhub.control.retention import Retention
from runnerhub.store.db import Pool


async def _count(db: Pool, sql: str) -> int:
    async with db.connection() as conn:
        row = await (await conn.execute(sql)).fetchone()
    assert row is not None
    return int(row["n"])


async def test_old_deliveries_and_events_go_in_batches_and_the_rest_stays(
    db: Pool, settings_factory: Callable[..., Settings]
) -> None:
    async with db.connection() as conn:
        for days, n in ((40, 7), (10, 3)):  # 7 past the deliveries' 30 days, 3 not
            await conn.execute(
                """INSERT INTO webhook_deliveries (delivery_guid, event, received_at,
                       received_by, outcome)
                   SELECT 'd' || %s || '-' || g, 'ping', now() - make_interval(days => %s),
                          'test', 'ignored'
                     FROM generate_series(1, %s) g""",
                (days, days, n),
            )
        for days, n in ((100, 5), (60, 2)):  # 5 past the events' 90 days, 2 not
            await conn.execute(
                """INSERT INTO events (at, node, kind, subject)
                   SELECT now() - make_interval(days => %s), 'test', 'old', 'x'
                     FROM generate_series(1, %s)""",
                (days, n),
            )
    events_before = await _count(db, "SELECT count(*) AS n FROM events")
    settings = settings_factory(retention={"batch_size": 2})
    retention = Retention(NodeContext(settings, db))
    await retention.cycle()  # 4 batches of deliveries, 3 of events
    assert await _count(db, "SELECT count(*) AS n FROM webhook_deliveries") == 3
    assert await _count(db, "SELECT count(*) AS n FROM events WHERE kind = 'old'") == 2
    assert (
        await _count(db, "SELECT count(*) AS n FROM events WHERE kind = 'retention.deleted'") == 1
    )
    assert await _count(db, "SELECT count(*) AS n FROM events") == events_before - 5 + 1
    # A backlog larger than a cycle's batches is worked off over cycles.
    settings = settings_factory(
        retention={"batch_size": 1, "max_batches": 1, "deliveries_days": 5, "events_days": None}
    )
    retention = Retention(NodeContext(settings, db))
    await retention.cycle()
    assert await _count(db, "SELECT count(*) AS n FROM webhook_deliveries") == 2
    await retention.cycle()
    await retention.cycle()
    assert await _count(db, "SELECT count(*) AS n FROM webhook_deliveries") == 0
    assert await _count(db, "SELECT count(*) AS n FROM events WHERE kind = 'old'") == 2


async def test_events_stay_append_only_outside_the_retention_cutoff(db: Pool) -> None:
    async with db.connection() as conn:
        await conn.execute("INSERT INTO events (node, kind, subject) VALUES ('t', 'new', 'x')")
    for sql in (
        "DELETE FROM events",
        "UPDATE events SET kind = 'changed'",
        # A cutoff declared, but the rows are younger than it says: still refused.
        "SELECT set_config('runnerhub.retention_cutoff', '2000-01-01', true); DELETE FROM events",
    ):
        async with db.connection() as conn:
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                await conn.execute(sql)
    assert await _count(db, "SELECT count(*) AS n FROM events WHERE kind = 'new'") == 1


async def test_replication_lag_samples_go_after_two_days(
    db: Pool, settings_factory: Callable[..., Settings]
) -> None:
    async with db.connection() as conn:
        for days in (3, 1):
            await conn.execute(
                """INSERT INTO replication_lag (minute, replica, replay_lag_s)
                   VALUES (date_trunc('minute', now()) - make_interval(days => %s), 'pg-x', 1)""",
                (days,),
            )
    # Whatever the deliveries' and events' settings, even with both kept for ever.
    settings = settings_factory(retention={"deliveries_days": None, "events_days": None})
    await Retention(NodeContext(settings, db)).cycle()
    sql = "SELECT count(*) AS n FROM replication_lag WHERE replica = 'pg-x'"
    assert await _count(db, sql) == 1
    assert await _count(db, f"{sql} AND minute > now() - interval '2 days'") == 1
