"""Migrations: idempotent, safe when several nodes run them at once, edits refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

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


def test_db_migrate_takes_the_dsn_from_a_file_or_the_environment_not_only_argv(
    empty_dsn: str, tmp_path: Path
) -> None:
    # A password on the command line is there for anyone on the host to read in `ps`.
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(empty_dsn + "\n")
    cli = [sys.executable, "-m", "runnerhub.cli.main", "db", "migrate"]
    env = {k: v for k, v in os.environ.items() if k != "RUNNERHUB_DATABASE__DSN"}
    first = subprocess.run(
        [*cli, "--dsn-file", str(dsn_file)], env=env, capture_output=True, text=True
    )
    assert first.returncode == 0 and "applied 0001_core" in first.stdout, first.stderr
    again = subprocess.run(
        cli, env={**env, "RUNNERHUB_DATABASE__DSN": empty_dsn}, capture_output=True, text=True
    )
    assert again.returncode == 0 and "up to date" in again.stdout, again.stderr
    neither = subprocess.run(cli, env=env, capture_output=True, text=True)
    assert neither.returncode == 2 and "RUNNERHUB_DATABASE__DSN" in neither.stderr
