"""A database server that stops answering (its postmaster and backends SIGSTOPped: the
TCP connections stay open and nothing answers): the node's database check fails within
its timeout and drops the pool's idle connections, which would otherwise each hang the
next query made on them; once the server answers again the check is ok."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from runnerhub.dev.cluster import chaos
from runnerhub.dev.cluster.postgres import LocalPostgres
from runnerhub.health.checks import database
from runnerhub.store.db import HungServerGuard, Pool


async def test_a_hung_server_fails_the_check_in_time_and_its_idle_connections_go(
    db: Pool, postgres: LocalPostgres
) -> None:
    await db.wait(timeout=10)
    guard = HungServerGuard(db)
    check = database(db, 0.5, guard=guard)
    assert (await check()).status == "ok"
    hung = chaos.postgres_tree(str(postgres.data_dir))
    assert hung, "no PostgreSQL process to hang"
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(2):  # twice: the second within `every_s` drains nothing more
            with pytest.raises(TimeoutError):
                await check()
        assert guard.drains == 1
        assert db.get_stats().get("pool_available", 0) == 0  # nothing idle left to hang on
    finally:
        for pid in hung:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    await db.wait(timeout=10)
    assert (await check()).status == "ok"
