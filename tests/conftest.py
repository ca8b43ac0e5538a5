"""Shared fixtures: a real PostgreSQL server for the whole session, a fresh database per test.

The server is started by the tests in a temporary directory on a free loopback port; it is
never the machine's own PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runnerhub.cache import SharedCache
from runnerhub.config import Settings
from runnerhub.context import NodeContext
from runnerhub.dev.cluster.podman import LocalPodman, build_runner_rootfs
from runnerhub.dev.cluster.postgres import LocalPostgres
from runnerhub.dev.cluster.redis import LocalRedis
from runnerhub.store.db import Pool, open_pool
from runnerhub.store.migrate import migrate
from tests.apps import in_process_client

TEMPLATE_DB = "rh_template"
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    pg = LocalPostgres(tmp_path_factory.mktemp("pg"))
    pg.init()
    pg.start()
    pg.wait_ready()
    dsn = pg.create_database(TEMPLATE_DB)
    asyncio.run(migrate(dsn))
    yield pg
    pg.destroy()


ROOTFS = Path(__file__).resolve().parents[1] / "build" / "runner-rootfs.tar"


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPodman]:
    """A Podman API service of its own with the runner image (`make runner-image` builds
    its root file system; built here when missing)."""
    base = tmp_path_factory.mktemp("podman")
    rootfs = ROOTFS if ROOTFS.exists() else build_runner_rootfs(base / "rootfs.tar")
    engine = LocalPodman(base / "engine")
    engine.start()
    try:
        engine.build_runner_image(rootfs)
        yield engine
    finally:
        engine.destroy()


@pytest.fixture
def local_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    """A Redis primary, its replica and three Sentinels, for one test."""
    cluster = LocalRedis(tmp_path / "redis")
    try:
        began = time.monotonic()
        cluster.start()
        print(f"Redis with 3 Sentinels ready in {time.monotonic() - began:.2f}s")
        yield cluster
    finally:
        cluster.destroy()


def shared_cache(cluster: LocalRedis) -> SharedCache:
    return SharedCache(
        cluster.sentinels,
        cluster.master_name,
        password=cluster.password,
        sentinel_password=cluster.password,
    )


@pytest.fixture
def dsn(postgres: LocalPostgres) -> str:
    """A fresh, migrated database for one test (a copy of the template: fast)."""
    return postgres.create_database(f"t{next(_db_counter)}_{int(time.time())}", TEMPLATE_DB)


def make_settings(dsn: str, **overrides: Any) -> Settings:
    data: dict[str, Any] = {
        "node": {"id": "node-test", "state_dir": "/tmp/runnerhub-test"},
        "database": {"dsn": dsn, "pool_min_size": 1, "pool_max_size": 8, "connect_timeout_s": 2},
        # The database's answer, not the spool's: under make test's load a commit can take
        # longer than the default bounded wait (0.1 s); the bound has tests of its own.
        "webhook": {"secrets": ["s3cret-current", "s3cret-previous"], "db_wait_s": 1.0},
        "github": {"api_url": "http://127.0.0.1:9", "auth": {"token": "ghp_testtoken"}},
        "pools": [
            {
                "name": "linux",
                "labels": ["self-hosted", "linux", "x64"],
                "max_runners": 5,
                "process": {"command": ["true"]},
            },
            {
                "name": "gpu",
                "labels": ["self-hosted", "linux", "x64", "gpu"],
                "max_runners": 2,
                "process": {"command": ["true"]},
            },
        ],
        "api_tokens": [
            {"name": "reader", "token": "read-token-0123456789", "role": "read"},
            {"name": "root", "token": "admin-token-0123456789", "role": "admin"},
        ],
    }
    for key, value in overrides.items():
        data[key] = value
    return Settings(**data)


@pytest.fixture
def settings_factory(dsn: str) -> Callable[..., Settings]:
    return lambda **kw: make_settings(dsn, **kw)


@pytest.fixture
async def client(
    db: Pool, settings_factory: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    """The API and intake of a node on `db`, in process (tests/apps.py)."""
    async with in_process_client(NodeContext(settings_factory(), db)) as c:
        yield c


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[Pool]:
    pool = await open_pool(make_settings(dsn).database)
    await pool.wait(timeout=10)
    yield pool
    await pool.close()


LOG_TAIL_LINES = 60


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """When a test with services fails, show the tail of each service's log in the report:
    CI keeps nothing else, and a fault test's failure is explained by what the nodes said."""
    report = yield
    if report.failed and call.when == "call":
        args = getattr(item, "funcargs", {})
        # The test's own directory, and that of any shared cluster it used.
        roots = [args.get("tmp_path")] + [getattr(v, "state_dir", None) for v in args.values()]
        seen: set[Path] = set()
        for root in [r for r in roots if isinstance(r, Path)]:
            for path in sorted(root.rglob("*.log"))[:16]:
                if path in seen:
                    continue
                seen.add(path)
                try:
                    lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                except OSError:
                    continue
                report.sections.append((f"log {path}", "\n".join(lines)))
    return report
