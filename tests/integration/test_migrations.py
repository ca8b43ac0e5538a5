"""Migrations: idempotent, safe when several nodes run them at once, edits refused."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from runnerhub.dev.cluster.postgres import LocalPostgres
from runnerhub.store import migrate as migrate_mod
from runnerhub.store.migrate import Migration, MigrationError, available, current_version, migrate


@pytest.fixture
def empty_dsn(postgres: LocalPostgres) -> str:
    import uuid

    return postgres.create_database(f"empty_{uuid.uuid4().hex[:8]}")


async def test_several_nodes_migrating_at_once_apply_each_migration_once(empty_dsn: str) -> None:
    results = await asyncio.gather(*(migrate(empty_dsn) for _ in range(6)))
    applied = [m.version for r in results for m in r]
    assert sorted(applied) == [m.version for m in available()]
    assert await current_version(empty_dsn) == available()[-1].version
    assert await migrate(empty_dsn) == []  # idempotent


async def test_an_edited_migration_is_refused(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await migrate(empty_dsn)
    first = available()[0]
    edited = Migration(first.version, first.name, first.sql + "\n-- edited\n")
    monkeypatch.setattr(migrate_mod, "available", lambda: [edited])
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        await migrate(empty_dsn)


async def test_the_event_log_is_append_only(empty_dsn: str) -> None:
    await migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO events (node, kind) VALUES ('n', 'k')")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE events SET kind = 'x'")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM events")
